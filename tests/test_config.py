"""RunConfig: bad values are one clear sentence; given weights and options replace the method's."""

import pytest
import torch

from egalib.config import RunConfig, resolve_device


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"method": "egaa"},
            r"unknown method 'egaa'; known methods: vanilla, kd, fitnet.*ega-edge",
        ),
        ({"student": "vit"}, r"unknown student 'vit'; known students: .*resnet8x4"),
        ({"teacher": "clip"}, r"unknown teacher 'clip'; known teachers: ssl-fmnist"),
        ({"dataset": "mnist"}, r"unknown dataset 'mnist'; known datasets: fashion-mnist"),
        ({"protocol": "later"}, r"unknown protocol 'later'; known protocols: pretrained, joint"),
        ({"batch_size": 1}, r"batch_size must be at least 2, got 1"),
        ({"options": {"edge_wieght": 0.1}}, r"unknown option\(s\) edge_wieght.*edge_weight"),
        ({"epochs": 0}, r"epochs must be a whole number >= 1, got 0"),
        ({"lr": 1e308}, r"lr must be at most 3.403e\+38, float32's largest number, got 1e\+308"),
        ({"beta": 1e39}, r"beta must be at most 3.403e\+38"),
        (
            {"method": "crd", "options": {"num_negatives": 64.0}},
            r"option num_negatives of method 'crd' must be a finite int, got 64.0",
        ),
        ({"options": {"tau": 0.1}}, r"unknown option\(s\) tau for method 'ega'"),
        (
            {"options": {"edge_weight": "0.3"}},
            r"edge_weight of method 'ega' must be a finite float",
        ),
        ({"options": {"edge_weight": True}}, r"edge_weight of method 'ega' must be a finite float"),
        (  # trained a second vanilla run, identical but for its name, beside the first
            {"method": "vanilla", "beta": 5.0},
            r"^method 'vanilla' has no term of its own for beta to weigh; leave beta unset",
        ),
        ({"method": "kd", "beta": 0.0}, r"^method 'kd' has no term of its own for beta to weigh"),
    ],
)
def test_bad_config_is_one_clear_sentence(overrides, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**overrides)


def test_config_overrides_method_defaults():
    config = RunConfig(method="ega", beta=2.0, options={"edge_weight": 0.5})
    assert config.weights.beta == 2.0 and config.weights.gamma == 1.0
    assert config.weights.defaults == {"node_weight": 0.8, "edge_weight": 0.5}
    assert RunConfig(method="kd").weights.alpha == 0.9
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("name", ["../escaped_run", "a/b", "..", ".", "", "/abs", "a\\b"])
def test_a_run_name_that_leaves_its_folder_is_refused(name):
    with pytest.raises(ValueError, match="not a plain folder name.*--runs-dir"):
        RunConfig(name=name)
    assert RunConfig(name="my-run.v2").run_name == "my-run.v2"


@pytest.mark.parametrize(
    "method, option, value, expected",
    [
        ("nce", "tau", 0.0, "> 0"),
        ("ccl", "T", -1.0, "> 0"),
        ("crd", "embed_dim", 0, ">= 1"),
        ("crd", "num_negatives", 0, ">= 1"),
        ("crd", "momentum", 1.0, r"in \[0, 1\)"),
        ("pkt", "eps", 0.0, "> 0"),
        ("ega", "edge_weight", -0.1, ">= 0"),
        ("rkd", "angle_weight", -1.0, ">= 0"),
    ],
)
def test_options_out_of_their_formula_s_range_are_one_sentence(method, option, value, expected):
    with pytest.raises(
        ValueError, match=f"option {option} of method '{method}' must be .*{expected}"
    ):
        RunConfig(method=method, options={option: value})
    edge = {"tau": 1e-3, "T": 1e-3, "eps": 1e-9, "embed_dim": 1, "num_negatives": 1}
    RunConfig(method=method, options={option: edge.get(option, 0.0)})  # the edge is accepted


@pytest.mark.parametrize("name", ["xpu", "nonsense", "meta"])
def test_a_device_this_machine_lacks_is_one_sentence(name):
    with pytest.raises(ValueError, match=f"device '{name}' is not available on this machine"):
        resolve_device(name)
    assert resolve_device("cpu") == torch.device("cpu")


def test_run_names_carry_the_overrides_that_tell_them_apart():
    assert "_sp_pretrained_beta300_e" in RunConfig(method="sp", beta=300.0).run_name
    assert "_edge_weight0.3_e" in RunConfig(options={"edge_weight": 0.3}).run_name
    assert "_pretrained_e240_" in RunConfig().run_name  # the method's own weights: no tag
    many = RunConfig(
        gamma=1.0, alpha=0.5, beta=2.0, options={"edge_weight": 0.3, "node_weight": 0.1}
    )
    assert len("_".join(many.override_tags())) <= 40


def test_a_path_for_runs_dir_is_kept_as_its_text(tmp_path):
    from egalib.runs import Run

    config = RunConfig.from_profile("smoke", runs_dir=tmp_path)
    assert config.runs_dir == str(tmp_path) and config == RunConfig.from_profile(
        "smoke", runs_dir=str(tmp_path)
    )
    run = Run.open(config)  # its config.json is written: a Path is not JSON
    assert run.config["runs_dir"] == str(tmp_path)
