"""Students and teachers by name: `student(name, in_channels)` and `teacher(name, pretrained)`;
the embedding heads that sit on both."""

from .heads import EmbeddingHead
from .students import STUDENTS, Backbone
from .teachers import TEACHERS, Teacher


def _known(kind: str, name: str, known: dict):
    if name not in known:
        raise ValueError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(known)}.")
    return known[name]


def student(name: str, in_channels: int = 3) -> Backbone:
    """A student backbone without classifier; `.feature_dim` is the size of its features."""
    return _known("student", name, STUDENTS)(in_channels=in_channels)


def teacher(name: str, pretrained: bool = True) -> Teacher:
    """A frozen teacher encoder: `.encode(x)`, `.feature_dim`, `.input_size`, `.mean`, `.std`."""
    return _known("teacher", name, TEACHERS)(pretrained=pretrained)


__all__ = ["STUDENTS", "TEACHERS", "Backbone", "EmbeddingHead", "Teacher", "student", "teacher"]
