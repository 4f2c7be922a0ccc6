"""Students and teachers by name: `student(name, in_channels)` and `teacher(name, pretrained)`."""

from .students import STUDENTS, Backbone
from .teachers import TEACHERS, Teacher


def _unknown(kind: str, name: str, known) -> ValueError:
    return ValueError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(known)}.")


def student(name: str, in_channels: int = 3) -> Backbone:
    """A student backbone without classifier; `.feature_dim` is the size of its features."""
    if name not in STUDENTS:
        raise _unknown("student", name, STUDENTS)
    return STUDENTS[name](in_channels=in_channels)


def teacher(name: str, pretrained: bool = True) -> Teacher:
    """A frozen teacher encoder: `.encode(x)`, `.feature_dim`, `.input_size`, `.mean`, `.std`."""
    if name not in TEACHERS:
        raise _unknown("teacher", name, TEACHERS)
    return TEACHERS[name](pretrained=pretrained)


__all__ = ["STUDENTS", "TEACHERS", "Backbone", "Teacher", "student", "teacher"]
