"""The teacher table: the frozen teacher's features of training views, computed once, looked up.

A frozen teacher sees a training image in one of `views_per_image(padding)` ways (162 at
padding 4): a crop offset and a flip. Its features of those views can therefore be computed once
per (teacher, training images, padding) and looked up by (image, view) in every run that uses
them: every method, protocol and seed gets the numbers the teacher would have computed in the
step, to float rounding (the table is encoded in larger batches).

A table holds every view of every image, or only the views that the runs at hand will draw (a run
of a few epochs draws a few of each image's 162): then its sorted keys are searched, and a view
it lacks is an error. It is a raw file of features, `<name>.bin`, memory-mapped when read, with
its card `<name>.json`, in `$EGALIB_CACHE/tables`; one process builds it under a lock while any
other that needs it waits, then reads it.
"""

import datetime
import errno
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import __version__, files
from .models.teachers import cache_dir
from .streams import epoch_batches, random_streams
from .views import ENCODE_CHUNK, draw_views, view_ids, views_of, views_per_image

if TYPE_CHECKING:
    from .config import RunConfig
    from .teacher_features import EncodedFeatures

# what a table's card must match: a changed teacher, its weights or the images build another
CHECKED = ("teacher", "weights", "dataset", "images", "padding", "views", "dtype", "egalib")


class TableError(ValueError):
    """A teacher table that does not fit the run; the message says why and what to do."""


class TeacherTable:
    """Features (K, D) of the views numbered `keys` (image * views_per_image + view, sorted;
    None: every view of every image, in that order)."""

    def __init__(self, features: torch.Tensor, keys: torch.Tensor | None, padding: int):
        self.features, self.keys, self.padding = features, keys, padding

    def lookup(self, index: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Float32 features of image `index[i]` seen as `views[i]`, on `index`'s device."""
        wanted = view_keys(index, views, self.padding)
        rows = wanted.to(self.features.device)
        if self.keys is not None:
            rows = torch.searchsorted(self.keys, rows).clamp_(max=len(self.keys) - 1)
            if not torch.equal(self.keys[rows], wanted.to(self.keys.device)):
                raise TableError(
                    "the run drew a view that its teacher table lacks (the table was made for "
                    "other epochs or another seed); delete the table to have it rebuilt."
                )
        return self.features[rows].to(index.device, torch.float32)

    def to(self, device: torch.device) -> "TeacherTable":
        """Held on `device` when it fits in half its free memory, else read from the host."""
        if device.type != "cuda":
            return self
        size, free = self.features.nbytes, torch.cuda.mem_get_info(device)[0]
        if size > free / 2:
            print(
                f"the teacher table ({size / 1e9:.1f} GB) does not fit in half of the GPU's "
                f"free memory ({free / 1e9:.1f} GB); it is read from host memory, which is "
                "slower (--no-teacher-table runs the teacher instead).",
                flush=True,
            )
            return self
        keys = None if self.keys is None else self.keys.to(device)
        return TeacherTable(self.features.to(device), keys, self.padding)


def view_keys(index: torch.Tensor, views: torch.Tensor, padding: int) -> torch.Tensor:
    """The table key of image `index[i]` seen as `views[i]`: image x views per image + view."""
    return index * views_per_image(padding) + view_ids(views, padding)


def planned_keys(config: "RunConfig", n: int, device: torch.device) -> torch.Tensor:
    """The keys of every teacher view that a run of `config` on `n` training images draws, in
    drawing order with repeats: its "order" and "teacher_view" streams replayed on its device,
    which no other use of random numbers moves."""
    streams, drawn = random_streams(config.seed, device), []
    for _ in range(config.epochs):
        for index in epoch_batches(n, config.batch_size, streams["order"]):
            views = draw_views(len(index), config.padding, streams["teacher_view"], device)
            drawn.append(view_keys(index, views, config.padding))
    return torch.cat(drawn)


@dataclass(frozen=True)
class TableSpec:
    """What a table is of: the teacher, the training images and their padding, and its views."""

    teacher: str
    dataset: str
    images: torch.Tensor
    padding: int
    keys: torch.Tensor | None  # the views' keys; None: every view of every image


def table_card(spec: TableSpec, dtype: torch.dtype, weights: str) -> dict:
    """The fields in CHECKED, which a table read must match; `weights`: the teacher's digest."""
    keys = spec.keys
    views = "all" if keys is None else f"{len(keys)} keys {files.tensor_digest(keys)}"
    return {
        "teacher": spec.teacher,
        "weights": weights,
        "dataset": spec.dataset,
        "images": files.tensor_digest(spec.images),
        "padding": spec.padding,
        "views": views,
        "dtype": str(dtype).removeprefix("torch."),
        "egalib": __version__,
    }


def table_path(card: dict) -> Path:
    """$EGALIB_CACHE/tables/<teacher>_<dataset>_p<padding>_<images>_<views>.bin"""
    views = "all" if card["views"] == "all" else card["views"].split()[-1]
    teacher = f"{card['teacher']}-{card['weights'][:8]}"
    name = f"{teacher}_{card['dataset']}_p{card['padding']}_{card['images']}_{views}"
    return cache_dir("tables") / f"{name}.bin"


def table_shape(encoder: "EncodedFeatures", spec: TableSpec) -> tuple[int, int]:
    """(rows, dim): a row for each of the spec's keys, or for every view of every image."""
    rows = len(spec.images) * views_per_image(spec.padding) if spec.keys is None else len(spec.keys)
    return rows, encoder.teacher.feature_dim


def build(encoder: "EncodedFeatures", card: dict, spec: TableSpec, path: Path) -> None:
    """Encode every view of the spec (its keys, or all) and write the features, then the card."""
    images = spec.images
    began, dtype = time.time(), encoder.table_dtype(images.device)
    rows, dim = table_shape(encoder, spec)
    keys = torch.arange(rows) if spec.keys is None else spec.keys
    size = len(keys) * dim * dtype.itemsize
    print(
        f"building the teacher table {path.name}: {len(keys):,} views x {dim} features in "
        f"{card['dtype']}, {size / 1e6:,.0f} MB",
        flush=True,
    )
    checksum = hashlib.blake2b()  # of the bytes as they are written: the file is not read back

    def chunks():
        for chunk in keys.to(images.device).split(ENCODE_CHUNK):
            image, views = (
                chunk // views_per_image(spec.padding),
                chunk % views_per_image(spec.padding),
            )
            features = encoder.of_views(images[image], views_of(views, spec.padding))
            data = features.to(dtype).cpu().contiguous().view(torch.uint8).numpy().tobytes()
            checksum.update(data)
            yield data

    files.atomic_write(path, chunks())
    made = {
        "shape": [len(keys), dim],
        "checksum": checksum.hexdigest()[:16],
        "commit": files.git_commit(),
        "device": files.device_name(images.device),
        "wall_s": round(time.time() - began, 1),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    files.atomic_write_text(path.with_suffix(".json"), json.dumps({**card, **made}, indent=2))


def file_checksum(path: Path) -> str:
    """blake2b of a file, read in 16 MiB pieces (a table may not fit in memory)."""
    checksum = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            checksum.update(chunk)
    return checksum.hexdigest()[:16]


def read(path: Path, card: dict, dtype: torch.dtype, keys, shape: tuple[int, int]) -> TeacherTable:
    """The table at `path`, memory-mapped, after its card is checked against `card` and the
    (rows, dim) `shape` the run needs: its fields, the file's size and its checksum. Its rows
    are those of `keys`, the run's own: the card's views (their count and digest) must match."""
    fix = f"delete {path} and its card {path.with_suffix('.json').name} to have it rebuilt."
    found = files.read_json(path.with_suffix(".json"), fix)
    fields = found if isinstance(found, dict) else {}
    missing = [k for k in (*CHECKED, "shape", "checksum") if k not in fields]
    if missing:
        raise TableError(f"the card of teacher table {path} lacks {', '.join(missing)}; {fix}")
    for key in CHECKED:
        if found[key] != card[key]:
            raise TableError(
                f"teacher table {path} was built for {key} {found[key]!r}, but this run "
                f"needs {card[key]!r}; delete it and its card to have the right one built."
            )
    given = found["shape"]
    if not (isinstance(given, list) and len(given) == 2 and all(type(v) is int for v in given)):
        raise TableError(f"the card of teacher table {path} gives no (rows, dim) shape; {fix}")
    if tuple(given) != shape:
        raise TableError(
            f"the card of teacher table {path} gives the shape {given}, where this run "
            f"needs {list(shape)}; {fix}"
        )
    rows, dim = shape
    if not path.is_file() or path.stat().st_size != rows * dim * dtype.itemsize:
        raise TableError(f"teacher table {path} is missing or not the size its card gives; {fix}")
    if file_checksum(path) != found["checksum"]:
        raise TableError(f"teacher table {path} does not match its card's checksum; {fix}")
    features = torch.from_file(str(path), shared=False, size=rows * dim, dtype=dtype)
    return TeacherTable(features.view(rows, dim), keys, card["padding"])


def open_table(encoder: "EncodedFeatures", spec: TableSpec) -> TeacherTable:
    """The teacher table of `spec`, built first if it is not in the cache yet (its file or its
    card missing), on CUDA in the teacher's 16-bit dtype (its features are computed in it),
    else float32. A valid table in a cache that cannot be written is read without a lock."""
    if spec.keys is not None:  # sorted, for lookups to search them
        spec = replace(spec, keys=spec.keys.unique().cpu())
    dtype = encoder.table_dtype(spec.images.device)
    card = table_card(spec, dtype, encoder.weights)
    path = table_path(card)
    try:
        with files.exclusive(path.with_suffix(".lock"), wait=True):  # one builds, others wait
            if not (path.is_file() and path.with_suffix(".json").is_file()):
                for left in path.parent.glob(f".{path.name}.*.tmp"):  # by a killed build
                    left.unlink()
                build(encoder, card, spec, path)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        if not path.with_suffix(".json").is_file():
            raise TableError(
                f"the teacher table {path.name} is not in {path.parent}, which cannot be "
                "written; make it writable or set EGALIB_CACHE to a folder that is."
            ) from None
    return read(path, card, dtype, spec.keys, table_shape(encoder, spec)).to(spec.images.device)
