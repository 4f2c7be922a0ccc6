"""Methods and datasets from your own code: `register_method`, `register_dataset`, and plugin
modules that call them, named by `--plugin` or by the `egalib.plugins` entry-point group.

A plugin is a module that registers when it is imported. The command line imports the plugins
first, and records them in EGALIB_PLUGINS, so that the processes it starts (local workers,
Slurm jobs) import them too before they train. docs/extending.md shows one."""

import importlib
import importlib.metadata
import inspect
import os
import re
from dataclasses import fields

import torch

from .config import check_numbers
from .datasets import DATASETS, Source
from .files import described
from .methods import METHODS, DistillInputs, Method

ENV = "EGALIB_PLUGINS"  # comma-separated module names, imported by `load_plugins()`
ENTRY_POINTS = "egalib.plugins"
BUILT_IN_METHODS = frozenset(METHODS)
BUILT_IN_DATASETS = frozenset(DATASETS)


class PluginError(ValueError):
    """A plugin could not be imported, or registered a name that is taken."""


def register_method(name: str, method: Method) -> Method:
    """Make `method` known as `name` to egalib's runs, tables and command line."""
    if not isinstance(method, Method):
        raise PluginError(
            f"method {name!r} is a {type(method).__name__}, not an egalib.methods.Method; "
            "wrap your loss as Method(loss, beta=...)."
        )
    try:
        check_method(method)
    except ValueError as error:
        raise PluginError(f"method {name!r}: {error}") from None
    return _register(METHODS, BUILT_IN_METHODS, "method", name, method)


def check_method(method: Method) -> None:
    """What a run would otherwise meet only at its first step: weights out of range, a name in
    `takes` that a step does not give, a loss that cannot be called with them."""
    check_numbers(method, {}, at_least_zero=("gamma", "alpha", "beta"))
    given = [f.name for f in fields(DistillInputs)]
    if unknown := [name for name in method.takes if name not in given]:
        raise ValueError(
            f"takes {', '.join(unknown)}, which a step does not give; name some of "
            f"{', '.join(given)}."
        )
    try:
        if method.stateful:  # built with its options, then called with `takes`
            inspect.signature(method.loss.forward).bind(None, *method.takes)
        elif method.loss is not None:
            inspect.signature(method.loss).bind(*method.takes, **method.defaults)
    except TypeError as error:
        raise ValueError(
            f"its loss cannot be called with {', '.join(method.takes)} and its options ({error}); "
            "give it one argument for each name in takes, in that order, and one for each option."
        ) from None


def register_dataset(name: str, source: Source) -> Source:
    """Make `source` (an ImageFolder, a TensorSource or your own Source) known as `name`."""
    if not isinstance(source, Source):
        raise PluginError(
            f"dataset {name!r} is a {type(source).__name__}, not an egalib.datasets.Source; "
            "use egalib.ImageFolder(folder) or egalib.TensorSource(...)."
        )
    source.name = name
    return _register(DATASETS, BUILT_IN_DATASETS, "dataset", name, source)


def _register(table: dict, built_in: frozenset, kind: str, name: str, value):
    word = r"[A-Za-z0-9][\w.+-]{0,63}"  # within a run folder's name, which a file system caps
    if not isinstance(name, str) or not re.fullmatch(word, name, re.ASCII):
        raise PluginError(  # it becomes part of run folder names: no '/' or '..' out of them
            f"a {kind} name must be one word of letters, digits and - _ + . (it names run "
            f"folders), at most 64 characters, got {name!r}."
        )
    if name in built_in:
        raise PluginError(
            f"{kind} {name!r} is one of egalib's own and cannot be replaced; register yours "
            "under another name."
        )
    if name in table and not made_again(table[name], value):
        raise PluginError(
            f"{kind} {name!r} is already registered by another plugin; give one of them "
            "another name."
        )
    table[name] = value
    return value


def made_again(old, new) -> bool:
    """`new` is `old`, or `old` made again by the same code (a notebook cell run again): of one
    class, with equal values, a function counting as equal to one defined at the same place."""
    if old is new:
        return True
    if callable(old) and hasattr(old, "__qualname__"):
        at = lambda f: (getattr(f, "__module__", None), getattr(f, "__qualname__", None))
        return at(old) == at(new)
    if isinstance(old, torch.Tensor | tuple | list | dict) or hasattr(old, "__dict__"):
        return type(old) is type(new) and _same_parts(old, new)
    return old == new


def _same_parts(old, new) -> bool:
    if isinstance(old, torch.Tensor):
        return old.shape == new.shape and old.dtype == new.dtype and torch.equal(old, new)
    if isinstance(old, dict) or hasattr(old, "__dict__"):
        old, new = (x if isinstance(x, dict) else vars(x) for x in (old, new))
        return old.keys() == new.keys() and all(made_again(old[k], new[k]) for k in old)
    return len(old) == len(new) and all(map(made_again, old, new))


def load_plugins(modules=()) -> list[str]:
    """Import `modules`, those already in EGALIB_PLUGINS and those of the entry-point group;
    record them all in EGALIB_PLUGINS for the processes this one starts. Returns them."""
    named = [m for m in os.environ.get(ENV, "").split(",") if m] + list(modules)
    points = importlib.metadata.entry_points(group=ENTRY_POINTS)
    named += [point.value.split(":")[0] for point in points]
    named = list(dict.fromkeys(m.strip() for m in named))
    for module in named:
        try:
            importlib.import_module(module)
        except PluginError:
            raise
        except Exception as error:
            raise PluginError(
                f"plugin {module!r} failed to import ({described(error)}); fix it, "
                "or make it importable here (installed, or its folder on PYTHONPATH)."
            ) from None
    if named:
        os.environ[ENV] = ",".join(named)
    return named
