"""The method table: each method's distillation term and its default loss weights.

The training loss is  gamma * CE + alpha * KD + beta * distill,  where `distill` is the method's
own term. Every distill function takes a `DistillInputs` and the method's options and returns
(loss, terms to log). Weights and options are the defaults of METHOD.md; a RunConfig overrides
any of them. A method with state of its own (CRD's memory bank) names a `module` factory: it is
built once per run from (embedding size, training labels, options), trained with the student,
saved in checkpoints, and handed to `distill` as `inputs.module`.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from . import losses


@dataclass
class DistillInputs:
    """What a distillation term may look at: embeddings, logits, labels, dataset indices."""

    xs: torch.Tensor  # student embeddings (B, D)
    xt: torch.Tensor  # teacher embeddings (B, D), no gradient to the teacher
    logits_s: torch.Tensor
    logits_t: torch.Tensor  # no gradient to the teacher
    target: torch.Tensor
    index: torch.Tensor  # position of each sample in the training set
    module: nn.Module | None = None  # the method's own module, if it has one
    generator: torch.Generator | None = None  # for any sampling the method does


Terms = tuple[torch.Tensor, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Method:
    distill: Callable[..., Terms] | None = None
    gamma: float = 1.0  # cross-entropy
    alpha: float = 0.0  # KD on the teacher head's logits
    beta: float = 0.0  # the method's distillation term
    options: dict = field(default_factory=dict)  # keyword arguments of `distill` (or `module`)
    module: Callable[..., nn.Module] | None = None  # (D, train_labels, **options)

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0 or self.distill is not None


def ega_distill(inputs: DistillInputs, node_weight: float, edge_weight: float) -> Terms:
    """EGA; both terms are logged even when one of them has weight 0 (ega-node, ega-edge)."""
    node, edge = losses.ega_terms(inputs.xs, inputs.xt)
    return node_weight * node + edge_weight * edge, {"node": node, "edge": edge}


def fitnet_distill(inputs: DistillInputs) -> Terms:
    return losses.fitnet(inputs.xs, inputs.xt), {}


def pkt_distill(inputs: DistillInputs) -> Terms:
    return losses.pkt(inputs.xs, inputs.xt), {}


def rkd_distill(inputs: DistillInputs, distance_weight: float, angle_weight: float) -> Terms:
    return losses.rkd(inputs.xs, inputs.xt, distance_weight, angle_weight), {}


def nce_distill(inputs: DistillInputs, tau: float) -> Terms:
    return losses.nce(inputs.xs, inputs.xt, inputs.target, tau), {}


def irg_distill(inputs: DistillInputs, vertex_weight: float, edge_weight: float) -> Terms:
    loss = losses.irg(inputs.xs, inputs.xt, inputs.logits_s, inputs.logits_t,
                      vertex_weight, edge_weight)  # fmt: skip
    return loss, {}


def ccl_distill(inputs: DistillInputs, tau: float, T: float) -> Terms:
    loss = losses.ccl(inputs.xs, inputs.xt, inputs.target, inputs.logits_s, inputs.logits_t,
                      tau, T)  # fmt: skip
    return loss, {}


def crd_module(feature_dim: int, labels: torch.Tensor, **options) -> losses.CRD:
    """CRD on the D-d node embeddings of both sides (its own 128-d embedding on top)."""
    return losses.CRD(feature_dim, feature_dim, labels, **options)


def crd_distill(inputs: DistillInputs) -> Terms:
    return inputs.module(inputs.xs, inputs.xt, inputs.index, inputs.generator), {}


EGA_OPTIONS = {"node_weight": 0.8, "edge_weight": 0.24}
CRD_OPTIONS = {"embed_dim": 128, "num_negatives": 16384, "tau": 0.07, "momentum": 0.5}

METHODS: dict[str, Method] = {
    "vanilla": Method(),
    "kd": Method(gamma=0.1, alpha=0.9),
    "fitnet": Method(fitnet_distill, beta=100.0),
    "pkt": Method(pkt_distill, beta=30000.0),
    "rkd": Method(rkd_distill, beta=1.0, options={"distance_weight": 25.0, "angle_weight": 50.0}),
    "nce": Method(nce_distill, beta=1.0, options={"tau": 0.1}),
    "irg": Method(irg_distill, beta=1.0, options={"vertex_weight": 1.0, "edge_weight": 1.0}),
    "crd": Method(crd_distill, beta=0.8, options=CRD_OPTIONS, module=crd_module),
    "ccl": Method(ccl_distill, beta=1.0, options={"tau": 0.1, "T": 1.0}),
    "ega": Method(ega_distill, beta=1.0, options=EGA_OPTIONS),
    "ega+kd": Method(ega_distill, beta=1.0, alpha=1.0, options=EGA_OPTIONS),
    "ega-node": Method(ega_distill, beta=1.0, options={**EGA_OPTIONS, "edge_weight": 0.0}),
    "ega-edge": Method(ega_distill, beta=1.0, options={**EGA_OPTIONS, "node_weight": 0.0}),
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}.")
    return METHODS[name]
