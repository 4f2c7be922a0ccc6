"""Helpers shared by the tests: the loss tests' gradient check, egalib's command line run as a
user runs it, and notebooks read without importing nbformat at collection."""

import subprocess
import sys

import torch


def run_egalib(*args: str, cwd=None, env=None, timeout: float = 600):
    """`python -m egalib ARGS` in a new process, its output captured as text."""
    command = [sys.executable, "-m", "egalib", *args]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def finite_with_finite_grads(loss: torch.Tensor, *inputs: torch.Tensor) -> bool:
    """The loss and its gradient with respect to every input are finite."""
    grads = torch.autograd.grad(loss, inputs)
    return torch.isfinite(loss).item() and all(torch.isfinite(g).all().item() for g in grads)


def read_notebook(path):
    """The notebook at `path`, as nbformat version 4. nbformat is imported here, not at the top of
    a test module: its JSON-schema checker takes seconds to import, and every pytest worker
    would pay for it while collecting, whether or not it runs a notebook test."""
    import nbformat

    return nbformat.read(path, as_version=4)
