"""The benchmark runs end to end and records what it promises; no timing is asserted."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import bench
import measure
import numpy as np
import presets
import pytest
import reference
import report
import torch
from report import PARTS

from egalib import models
from egalib.config import RunConfig
from egalib.views import CLIP_MEAN, CLIP_STD, FASHION_MNIST_MEAN, FASHION_MNIST_STD, ViewSpec

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def test_cpu_demo_run_writes_the_json_and_prints_the_ratio(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = [
        *"--preset cpu-demo --steps 3 --warmup 1 --workers 0 --processes 1".split(),
        *"--eval-images 64 --device cpu --out".split(),
        str(out),
        "--profile",
        str(tmp_path / "profile.txt"),
    ]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    ours, ref = report["egalib"], report["reference"]
    for loop in (ours, ref):
        assert loop["images_per_s"] > 0 and loop["steps"] == 3
        assert math.isfinite(loop["mean_loss"])
        assert set(loop["parts"]) == {*PARTS, "total"}
        assert all(math.isfinite(v) for v in loop["parts"].values())
        assert loop["peak_memory"]["mib"] > 0 and "RSS" in loop["peak_memory"]["kind"]
    assert report["ratio"] == pytest.approx(ours["images_per_s"] / ref["images_per_s"])
    plan = report["projection"]
    assert plan["epochs"] == 240 and (plan["train_images"], plan["test_images"]) == (60000, 10000)
    assert plan["minutes"] > 0 and math.isfinite(plan["minutes"])
    assert ours["eval"]["images"] == 64 and ours["eval"]["images_per_s"] > 0
    assert [a["processes"] for a in report["aggregate"]] == [1]
    assert report["aggregate"][0]["images_per_s"] == pytest.approx(ours["images_per_s"])
    assert report["setup"]["teacher"] == "ssl-fmnist" and report["setup"]["student"] == "small-cnn"
    assert report["setup"]["image_shape"] == [1, 28, 28] and report["setup"]["batch_size"] == 64
    assert report["device"]["type"] == "cpu" and report["device"]["slug"].startswith("cpu-")
    assert report["versions"]["torch"] == torch.__version__ and report["date"]
    assert "ratio egalib / reference: " in capsys.readouterr().out
    profile = (tmp_path / "profile.txt").read_text()
    assert profile.startswith(f"egalib's step, {measure.PROFILE_STEPS} steps of 64 images")
    assert "by self_cpu_time_total:" in profile and "aten::" in profile
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.txt", "r.json"]  # no temp file


def test_reference_dataset_gives_normalised_views_of_the_right_shapes():
    preset = presets.PRESETS["cpu-demo"]
    data = presets.synthetic_dataset(preset, train=4, test=0)
    data.train_images[0] = 0  # a black image: every pixel (and the crop padding) is 0
    teacher = models.teacher("ssl-fmnist", pretrained=False)
    student_in, teacher_in, label = reference.reference_dataset(data, teacher)[0]
    assert student_in.shape == (1, 28, 28) and student_in.dtype == torch.float32
    assert teacher_in.shape == (teacher.in_channels, teacher.input_size, teacher.input_size)
    black = -FASHION_MNIST_MEAN[0] / FASHION_MNIST_STD[0]
    assert torch.allclose(student_in, torch.full_like(student_in, black))
    assert torch.allclose(teacher_in, torch.full_like(teacher_in, black))
    assert label == int(data.train_labels[0])
    # random images: normalised values leave [0, 1]
    student_in, _, _ = reference.reference_dataset(data, teacher)[1]
    assert student_in.min() < 0 and student_in.max() > 1


def test_grey_images_reach_a_colour_teacher_resized_and_normalised():
    clip_view = ViewSpec(224, 3, CLIP_MEAN, CLIP_STD)  # a CLIP teacher's view, without CLIP
    grey = ViewSpec(28, 1, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    student_tf, teacher_tf = reference.reference_transforms(28, grey, clip_view)
    images = np.zeros((2, 28, 28, 1), dtype=np.uint8)
    dataset = reference.ReferenceDataset(images, np.array([3, 5]), student_tf, teacher_tf, 3)
    student_in, teacher_in, label = dataset[1]
    assert student_in.shape == (1, 28, 28) and teacher_in.shape == (3, 224, 224) and label == 5
    black = -torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD)
    assert torch.allclose(teacher_in, black[:, None, None].expand_as(teacher_in), atol=1e-6)


def test_json_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / "results" / "device.json"
    report.write_json(path, {"ratio": 2.0})
    assert json.loads(path.read_text()) == {"ratio": 2.0}
    with pytest.raises(TypeError):
        report.write_json(path, {"ratio": object()})  # not serialisable: fails half-way
    assert json.loads(path.read_text()) == {"ratio": 2.0}  # the old file is untouched
    assert [p.name for p in path.parent.iterdir()] == ["device.json"]


def test_default_file_is_named_after_the_device(tmp_path):
    assert report.device_slug("cuda", "NVIDIA H100 80GB HBM3", 16) == "nvidia-h100-80gb-hbm3"
    assert report.device_slug("cpu", "any", 2).endswith("-2-threads")
    assert report.output_path(None, "x") == report.RESULTS_DIR / "x.json"
    assert report.output_path(str(tmp_path), "x") == tmp_path / "x.json"
    assert report.output_path(str(tmp_path / "y.json"), "x") == tmp_path / "y.json"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "1"], "--batch-size"),
        (["--steps", "0"], "--steps"),
        (["--processes", "0"], "--processes"),
    ],
)
def test_bad_options_are_one_clear_error(argv, message):
    with pytest.raises(ValueError, match=message):
        bench.main(argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        bench.main(["--device", "cuda"])


def test_reference_loop_trains_to_a_test_accuracy(tmp_path):
    from egalib.train import prepare_data

    config = RunConfig.from_profile(
        "smoke", method="ega", protocol="joint", train_size=64, test_size=32, runs_dir=str(tmp_path)
    )
    data = prepare_data(config, torch.device("cpu"))
    accuracy = reference.reference_accuracy(config, data, epochs=1, workers=0)
    assert 0.0 <= accuracy <= 1.0
    assert accuracy * 32 == round(accuracy * 32)  # a fraction of the 32 test images


def test_accuracy_summary_gives_means_and_sample_spreads_per_method():
    rows = [
        {"method": "ega", "egalib_top1": 60.0, "reference_top1": 62.0, "difference": -2.0},
        {"method": "vanilla", "egalib_top1": 75.0, "reference_top1": 74.0, "difference": 1.0},
        {"method": "ega", "egalib_top1": 64.0, "reference_top1": 62.0, "difference": 2.0},
    ]
    ega, vanilla = reference.accuracy_summary(rows)
    assert ega["method"] == "ega" and ega["seeds"] == 2
    assert ega["egalib_top1_mean"] == 62.0 and ega["reference_top1_mean"] == 62.0
    assert ega["egalib_top1_std"] == pytest.approx(2.8284, abs=1e-2)  # sqrt(8), ddof 1
    assert ega["reference_top1_std"] == 0.0
    assert ega["difference_mean"] == 0.0 and ega["difference_std"] == pytest.approx(2.83, abs=0.01)
    assert vanilla["seeds"] == 1 and vanilla["difference_mean"] == 1.0
    assert vanilla["difference_std"] is None  # one seed has no spread


@pytest.mark.parametrize("flag", [["--accuracy-seeds", "0"], ["--accuracy-epochs", "-1"]])
def test_bad_accuracy_flags_are_refused_in_one_sentence(flag):
    with pytest.raises(ValueError, match="must be"):
        bench.main(["--device", "cpu", *flag])


def test_methods_the_reference_loop_does_not_train_are_refused():
    with pytest.raises(ValueError, match="reference loop trains only vanilla and ega.*'kd'"):
        bench.main(["--device", "cpu", "--accuracy-epochs", "1", "--accuracy-methods", "kd"])
    config = RunConfig.from_profile("smoke", method="crd")
    data = presets.synthetic_dataset(presets.PRESETS["cpu-demo"], 32, 8)
    with pytest.raises(ValueError, match="not 'crd'; compare one of those"):
        reference.ReferenceModel(config, data, torch.device("cpu"), pretrained=False)


def test_compare_accuracy_trains_both_loops_on_the_same_data():
    config = reference.accuracy_config("vanilla", epochs=1, device="cpu", seed=1, profile="smoke")
    row = reference.compare_accuracy(config, workers=0)
    assert (row["method"], row["seed"], row["epochs"]) == ("vanilla", 1, 1)
    assert row["train_images"] == 256
    assert 0 <= row["egalib_top1"] <= 100 and 0 <= row["reference_top1"] <= 100
    assert row["difference"] == pytest.approx(row["egalib_top1"] - row["reference_top1"], abs=0.01)
    assert row["egalib_capture"] is False


TEACHER_FORWARD = [sys.executable, "benchmarks/teacher_forward.py", "--device", "cpu"]


def test_teacher_forward_benchmark_times_each_variant(tmp_path):
    out = tmp_path / "teacher.json"
    argv = "--teacher ssl-fmnist --image-size 28 --batch-size 8 --variants fp32 bf16 --warmup 1"
    argv = [*argv.split(), "--iterations", "2", "--out", str(out)]
    done = subprocess.run(TEACHER_FORWARD + argv, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["batch_size"] == 8 and report["view"] == [1, 28, 28]
    assert list(report["variants"]) == ["fp32", "bf16"]
    for row in report["variants"].values():
        assert row["ms_per_batch"] > 0 and row["images_per_s"] > 0 and row["first_call_s"] > 0
    assert "min_cosine_to_fp32" not in report["variants"]["fp32"]
    assert report["variants"]["bf16"]["min_cosine_to_fp32"] > 0.999
    assert "bf16:" in done.stdout


def test_teacher_forward_graph_variants_need_cuda(tmp_path):
    argv = ["--teacher", "ssl-fmnist", "--variants", "bf16-graph", "--out", str(tmp_path / "t")]
    done = subprocess.run(TEACHER_FORWARD + argv, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert "graph variants record CUDA graphs" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "t").exists()


def test_a_table_run_reports_the_build_and_the_projected_tables(tmp_path, capsys):
    out = tmp_path / "t.json"
    argv = [
        *"--preset cpu-demo --steps 2 --warmup 1 --workers 0 --processes 1".split(),
        *"--eval-images 32 --device cpu --batch-size 8 --teacher-table 8 --out".split(),
        str(out),
    ]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    built = report["egalib"]["table"]
    assert built["images"] == 8 and built["views"] == 8 * 162 and built["build_s"] > 0
    assert built["views_per_s"] == pytest.approx(built["views"] / built["build_s"])
    assert built["bytes"] == 8 * 162 * 1024 * 4 and built["dtype"] == "torch.float32"
    assert not Path(built["cache"]).exists()  # the bench's own table is removed after it
    t = report["table"]
    assert t["full_table_views"] == 60000 * 162 and t["full_table_bytes"] == 60000 * 162 * 4096
    assert t["full_table_build_minutes"] == pytest.approx(60000 * 162 / built["views_per_s"] / 60)
    assert set(t["architectures_hours_by_processes"]) == {"1"}
    assert t["architectures_hours_by_processes"]["1"] > t["full_table_build_minutes"] / 60
    plain = report["egalib_no_table"]  # the teacher in the step, measured in the same run
    assert "table" not in plain and plain["images_per_s"] > 0
    assert report["table_speedup"] == pytest.approx(
        report["egalib"]["images_per_s"] / plain["images_per_s"]
    )
    printed = capsys.readouterr().out
    assert "teacher table: 1,296 views built in" in printed and "architectures table, 65" in printed
    assert "no table" in printed and "the step with the table / without it" in printed


def test_a_table_smaller_than_a_batch_is_refused():
    with pytest.raises(ValueError, match="--teacher-table must hold at least a batch"):
        bench.main(["--device", "cpu", "--teacher-table", "4"])


def test_gpu_script_names_its_results_after_the_device(tmp_path):
    """benchmarks/gpu.sh's dry run on the CPU: a stage runs, and its JSON is named by the device's
    slug (the name the committed GPU results carry), not left nameless."""
    env = {
        **os.environ,
        "GPU_STAGES": "bench",
        "BENCH_DEVICE": "cpu",
        "BENCH_STEPS": "2",
        "BENCH_WORKERS": "0",
        "BENCH_PROCESSES": "1",
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
    }
    quick = ["--preset", "cpu-demo", "--warmup", "1", "--batch-size", "8", "--part-steps", "1"]
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), *quick, "--eval-images", "16"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "== bench: exit 0" in (tmp_path / "gpu.txt").read_text()
    (written,) = tmp_path.glob("*.json")
    report = json.loads(written.read_text())
    assert written.name == f"{report['device']['slug']}.json"
    assert report["device"]["slug"].startswith("cpu-") and (tmp_path / "profile.txt").is_file()
