"""The method table: each method's options, defaults and types come from its loss's signature."""

import inspect

from egalib.methods import METHODS


def test_each_method_option_is_read_from_its_loss_signature():
    """One source of truth: a method's options, defaults and types are its loss's keyword
    arguments; a table entry states only what differs from them."""
    for name, method in METHODS.items():
        if method.loss is None:
            assert method.defaults == {} and method.option_types == {}, name
            continue
        parameters = inspect.signature(method.loss).parameters
        for key, value in method.defaults.items():
            assert key in parameters, (name, key)
            if key not in method.options:
                assert value == parameters[key].default, (name, key)
    assert METHODS["ega"].defaults == {"node_weight": 0.8, "edge_weight": 0.24}
    assert METHODS["ega-node"].defaults == {"node_weight": 0.8, "edge_weight": 0.0}
    assert METHODS["crd"].option_types == {
        "embed_dim": int,
        "num_negatives": int,
        "tau": float,
        "momentum": float,
    }
    assert METHODS["rkd"].defaults == {"distance_weight": 25.0, "angle_weight": 50.0}
