"""Methods from your own code: registration, plugin modules, entry points, worker processes."""

import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import run_egalib

import egalib
from egalib import plugins
from egalib.config import RunConfig
from egalib.datasets import DATASETS
from egalib.methods import METHODS, DistillInputs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
# the plugin module that docs/extending.md shows: the tests train that very code
PLUGIN = next(
    block
    for block in re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    if "register_method" in block
)


def cosine(xs, xt, scale: float = 1.0):
    return scale * (1 - F.cosine_similarity(xs, xt, dim=1)).mean()


@pytest.fixture
def method():
    registered = egalib.register_method("cosine", egalib.Method(cosine, beta=2.0))
    yield registered
    METHODS.pop("cosine")


def test_a_registered_method_reads_its_options_and_weights_as_the_built_ins_do(method):
    assert method.option_types == {"scale": float} and method.defaults == {"scale": 1.0}
    config = RunConfig.from_profile("smoke", method="cosine", options={"scale": 3.0})
    assert config.resolved() == {"gamma": 1.0, "alpha": 0.0, "beta": 2.0, "options": {"scale": 3.0}}
    xs, xt = torch.randn(4, 8), torch.randn(4, 8)
    inputs = DistillInputs(
        xs, xt, torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4).long(), None
    )
    terms = method.loss_terms(inputs, kd_temperature=4.0)
    expected = (1 - F.cosine_similarity(xs, xt, dim=1)).mean()
    assert torch.allclose(terms["distill"], expected)
    assert torch.allclose(terms["loss"], terms["ce"] + 2.0 * expected)
    with pytest.raises(ValueError, match="unknown option"):
        RunConfig.from_profile("smoke", method="cosine", options={"sharpness": 1.0})


def test_a_name_is_refused_in_one_sentence_when_it_is_taken_or_not_a_method(method):
    with pytest.raises(plugins.PluginError, match=r"^method 'ega' is one of egalib's own"):
        egalib.register_method("ega", egalib.Method(cosine))
    with pytest.raises(plugins.PluginError, match="already registered by another plugin"):
        egalib.register_method("cosine", egalib.Method(cosine, beta=5.0))
    assert egalib.register_method("cosine", egalib.Method(cosine, beta=2.0)) == method  # again
    with pytest.raises(plugins.PluginError, match="not an egalib.methods.Method; wrap"):
        egalib.register_method("plain", cosine)
    # a name is part of its run folders' names: '/' or '..' trained outside --runs-dir
    for name in ("two words", "", "../../outside", "a/b", "a\\b", ".hidden", "é", "m" * 65):
        with pytest.raises(plugins.PluginError, match="one word of letters, digits and - _ "):
            egalib.register_method(name, egalib.Method(cosine))
        with pytest.raises(plugins.PluginError, match="(it names run folders)"):
            egalib.register_dataset(name, egalib.ImageFolder("unused"))
    assert not {"a/b", "../../outside"} & (METHODS.keys() | DATASETS.keys())
    assert METHODS["ega"].loss.__name__ == "ega_with_terms" and "plain" not in METHODS


def only_xs(xs):
    return xs.pow(2).mean()


class Bank(torch.nn.Module):
    def forward(self, xs, xt, index):
        return (xs - xt).pow(2).mean()


@pytest.mark.parametrize(
    "method, words",
    [
        (egalib.Method(cosine, ("xs", "foo")), "takes foo, which a step does not give; name"),
        (egalib.Method(only_xs), "cannot be called with xs, xt and its options (too many"),
        (egalib.Method(cosine, options={"zz": 1.0}), "unexpected keyword argument 'zz'"),
        (egalib.Method(Bank, ("xs", "xt")), "cannot be called with xs, xt and its options"),
        (egalib.Method(cosine, beta=-1.0), "beta must be a finite number >= 0, got -1.0"),
        (egalib.Method(cosine, alpha=float("nan")), "alpha must be a finite number >= 0, got nan"),
    ],
)
def test_a_method_that_its_first_step_would_refuse_is_refused_when_registered(method, words):
    with pytest.raises(plugins.PluginError, match=rf"^method 'mine': .*{re.escape(words)}"):
        egalib.register_method("mine", method)
    assert "mine" not in METHODS


def test_a_loss_module_is_checked_against_its_forward():
    try:
        bank = egalib.register_method("bank", egalib.Method(Bank, ("xs", "xt", "index")))
        assert bank.stateful and METHODS["bank"] is bank
    finally:
        METHODS.pop("bank", None)


def egalib_cli(args, folder, env=None, timeout=600):
    """`python -m egalib ARGS` with `folder` on PYTHONPATH, run in `folder`."""
    env = {**os.environ, "PYTHONPATH": str(folder), **(env or {})}
    env.pop(plugins.ENV, None)
    return run_egalib(*args, cwd=folder, env=env, timeout=timeout)


@pytest.mark.integration
def test_the_command_line_lists_a_plugin_s_method_with_its_options(tmp_path):
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    done = egalib_cli(["--plugin", "my_methods", "list", "--options"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        "ega-cosine: node_weight=0.8 (float) edge_weight=0.24 (float); gamma 1, alpha 0, beta 1"
        in done.stdout
    )
    plain = egalib_cli(["list"], tmp_path)
    assert plain.returncode == 0 and "ega-cosine" not in plain.stdout


@pytest.mark.integration
def test_an_entry_point_plugin_is_imported_without_a_flag(tmp_path):
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    info = tmp_path / "my_methods-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-methods\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[egalib.plugins]\nmine = my_methods\n")
    done = egalib_cli(["list"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ega-cosine" in done.stdout.split("methods:")[1].splitlines()[0]


@pytest.mark.integration
@pytest.mark.parametrize(
    "source, words",
    [
        ("raise ZeroDivisionError('no')", "failed to import (ZeroDivisionError: no); fix it"),
        (PLUGIN.replace('"ega-cosine"', '"kd"'), "method 'kd' is one of egalib's own"),
    ],
)
def test_a_plugin_that_fails_is_one_sentence_and_exit_2(tmp_path, source, words):
    (tmp_path / "broken.py").write_text(source)
    done = egalib_cli(["--plugin", "broken", "list"], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and words in done.stderr
    assert done.stderr.count("\n") == 1
    missing = egalib_cli(["--plugin", "not_there", "list"], tmp_path)
    assert missing.returncode == 2 and "plugin 'not_there' failed to import" in missing.stderr


@pytest.mark.integration
def test_a_plugin_s_loss_that_fails_in_torch_names_the_file_with_its_traceback(tmp_path):
    """torch's one line alone does not say where; error.txt holds the traceback into the loss."""
    source = "import torch\nimport egalib\n\n\ndef proj(xs, xt):\n"
    source += "    return (xs @ torch.ones(7, 3)).mean()\n\n\n"
    source += 'egalib.register_method("proj", egalib.Method(proj, beta=1.0))\n'
    (tmp_path / "bad_methods.py").write_text(source)
    args = ["--plugin", "bad_methods", "train", "--profile", "smoke", "--method", "proj"]
    done = egalib_cli([*args, "--runs-dir", "runs"], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    error = done.stderr.splitlines()[-1]
    assert error.startswith("error: mat1 and mat2 shapes cannot be multiplied")
    (record,) = (tmp_path / "runs").glob("*_proj_*/error.txt")
    assert error.endswith(f"(its traceback: {record.relative_to(tmp_path)})")
    assert 'bad_methods.py", line 6, in proj' in record.read_text()
    args = ["--plugin", "bad_methods", "compare", "--profile", "smoke", "--methods", "proj"]
    compared = egalib_cli([*args, "--runs-dir", "runs"], tmp_path).stderr.splitlines()[-1]
    assert compared.startswith("error: 1 cell(s) failed: ") and "(its traceback: " in compared


@pytest.mark.integration
def test_worker_processes_train_a_plugin_s_method(tmp_path):
    """`demo --parallel 2` spawns two workers; each imports the plugin before it trains."""
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    args = ["--plugin", "my_methods", "demo", "--profile", "smoke", "--methods", "ega-cosine"]
    args += ["vanilla", "--seeds", "0", "1", "--parallel", "2", "--runs-dir", "runs"]
    done = egalib_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| student: ega-cosine | " in done.stdout and "notebooks not executed" in done.stdout
    finished = sorted(p.parent.name for p in (tmp_path / "runs").glob("*/metrics.json"))
    assert len(finished) == 4 and sum("_ega-cosine_" in name for name in finished) == 2
    pids = {line.split("(pid ")[1] for line in done.stdout.splitlines() if "starting of" in line}
    assert len(pids) == 2  # two worker processes, neither of them this command's own
    assert all(f"\n[{name}] epoch 1/1: validation top-1 " in done.stdout for name in finished)


@pytest.mark.integration
def test_the_weights_study_tunes_a_plugin_s_method_and_writes_beside_its_runs(tmp_path):
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    args = ["--plugin", "my_methods", "study", "weights", "--profile", "smoke"]
    args += ["--methods", "ega-cosine", "--seeds", "0", "--runs-dir", "runs"]
    done = egalib_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (tmp_path / "runs" / "weights-smoke.csv").read_text()
    assert (
        "ega-cosine" in summary
        and "\nega," not in summary
        and "chosen on validation" in done.stdout
    )


def test_a_method_may_take_the_features_before_each_head(smoke):
    """`features_s` and `features_t`: the student backbone's output with its gradient, and the
    frozen teacher's features without one."""
    from egalib import train
    from egalib.step import TrainState, train_step

    seen = {}

    def feature_norms(features_s, features_t):
        seen.update(student=features_s, teacher=features_t)
        return (features_s.norm(dim=1).mean() - features_t.norm(dim=1).mean()) ** 2

    egalib.register_method(
        "feature-norms", egalib.Method(feature_norms, ("features_s", "features_t"), beta=1.0)
    )
    try:
        config = smoke(method="feature-norms")
        state = TrainState.build(config, train.prepare_data(config, torch.device("cpu")))
        terms = train_step(state, torch.arange(config.batch_size))
    finally:
        METHODS.pop("feature-norms")
    student, teacher = seen["student"], seen["teacher"]
    assert student.shape == (config.batch_size, state.networks.student.feature_dim)
    assert teacher.shape == (config.batch_size, state.networks.teacher.feature_dim)
    assert student.requires_grad and not teacher.requires_grad
    assert torch.isfinite(terms["distill"]) and terms["distill"] > 0


def test_the_teacher_snippet_of_the_extending_page_gives_the_features_the_step_uses():
    from egalib.views import eval_view

    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    [snippet] = [block for block in blocks if "teacher.encode" in block]
    scope = {}
    exec(snippet, scope)
    teacher, images = scope["teacher"], scope["images"]
    assert scope["features"].shape == (256, teacher.feature_dim)
    assert scope["features"].dtype == torch.float32
    unnormalised = teacher.encode(images.float())
    assert not torch.allclose(unnormalised, scope["features"])  # why the view matters
    assert torch.equal(scope["features"], teacher.encode(eval_view(images, teacher.view)))


@pytest.mark.integration
def test_compare_trains_a_plugin_s_method_paired_with_vanilla_and_prints_the_table(tmp_path):
    """The issue's own check: a plugin outside the repository, compared with vanilla at smoke."""
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    args = ["--plugin", "my_methods", "compare", "--methods", "vanilla", "ega-cosine"]
    args += ["--seeds", "0", "1", "--profile", "smoke", "--runs-dir", "runs"]
    done = egalib_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(
        line for line in done.stdout.splitlines() if line.startswith("| student: ega-cosine")
    )
    assert "[" in row and row.count("|") == 7  # the paired difference with its interval
    assert "executing" not in done.stdout  # no notebook
    finished = list((tmp_path / "runs").glob("*/metrics.json"))
    assert len(finished) == 4
    assert "| student: ega-cosine" in (tmp_path / "runs" / "compare.md").read_text()
    assert (tmp_path / "runs" / "compare.csv").read_text().count("ega-cosine") == 2


def test_the_guide_s_ega_on_cosine_graphs_matches_its_formula():
    """The worked example of docs/extending.md, against a float64 loop on random inputs, on the
    hand case where student and teacher agree, and in half precision."""
    scope = {}
    exec(PLUGIN.replace("egalib.register_method(", "print("), scope)  # the loss, not registered
    loss = scope["ega_cosine"]
    xs, xt = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    unit = lambda x: [[v / sum(w * w for w in row) ** 0.5 for v in row] for row in x.tolist()]
    s, t = unit(xs), unit(xt)
    dot = lambda a, b: sum(p * q for p, q in zip(a, b))
    node = sum((dot(t[i], s[j]) - (i == j)) ** 2 for i in range(6) for j in range(6)) ** 0.5
    edge = sum((dot(t[i], t[j]) - dot(s[i], s[j])) ** 2 for i in range(6) for j in range(6)) ** 0.5
    out = loss(xs, xt)
    assert out["node"].item() == pytest.approx(node) and out["edge"].item() == pytest.approx(edge)
    assert out["loss"].item() == pytest.approx(0.8 * node + 0.24 * edge)
    same = loss(xs, xs.clone())
    assert same["edge"].item() == pytest.approx(0.0, abs=1e-6)
    for dtype in (torch.float16, torch.bfloat16):
        half = loss(xs.to(dtype).requires_grad_(), xt.to(dtype))
        half["loss"].backward()
        assert torch.isfinite(half["loss"])
    with pytest.raises(ValueError, match="ega_cosine needs as many student rows"):
        loss(xs, xt[:3])


@pytest.mark.integration
def test_notebook_02_trains_a_plugin_s_method_named_by_the_environment(tmp_path, monkeypatch):
    """A kernel papermill starts imports the plugins of EGALIB_PLUGINS, as a worker does."""
    from egalib.experiments.demo import execute_notebook

    (tmp_path / "my_methods.py").write_text(PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv(plugins.ENV, "my_methods")
    parameters = {"profile": "smoke", "methods": ["vanilla", "ega-cosine"], "seeds": [0]}
    out = execute_notebook(
        "02_distillation.ipynb", {**parameters, "runs_dir": str(tmp_path)}, tmp_path
    )
    finished = [p.parent.name for p in tmp_path.glob("*/metrics.json")]
    assert sorted("_ega-cosine_" in name for name in finished) == [False, True], finished
    assert "ega-cosine" in out.read_text()


CELL = """
import torch
import egalib

def cosine_again(xs, xt):
    return 1 - torch.nn.functional.cosine_similarity(xs, xt).mean()

egalib.register_method("cosine-again", egalib.Method(cosine_again, beta=BETA))
egalib.register_dataset("folder-again", egalib.ImageFolder("some/folder"))
egalib.register_dataset("tensors-again", egalib.TensorSource(x, y, x, y, "ab"))
"""


def test_a_notebook_cell_run_again_registers_the_same_method_and_data_again():
    """docs/extending.md allows it; a cell run again makes a new function and a new source,
    which were once refused as another plugin's. Other weights or other tensors are refused."""
    x, y = torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])
    cell = lambda beta=2.0, labels=y: exec(CELL, {"BETA": beta, "x": x, "y": labels})
    try:
        cell()
        cell()  # the same cell, run again in the same kernel
        assert METHODS["cosine-again"].beta == 2.0 and "folder-again" in DATASETS
        with pytest.raises(plugins.PluginError, match="'cosine-again' is already registered"):
            cell(beta=3.0)
        with pytest.raises(plugins.PluginError, match="'tensors-again' is already registered"):
            cell(labels=1 - y)
    finally:
        METHODS.pop("cosine-again", None)
        for name in ("folder-again", "tensors-again"):
            DATASETS.pop(name, None)
