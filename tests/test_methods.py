"""The method table: each method's options, defaults and types come from its loss's signature."""

import inspect
import re

import pytest
import torch

from egalib.methods import METHODS, DistillInputs, Method


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


def returns(out):
    def custom(xs, xt):
        return out

    return Method(custom, beta=1.0)


@pytest.mark.parametrize(
    "out, given",
    [
        (torch.ones(4), "distill as a torch.float32 tensor of shape (4,)"),
        (1.0, "distill as float"),
        (torch.tensor(3), "distill as a torch.int64 tensor of shape ()"),
        ({}, "distill as dict"),
        (
            {"loss": torch.tensor(1.0), "parts": torch.ones(2)},
            "parts as a torch.float32 tensor of shape (2,)",
        ),
    ],
)
def test_a_loss_that_gives_more_or_less_than_one_float_number_is_one_sentence(out, given):
    xs = torch.randn(4, 3)
    inputs = DistillInputs(xs, xs, None, None, None, None)
    with pytest.raises(ValueError, match=f"^loss 'custom' gave {re.escape(given)}; a loss returns"):
        returns(out).distill_terms(inputs)


def test_a_loss_s_named_terms_follow_its_value():
    one, two = torch.tensor(1.0), torch.tensor(2.0, dtype=torch.float64)
    inputs = DistillInputs(torch.randn(4, 3), torch.randn(4, 3), None, None, None, None)
    assert returns(one).distill_terms(inputs) == {"distill": one}
    terms = returns({"value": one, "node": two}).distill_terms(inputs)
    assert list(terms) == ["distill", "node"] and terms["node"] is two
