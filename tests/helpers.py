"""Helpers shared by the loss tests."""

import torch


def finite_with_finite_grads(loss: torch.Tensor, *inputs: torch.Tensor) -> bool:
    """The loss and its gradient with respect to every input are finite."""
    grads = torch.autograd.grad(loss, inputs)
    return torch.isfinite(loss).item() and all(torch.isfinite(g).all().item() for g in grads)
