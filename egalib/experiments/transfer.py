"""The CRD transfer protocol: a linear classifier on a frozen student's features.

docs/method.md leaves open how the paper obtained its STL-10 and Tiny-ImageNet numbers. egalib's
default is direct training on those datasets; this module gives the other reading, CRD's: take a
student distilled on CIFAR-100, freeze it, and train a linear classifier on its features of the
new dataset, with images resized to the student's 32 pixels.
"""

import json
from pathlib import Path

from .. import models
from ..config import check_whole, resolve_device
from ..datasets import load_dataset
from ..files import atomic_write_text, described
from ..models import Teacher
from ..runs import CheckpointError, Run
from .pretrain import linear_probe_accuracy, trained_checkpoint


def frozen_student(run: Run, image_size: int = 32) -> Teacher:
    """A finished run's student backbone, frozen behind the teacher interface."""
    state = trained_checkpoint(run)
    try:
        view = state["student_view"]  # the student keeps the normalisation it was trained with
        backbone = models.student(run.config["student"], in_channels=view["channels"])
        prefix = "student."
        backbone.load_state_dict(
            {k.removeprefix(prefix): v for k, v in state["model"].items() if k.startswith(prefix)}
        )
        return Teacher(
            backbone, backbone.feature_dim, image_size, view["channels"], view["mean"], view["std"]
        )
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
        raise CheckpointError(
            f"{run.path / 'checkpoint.pt'} does not hold this run's student ({described(error)}); "
            "delete it and the folder's metrics.json, and train the run again."
        ) from None


def transfer(run_path: str | Path, dataset: str, epochs: int = 240, device: str = "auto") -> dict:
    """Top-1 of a linear classifier on the frozen student's features of `dataset`; the result
    is written to <run>/transfer_<dataset>.json."""
    check_whole("epochs", epochs, 1)  # 0 would report chance
    run = Run(Path(run_path))
    if not run.config_path.is_file():  # a mistyped path, or the folder around the runs
        raise ValueError(
            f"{run.path} is not a run folder (it has no config.json); give one of those that "
            "`python -m egalib status --runs-dir FOLDER` lists."
        )
    if not run.finished:
        raise ValueError(f"{run.path} is not a finished run folder; finish training it first.")
    data = load_dataset(dataset).to(resolve_device(device))
    encoder = frozen_student(run)
    top1 = 100 * linear_probe_accuracy(encoder, data, epochs=epochs)
    result = {
        "run": run.path.name,
        "dataset": dataset,
        "protocol": "transfer (CRD)",
        "epochs": epochs,
        "top1": round(top1, 2),
    }
    atomic_write_text(run.path / f"transfer_{dataset}.json", json.dumps(result, indent=2) + "\n")
    return result
