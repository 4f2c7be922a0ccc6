import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_egalib

from egalib.models.teachers import TEACHER_DIR

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_list_prints_one_line_per_kind():
    out = run_egalib("list")
    assert out.returncode == 0
    lines = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    assert set(lines) == {"methods", "teachers", "students", "datasets"}  # DESIGN.md's contract
    assert {"vanilla", "ega", "ega-node", "ega-edge", "kd", "ega+kd"} <= set(
        lines["methods"].split()
    )
    assert "resnet8x4" in lines["students"].split()
    assert "fashion-mnist" in lines["datasets"].split()


@pytest.mark.integration
def test_train_prints_the_final_metrics(tmp_path):
    out = run_egalib(
        *"train --profile smoke --method ega --train-size 64 --test-size 64 --runs-dir".split(),
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout[out.stdout.index("{") :])
    assert set(metrics) >= {"top1", "selected_top1", "teacher_top1", "wall_time_s"}


@pytest.mark.integration
def test_pretrain_teacher_writes_beside_the_runs_not_over_the_shipped_teacher(tmp_path):
    shipped = TEACHER_DIR / "ssl-fmnist.pt"
    before = shipped.read_bytes()
    flags = "--epochs 1 --batch-size 4 --train-size 8 --probe-epochs 1"
    out = run_egalib("pretrain-teacher", *flags.split(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    card = json.loads(out.stdout[out.stdout.index("{") :])
    assert card["command"] == f"python -m egalib pretrain-teacher {flags}"
    made = tmp_path / "runs" / "teachers"
    assert f"written: {Path('runs/teachers/ssl-fmnist.pt')} and ssl-fmnist.json" in out.stdout
    assert sorted(p.name for p in made.iterdir()) == ["ssl-fmnist.json", "ssl-fmnist.pt"]
    assert shipped.read_bytes() == before


@pytest.mark.integration
def test_bad_input_is_one_line_on_stderr_not_a_traceback(tmp_path):
    out = run_egalib("train", "--profile", "smoke", "--method", "nope", "--runs-dir", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.startswith("error: unknown method 'nope'; known methods:")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_capture_flag_reaches_the_run_config_of_train_and_reproduce():
    from egalib.experiments.cli import build_parser, config_from_args
    from egalib.experiments.reproduce import table_configs

    parser = build_parser()
    assert config_from_args(parser.parse_args(["train", "--capture"])).capture is True
    assert config_from_args(parser.parse_args(["train"])).capture is False
    args = parser.parse_args(["reproduce", "--table", "datasets", "--capture", "--dry-run"])
    assert args.capture is True
    configs = table_configs("datasets", capture=args.capture or None)
    assert configs and all(c.capture for c in configs)
    # capture is how a run executes, not what it computes: the run folder stays the same
    assert [c.run_name for c in configs] == [c.run_name for c in table_configs("datasets")]


@pytest.mark.integration
def test_typed_options_train_crd_and_a_wrong_type_is_one_sentence(tmp_path):
    out = run_egalib(
        *"train --profile smoke --method crd --option num_negatives=64 --train-size 64".split(),
        *"--test-size 64 --runs-dir".split(),
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    config = json.loads(next(tmp_path.glob("*/config.json")).read_text())
    assert config["options"] == {"num_negatives": 64}
    out = run_egalib(
        *"train --profile smoke --method ega --option tau=abc --runs-dir".split(),
        str(tmp_path),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: unknown option(s) tau for method 'ega'")
    out = run_egalib(
        *"train --profile smoke --method nce --option tau=abc --runs-dir".split(),
        str(tmp_path),
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("error: option tau='abc' of method 'nce' must be float")


@pytest.mark.integration
def test_list_options_shows_each_method_s_options_and_docs_show_the_same():
    out = run_egalib("list", "--options")
    assert out.returncode == 0
    assert "  crd: embed_dim=128 (int) num_negatives=16384 (int) tau=0.07 (float)" in out.stdout
    assert "  ega-edge: node_weight=0.0 (float) edge_weight=0.24 (float)" in out.stdout
    printed = [line for line in out.stdout.splitlines() if line.startswith("  ")]
    docs = (REPO / "docs" / "cli.md").read_text()
    block = docs.split("<!-- list-options -->\n```text\n", 1)[1].split("```", 1)[0]
    assert block.splitlines() == printed


@pytest.mark.integration
def test_the_benchmark_is_a_script_beside_the_library_not_a_command_of_it():
    bench = lambda *args: subprocess.run(
        [sys.executable, "benchmarks/bench.py", *args], capture_output=True, text=True, cwd=REPO
    )
    out = bench("--help")
    assert out.returncode == 0 and "--accuracy-epochs" in out.stdout
    out = bench("--steps", "0", "--device", "cpu")  # refused before any measurement
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and "--steps" in out.stderr
    out = run_egalib("bench", "--help")
    assert out.returncode == 2 and "invalid choice: 'bench'" in out.stderr


@pytest.mark.integration
def test_unknown_arguments_are_an_error():
    out = run_egalib("list", "--no-such-flag")
    assert out.returncode == 2 and "unrecognized arguments: --no-such-flag" in out.stderr


def test_every_flag_of_every_command_has_help_text():
    from egalib.experiments.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, (name, action.option_strings or action.dest)
        # a flag without a default says in its text what happens without it, never "None"
        assert "(default: None)" not in " ".join(command.format_help().split()), name
    train = commands.choices["train"].format_help()
    assert "one of: vanilla, kd" in train and "(default: the profile's; demo: 6)" in train


def test_the_cli_page_has_every_command_and_every_flag_of_train():
    from egalib.experiments.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    page = (REPO / "docs" / "cli.md").read_text()
    assert [name for name in commands.choices if f"## `{name}`" not in page] == []
    table = page[page.index("## `train`") : page.index("**Method options.**")]
    train = commands.choices["train"]._actions
    flags = [flag for action in train for flag in action.option_strings if flag != "--help"]
    assert [flag for flag in flags if flag.startswith("--") and f"`{flag}" not in table] == []


REFUSED_BEFORE_TRAINING = {
    "--seed beside --seeds": ("train --seed 5 --seeds 0", "--seed and --seeds both name"),
    # once trained seed 0 to the end, then refused the second seed's folder
    "one --name for two seeds": ("train --name foo --seeds 0 1", "is one run folder, but --seeds"),
    # once torch's "Overflow when unpacking long long", with a failed run folder left behind
    "a seed past 64 bits": ("train --seed 4611686018427387904", "seed must be a whole number in"),
    # once a run folder recorded as failed, whose config.json kept the device
    "a device this machine lacks": ("train --device tpu", "device 'tpu' is not available"),
    # once torch's own message, even for the --device auto its help offers
    "pretrain-teacher's device": ("pretrain-teacher --device tpu", "device 'tpu' is not available"),
    # once ignored: compare without --methods trains nothing
    "--profile of compare without --methods": ("compare --profile paper", "--profile applies only"),
    "--executor of compare without --methods": (
        "compare --executor slurm --parallel 3",
        "--parallel, --executor apply only with --methods",
    ),
}


@pytest.mark.parametrize("case", REFUSED_BEFORE_TRAINING)
def test_conflicting_or_impossible_flags_are_refused_before_anything_is_written(
    tmp_path, capsys, case
):
    from egalib.experiments import cli

    command, says = REFUSED_BEFORE_TRAINING[case]
    where = "--out" if command.startswith("pretrain") else "--runs-dir"
    smoke = ["--profile", "smoke"] if command.startswith("train") else []
    assert cli.main([*command.split(), *smoke, where, str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and says in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_colab_cell_clones_over_https_only():
    from egalib.experiments.notebooks import colab_cell

    assert "https://github.com/o/egalib" in colab_cell("https://github.com/o/egalib")
    with pytest.raises(ValueError, match="give an https:// URL"):
        colab_cell("http://github.com/o/egalib")  # once accepted, against the docs
