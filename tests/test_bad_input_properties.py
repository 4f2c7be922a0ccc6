"""Generated bad input, not only listed: for any value of any field, any JSON file where egalib
reads one, and any text given to a flag, egalib either accepts it or refuses it with one
sentence (a ValueError, or argparse's usage error), never with another exception."""

import json
import tempfile
from dataclasses import fields
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from egalib import teacher_table
from egalib.config import RunConfig
from egalib.experiments import cluster
from egalib.experiments.cli import build_parser, config_from_args
from egalib.runs import Run, load_runs

FIELDS = [f.name for f in fields(RunConfig)]
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# job.json as egalib writes it, with any values: an executor of egalib's or not, any job id
MARKERS = st.fixed_dictionaries(
    {"executor": st.sampled_from(["local", "submitit-local", "slurm"]) | ANY_JSON},
    optional=dict.fromkeys(["job_id", "host", "submitted", "log_folder", "pid_start"], ANY_JSON)
    | {"job_id": st.text(max_size=6) | st.integers().map(str) | ANY_JSON},
)
# the same examples in every run: a failure in CI is one a developer can replay
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def one_sentence(error: BaseException) -> None:
    assert isinstance(error, ValueError), repr(error)
    assert str(error) and "\n" not in str(error)


@SETTINGS
@given(key=st.sampled_from(FIELDS), value=ANY_JSON)
@example(key="runs_dir", value=5)
@example(key="device", value=None)
def test_any_value_of_any_field_is_accepted_or_one_sentence(key, value):
    try:
        config = RunConfig.from_profile("smoke", **{key: value})
    except ValueError as error:
        one_sentence(error)
    else:  # an accepted config names its folder and comes back whole from its config.json
        assert config.run_path.name == config.run_name
        assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@SETTINGS
@given(values=st.dictionaries(st.sampled_from(FIELDS), ANY_JSON, max_size=4))
def test_any_config_json_is_read_or_refused_naming_the_file(values):
    with tempfile.TemporaryDirectory() as folder:
        config = RunConfig.from_profile("smoke", runs_dir=folder, name="run")
        run = Run.open(config)
        run.config_path.write_text(json.dumps({**config.to_dict(), **values}))
        try:
            Run.open(config)
        except ValueError as error:
            one_sentence(error)
            assert str(run.path) in str(error)


@SETTINGS
@given(content=ANY_JSON | MARKERS)
@example(content={"executor": "local", "job_id": "²"})  # a digit to str.isdigit, not to int()
def test_any_job_json_is_a_marker_egalib_writes_or_none(content):
    with tempfile.TemporaryDirectory() as folder:
        config = RunConfig.from_profile("smoke", runs_dir=folder, name="run")
        path = Run.open(config).path
        (path / "job.json").write_text(json.dumps(content))
        marker = cluster.read_marker(path)
        with mock.patch.object(cluster, "slurm_states", lambda job_ids: {}):  # no Slurm asked
            [(state, detail)] = cluster.cell_states([config])
    assert state in cluster.STATES and isinstance(detail, str)
    assert marker is None or marker == content and isinstance(marker["job_id"], str)


@SETTINGS
@given(content=ANY_JSON | st.dictionaries(st.just("top1"), ANY_JSON, min_size=1))
@example(content={"top1": 50.0, "selected_epoch": None, "epochs": 6})
def test_any_metrics_json_is_read_or_refused_naming_the_file(content):
    with tempfile.TemporaryDirectory() as folder:
        run = Run(Path(folder))
        (run.path / "metrics.json").write_text(json.dumps(content))
        try:
            metrics = run.metrics
        except ValueError as error:
            one_sentence(error)
            assert "metrics.json" in str(error)
        else:
            assert "top1" in metrics
            assert all(v is None or isinstance(v, (int, float)) for v in metrics.values())


@SETTINGS
@given(provenance=ANY_JSON)
def test_any_provenance_of_a_finished_run_is_read_or_refused_naming_the_file(provenance):
    with tempfile.TemporaryDirectory() as folder:
        run = Run.open(RunConfig.from_profile("smoke", runs_dir=folder, name="run"))
        written = json.loads(run.config_path.read_text())
        run.config_path.write_text(json.dumps(written | {"provenance": provenance}))
        (run.path / "metrics.json").write_text(json.dumps({"top1": 50.0}))
        try:
            assert list(load_runs(folder)["top1"]) == [50.0]
        except ValueError as error:
            one_sentence(error)
            assert "config.json" in str(error)


@SETTINGS
@given(content=st.binary(max_size=48) | st.text(max_size=48).map(str.encode))
def test_any_history_csv_is_read_or_refused_naming_the_file(content):
    with tempfile.TemporaryDirectory() as folder:
        run = Run(Path(folder))
        (run.path / "history.csv").write_bytes(content)
        try:
            assert "epoch" in run.history.columns
        except ValueError as error:
            one_sentence(error)
            assert "history.csv" in str(error)


EMBEDDING_KEYS = st.sampled_from(["xs", "logits_s", "labels", "xt", "other"])
SHAPES = st.lists(st.integers(0, 3), max_size=2).map(tuple)
ANY_SAVED = st.dictionaries(EMBEDDING_KEYS, SHAPES.map(torch.zeros), max_size=4) | ANY_JSON


@SETTINGS
@given(saved=ANY_SAVED)
@example(saved={"xs": torch.ones(2, 3), "logits_s": torch.ones(2, 10), "labels": torch.ones(2)})
def test_any_embeddings_pt_is_read_or_refused_naming_the_file(saved):
    with tempfile.TemporaryDirectory() as folder:
        run = Run(Path(folder))
        torch.save(saved, run.path / "embeddings.pt")
        try:
            loaded = run.load_embeddings()
        except ValueError as error:
            one_sentence(error)
            assert "embeddings.pt" in str(error)
        else:
            assert {"xs", "logits_s", "labels"} <= loaded.keys()
            assert len({len(v) for v in loaded.values()}) == 1


@SETTINGS
@given(content=ANY_JSON)
def test_any_teacher_table_card_is_read_or_refused_naming_the_file(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.bin"
        path.write_bytes(bytes(16))
        path.with_suffix(".json").write_text(json.dumps(content))
        card = dict.fromkeys(teacher_table.CHECKED, "x")
        try:
            teacher_table.read(path, card, torch.float32, None, (2, 2))
        except ValueError as error:
            one_sentence(error)
            assert str(path) in str(error)


FLAGS = ["--epochs", "--batch-size", "--lr", "--beta", "--seed", "--method", "--device", "--name"]


@SETTINGS
@given(
    flag=st.sampled_from(FLAGS), text=st.text(max_size=12).filter(lambda t: not t.startswith("-"))
)
def test_any_text_given_to_a_train_flag_is_accepted_or_one_sentence(flag, text):
    parser = build_parser()
    try:
        args = parser.parse_args(["train", "--profile", "smoke", flag, text])
    except SystemExit as stop:  # argparse's usage error: one line on stderr, exit 2
        assert stop.code == 2
        return
    try:
        config_from_args(args)
    except ValueError as error:
        one_sentence(error)


@pytest.mark.parametrize("option", ["tau=abc", "edge_weight=nan", "node_weight=-1", "x=1"])
def test_bad_option_text_is_one_sentence(option):
    args = build_parser().parse_args(["train", "--profile", "smoke", "--option", option])
    with pytest.raises(ValueError) as caught:
        config_from_args(args)
    one_sentence(caught.value)
