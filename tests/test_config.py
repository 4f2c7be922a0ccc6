"""RunConfig: bad values are one clear sentence; given weights and options replace the method's."""

import pytest

from egalib.config import RunConfig


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
