"""The frozen teacher's features, from one interface with two sources: the encoder run now
(`EncodedFeatures`) or the teacher table computed once (`TableFeatures`). One call gives the
features of a batch's training views, one those of a whole set of un-augmented images. Also the
linear probe that trains a head on those features, and `TeacherMemo`, the teacher's work that
the runs of one command may share."""

import copy
import functools
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import lr_schedule
from .files import tensor_digest
from .models import EmbeddingHead, Teacher
from .teacher_table import TableSpec, TeacherTable, open_table, planned_keys
from .views import ENCODE_CHUNK, apply_views, eval_view, views_per_image


class TeacherMemo:
    """Results that depend only on what they are made of (the teacher's weights, the images, a
    probe's recipe), kept for reuse by the runs of one command: a demo's runs of one seed share
    their probe, and every run its test features. A command makes one and passes it to each
    `fit`; a `fit` without one shares nothing.

    It keeps the newest results whose tensors fit in `max_bytes` together, and always the newest
    one. A bound by count would not do: the demo's workers take the seeds in turn, and each seed
    brings its own training features and probe, so a memo of a few entries would drop each one
    just before it is needed again."""

    def __init__(self, max_bytes: int = 2**30):
        self.max_bytes, self.results = max_bytes, OrderedDict()

    def get(self, key: tuple, make):
        """The result kept under `key`, made by `make()` first if there is none."""
        if key in self.results:
            self.results.move_to_end(key)
            return self.results[key]
        self.results[key] = result = make()
        while len(self.results) > 1 and self.nbytes() > self.max_bytes:
            self.results.popitem(last=False)
        return result

    def nbytes(self) -> int:
        """The bytes of the tensors kept (a result is a tensor or a dict of them)."""
        parts = lambda r: r.values() if isinstance(r, dict) else [r]
        tensors = (t for r in self.results.values() for t in parts(r))
        return sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))


class EncodedFeatures:
    """The teacher's features computed by running it."""

    def __init__(self, teacher: Teacher, padding: int, memo: TeacherMemo | None = None):
        self.teacher, self.padding, self.memo = teacher, padding, memo or TeacherMemo()

    @functools.cached_property
    def weights(self) -> str:
        """The digest of the teacher's weights, made once, when a memo key first needs it."""
        return weights_digest(self.teacher)

    def of_views(self, images: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Float32 features of uint8 training images seen as `views` (crop offsets, flips)."""
        return self.teacher.encode(
            self.teacher.view.finish(apply_views(images, views, self.padding))
        )

    def of_batch(self, images: torch.Tensor, index: torch.Tensor, views: torch.Tensor):
        """The features of the training batch `images` (at `index` of the training set)."""
        return self.of_views(images, views)

    def of_images(self, images: torch.Tensor) -> torch.Tensor:
        """Float32 features of every uint8 image, un-augmented, ENCODE_CHUNK at a time."""
        key = ("images", self.weights, str(images.device), *images.shape, tensor_digest(images))
        return self.memo.get(key, lambda: self.encode_all(images))

    @torch.no_grad()
    def encode_all(self, images: torch.Tensor) -> torch.Tensor:
        """`of_images` without the memo."""
        chunks = images.split(ENCODE_CHUNK)
        return torch.cat([self.teacher.encode(eval_view(c, self.teacher.view)) for c in chunks])

    def table_dtype(self, device: torch.device) -> torch.dtype:
        """A table's dtype: the teacher's 16-bit one on CUDA (it computes in it), else float32."""
        if device.type != "cuda":
            return torch.float32
        return self.teacher.weights_dtype or torch.bfloat16


class TableFeatures(EncodedFeatures):
    """Training views' features looked up in a teacher table; whole sets still encoded."""

    def __init__(self, encoded: EncodedFeatures, table: TeacherTable):
        super().__init__(encoded.teacher, encoded.padding, encoded.memo)
        self.table = table

    def of_batch(self, images: torch.Tensor, index: torch.Tensor, views: torch.Tensor):
        return self.table.lookup(index, views)


def weights_digest(teacher: Teacher) -> str:
    """A digest of the teacher's weights and buffers: what its features depend on."""
    state = teacher.state_dict().values()
    return tensor_digest(torch.cat([t.detach().flatten().float().cpu() for t in state]))


def table_features(encoded: EncodedFeatures, spec: TableSpec) -> TableFeatures:
    return TableFeatures(encoded, open_table(encoded, spec))


def run_table_spec(config, images: torch.Tensor, every_view: bool) -> TableSpec:
    """The table a run of `config` reads: every view of every image when it draws most of them
    (2 epochs per view or more) or `every_view` is asked, else only the views it will draw."""
    every = every_view or 2 * config.epochs >= views_per_image(config.padding)
    keys = None if every else planned_keys(config, len(images), images.device)
    return TableSpec(config.teacher, config.dataset, images, config.padding, keys)


@dataclass(frozen=True)
class ProbeRecipe:
    """SGD (momentum 0.9, weight decay 5e-4, the method's step schedule) of a linear probe."""

    epochs: int
    seed: int = 0
    lr: float = 0.01
    batch_size: int = 64


def train_probe(head: EmbeddingHead, features, labels, recipe: ProbeRecipe) -> EmbeddingHead:
    """A linear probe on frozen features of un-augmented images, computed once: one pass of the
    teacher however many epochs. The head is trained in place and returned in eval mode."""
    generator = torch.Generator(device=features.device).manual_seed(recipe.seed)
    optimizer = torch.optim.SGD(head.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=5e-4)
    schedule = lr_schedule(optimizer, recipe.epochs)
    head.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(labels), device=features.device, generator=generator)
        for batch in order.split(recipe.batch_size):
            loss = F.cross_entropy(head(features[batch])[1], labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
    return head.eval()


def fit_probe(features: EncodedFeatures, head: EmbeddingHead, data, recipe: ProbeRecipe) -> None:
    """The `pretrained` protocol's teacher head: a linear probe on the teacher's features of the
    training images, then frozen. The same features, labels, initial weights and recipe give the
    same head, so the memo keeps it for the runs that share them."""
    x, labels = features.of_images(data.train_images), data.train_labels
    made_of = [tensor_digest(t) for t in (x, labels, *head.state_dict().values())]

    def trained() -> dict:
        train_probe(head.requires_grad_(True), x, labels, recipe)
        return copy.deepcopy(head.state_dict())

    head.load_state_dict(features.memo.get(("probe", *made_of, recipe), trained))
    head.requires_grad_(False)
