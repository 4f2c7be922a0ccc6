"""The paper's tables as configs, and the supervised WRN-40-2 teacher egalib trains itself."""

import json

import pytest
import torch
from helpers import run_egalib
from test_datasets import trust_fake_copies, write_cifar100  # noqa: F401 (autouse)

from egalib import datasets as data
from egalib import models
from egalib.config import PROFILES
from egalib.experiments.paper import paper_results
from egalib.experiments.pretrain import train_supervised_teacher
from egalib.experiments.reproduce import TABLES, table_configs
from egalib.models import teachers


@pytest.mark.parametrize("table", TABLES)
def test_one_config_per_cell_of_each_table(table):
    cells = paper_results().query("table == @table")
    configs = table_configs(table)
    assert len(configs) == len(cells)
    assert len({c.run_name for c in configs}) == len(configs)  # one run folder per cell
    assert all(c.epochs == 240 and c.batch_size == 64 for c in configs)
    for config in configs:
        assert config.lr == (0.01 if config.student == "shufflenetv1" else 0.05)


TRAINING_IMAGES = {"cifar100": 50_000, "stl10": 5_000, "tinyimagenet": 100_000}


@pytest.mark.parametrize("table", TABLES)
def test_every_cell_leaves_training_images_after_its_validation_split(table):
    """STL-10 has 5,000 labelled training images: the paper profile's 5,000 held out left none,
    and reproduce has no --val-size to lower it."""
    for config in table_configs(table):
        assert config.val_size <= TRAINING_IMAGES[config.dataset] / 10, config.run_name


def test_protocol_and_only_filter_the_cells():
    joint = table_configs("architectures", protocol="joint", only=["ega", "crd"])
    assert len(joint) == 10 and {c.method for c in joint} == {"ega", "crd"}
    assert {c.protocol for c in joint} == {"joint"}


@pytest.mark.integration
def test_reproduce_dry_run_lists_the_cells_and_trains_nothing(tmp_path):
    out = run_egalib(
        *"reproduce --table datasets --dry-run --runs-dir".split(),
        str(tmp_path),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("to run")]
    assert len(lines) == len(paper_results().query("table == 'datasets'"))
    assert "39 cells of table 'datasets'" in out.stdout
    assert not any(tmp_path.iterdir())


def test_cells_that_no_table_has_are_refused_not_an_empty_list(tmp_path, capsys):
    from egalib.experiments.cli import main

    where = ["--runs-dir", str(tmp_path)]
    refusals = {  # each was "0 cells", and reproduce then trained nothing with rc 0
        "reproduce --table datasets --only egaa --dry-run": "--only egaa: no cell of table "
        "'datasets' is of that method; the methods there: kd, fitnet, pkt, rkd, nce, crd, ccl, "
        "ega, ega+kd.",
        "status --table supervised-teachers --only irg": "--only irg: no cell of table "
        "'supervised-teachers' is of that method; the methods there: kd, fitnet, pkt, rkd, "
        "nce, crd, ccl, ega.",
        "reproduce --table supervised-teachers --protocol joint": "no cell of table "
        "'supervised-teachers' has protocol joint; drop --protocol.",
    }
    for command, said in refusals.items():
        assert main([*command.split(), *where]) == 2
        assert capsys.readouterr().err == f"error: {said}\n"
    assert main(["status", "--table", "all", "--only", "irg", *where]) == 0  # architectures'
    assert "missing   clip-vit-b32" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_reproduce_profile_refuses_the_flags_of_the_tables(tmp_path, capsys):
    from egalib.experiments.cli import main

    notebooks = ["reproduce", "--profile", "smoke", "--runs-dir", str(tmp_path)]
    refusals = {  # were ignored: the notebooks ran at the profile's own settings
        ("--only", "ega"): "--only applies",
        ("--seeds", "1", "--parallel", "3"): "--seeds, --parallel apply",
        ("--executor", "slurm", "--time", "5"): "--executor, --time apply",
        ("--no-teacher-table", "--dry-run"): "--teacher-table, --dry-run apply",
    }
    for flags, said in refusals.items():
        assert main([*notebooks, *flags]) == 2
        assert capsys.readouterr().err.startswith(f"error: {said} only with --table; --profile ")
    assert not any(tmp_path.iterdir())  # no notebook ran


def test_train_teacher_makes_the_weights_the_wrn40_teacher_loads(tmp_path, monkeypatch):
    write_cifar100(tmp_path / "data" / "cifar100", train=8, test=4)
    monkeypatch.setattr(data, "DATA_DIR", tmp_path / "data")
    monkeypatch.setenv("EGALIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(PROFILES["paper"], "val_size", 2)  # of the 8 fake training images
    card = train_supervised_teacher(epochs=1, device="cpu", runs_dir=str(tmp_path / "runs"))
    assert card["command"] == "python -m egalib train-teacher --epochs 1"
    # made on this machine: into the cache, never into the package's own data
    made = tmp_path / "cache" / "teachers"
    assert sorted(p.name for p in made.iterdir()) == [
        "supervised-wrn40.json",
        "supervised-wrn40.pt",
    ]
    assert not list(teachers.TEACHER_DIR.glob("supervised-wrn40*"))
    teacher = models.teacher("supervised-wrn40")
    assert teacher.feature_dim == 128 and teacher.input_size == 32
    features = teacher.encode(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 128) and torch.isfinite(features).all()


@pytest.mark.integration
def test_transfer_protocol_probes_a_frozen_student(tmp_path, smoke, monkeypatch):
    from test_datasets import write_stl10

    from egalib.experiments.transfer import transfer
    from egalib.train import fit

    run = fit(smoke(method="vanilla", teacher="none"), progress=False)
    write_stl10(tmp_path / "data" / "stl10", train=3, test=2)
    monkeypatch.setattr(data, "DATA_DIR", tmp_path / "data")
    with pytest.raises(ValueError, match="3-channel images to a 1-channel network"):
        transfer(run.path, "stl10", epochs=2, device="cpu")  # a 1-channel student, RGB images
    rgb = fit(
        smoke(
            method="vanilla",
            teacher="none",
            dataset="stl10",
            train_size=None,
            test_size=None,
            val_size=0,  # of 3 training images; nothing is held out or selected
            batch_size=2,
        ),
        progress=False,
    )
    result = transfer(rgb.path, "stl10", epochs=2, device="cpu")
    written = rgb.path / "transfer_stl10.json"
    assert 0 <= result["top1"] <= 100 and written.is_file()
    for epochs in (0, -2):  # no classifier trained: chance, written over the result
        with pytest.raises(ValueError, match=f"epochs must be a whole number >= 1, got {epochs}"):
            transfer(rgb.path, "stl10", epochs=epochs, device="cpu")
    assert json.loads(written.read_text()) == result
    assert rgb.metrics["selected_epoch"] is None and rgb.metrics["val_top1"] is None
    (rgb.path / "metrics.json").unlink()
    with pytest.raises(ValueError, match="is not a finished run folder; finish training it"):
        transfer(rgb.path, "stl10", epochs=2, device="cpu")
    for where in (rgb.path.parent, tmp_path / "typo"):  # were "finish training it first"
        with pytest.raises(ValueError, match=r"is not a run folder \(it has no config.json\)"):
            transfer(where, "stl10", epochs=2, device="cpu")


@pytest.mark.parametrize(
    "checkpoint, problem",
    [
        (None, "has no checkpoint.pt; delete its metrics.json and train the run again."),
        (b"PK\x03\x04 cut short", "cannot be read (RuntimeError: PytorchStreamReader failed"),
        ({"x": torch.zeros(1)}, "does not hold this run's student (KeyError: 'student_view')"),
        (
            {
                "student_view": {"channels": 1, "mean": [0.5], "std": [0.5]},
                "model": {"student.layers.0.0.weight": torch.zeros(1)},
            },
            "does not hold this run's student (RuntimeError: Error(s) in loading state_dict",
        ),
    ],
)
def test_a_finished_run_without_its_student_is_one_sentence_that_unfinishes_it(
    tmp_path, checkpoint, problem
):
    from egalib.config import RunConfig
    from egalib.experiments.transfer import frozen_student
    from egalib.runs import CheckpointError, Run

    config = RunConfig.from_profile("smoke", method="vanilla", teacher="none", runs_dir=tmp_path)
    run = Run.open(config)
    (run.path / "metrics.json").write_text('{"top1": 10.0}')
    if isinstance(checkpoint, bytes):
        (run.path / "checkpoint.pt").write_bytes(checkpoint)
    elif checkpoint is not None:
        torch.save(checkpoint, run.path / "checkpoint.pt")
    with pytest.raises(CheckpointError) as refused:
        frozen_student(run)
    sentence = str(refused.value)
    assert problem in sentence and len(sentence.splitlines()) == 1
    assert "metrics.json" in sentence.split("; ")[-1]  # train would reuse the finished run


def test_ega_with_the_rn101_teacher_weighs_its_edge_term_as_the_authors_script_does():
    configs = table_configs("architectures")
    ega = [c for c in configs if c.method == "ega"]
    assert {c.options.get("edge_weight") for c in ega if c.teacher == "clip-rn101"} == {0.3}
    assert all(c.options == {} for c in ega if c.teacher != "clip-rn101")
    assert all(c.options == {} for c in configs if c.method != "ega")
