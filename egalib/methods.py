"""The method table: each method's distillation term, loss weights and options.

The loss is  gamma * CE + alpha * KD + beta * distill  (`Method.loss_terms`). The term is one
loss of `losses`; its keyword arguments are the method's options, their names, defaults and types
read from its signature (written once, there); an entry states only what differs. A loss may
return a dict of named terms, the first of which is its value (EGA: its node and edge terms are
logged). A loss that is an nn.Module class (CRD) is built once per run from (D, D, training
labels, **options) and trained and saved with the student. Weights: docs/method.md."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import losses


@dataclass
class DistillInputs:
    """What a distillation term may look at: embeddings, logits, labels, dataset indices, and
    the features the two heads take."""

    xs: torch.Tensor  # student embeddings (B, D)
    xt: torch.Tensor  # teacher embeddings (B, D), no gradient to the teacher
    logits_s: torch.Tensor
    logits_t: torch.Tensor  # no gradient to the teacher
    target: torch.Tensor
    index: torch.Tensor  # position of each sample in the training set
    module: nn.Module | None = None  # the method's own module, if its loss is one
    generator: torch.Generator | None = None  # for any sampling the method does
    features_s: torch.Tensor | None = None  # the student backbone's features, before its head
    features_t: torch.Tensor | None = None  # the frozen teacher's features, no gradient


Terms = dict[str, torch.Tensor]
OPTION_TYPES = (int, float)


def signature_options(loss: Callable | None) -> dict[str, tuple[type, object]]:
    """A loss's options: {name: (type, default)} for each argument with a number as default."""
    options = {}
    for name, p in (inspect.signature(loss).parameters if loss else {}).items():
        kind = p.annotation if p.annotation in OPTION_TYPES else type(p.default)
        if p.default is not p.empty and kind in OPTION_TYPES:
            options[name] = (kind, p.default)
    return options


@dataclass(frozen=True)
class Method:
    loss: Callable | None = None  # a function of `losses`, or an nn.Module class such as CRD
    takes: tuple[str, ...] = ("xs", "xt")  # the DistillInputs passed to it, in order
    gamma: float = 1.0  # cross-entropy
    alpha: float = 0.0  # KD on the teacher head's logits
    beta: float = 0.0  # the method's distillation term
    options: dict = field(default_factory=dict)  # values that differ from the loss's defaults

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0 or self.loss is not None

    @property
    def stateful(self) -> bool:
        return isinstance(self.loss, type)

    @property
    def option_types(self) -> dict[str, type]:
        return {k: kind for k, (kind, _) in signature_options(self.loss).items()}

    @property
    def defaults(self) -> dict:
        given = {k: default for k, (_, default) in signature_options(self.loss).items()}
        return {**given, **self.options}

    def build(self, embed_dim: int, labels: torch.Tensor, **settings) -> nn.Module | None:
        """The method's own module (CRD's memory bank) with its options and `settings`, or None."""
        if not self.stateful:
            return None
        return self.loss(embed_dim, embed_dim, labels, **self.defaults, **settings)

    def distill_terms(self, inputs: DistillInputs) -> Terms:
        """{"distill": the term, then any named terms its loss also returns}."""
        args = [getattr(inputs, name) for name in self.takes]
        if self.stateful:  # the module took its options when it was built
            return named_terms(self.loss, inputs.module(*args))
        return named_terms(self.loss, self.loss(*args, **self.defaults))

    def loss_terms(self, inputs: DistillInputs, kd_temperature: float) -> Terms:
        """The student's loss, "loss", and each of its terms before its weight."""
        terms = {"ce": F.cross_entropy(inputs.logits_s, inputs.target)}
        loss = self.gamma * terms["ce"]
        if self.alpha:
            terms["kd"] = losses.kd(inputs.logits_s, inputs.logits_t, kd_temperature)
            loss = loss + self.alpha * terms["kd"]
        if self.loss is not None:
            terms.update(self.distill_terms(inputs))
            loss = loss + self.beta * terms["distill"]
        return {**terms, "loss": loss}


def named_terms(loss: Callable, out) -> Terms:
    """A loss's value, or its dict of named terms (the value first), as {"distill": value, ...},
    each checked to be one float number: a loss of one's own that returns anything else is one
    sentence naming it, not an error deep in backward or in the logging."""
    pairs = list(out.items()) if isinstance(out, dict) else [("distill", out)]
    terms = {"distill": pairs[0][1] if pairs else out, **dict(pairs[1:])}
    for name, term in terms.items():
        if not (isinstance(term, torch.Tensor) and term.ndim == 0 and term.is_floating_point()):
            given = type(term).__name__
            if isinstance(term, torch.Tensor):
                given = f"a {term.dtype} tensor of shape {tuple(term.shape)}"
            raise ValueError(
                f"loss {getattr(loss, '__name__', loss)!r} gave {name} as {given}; a loss returns "
                "one float number as a 0-d tensor (e.g. its .mean()), or a dict of such, its "
                "value first."
            )
    return terms


def ega_family(**given) -> Method:
    return Method(losses.ega_with_terms, beta=1.0, **given)


LOGITS = ("logits_s", "logits_t")
METHODS: dict[str, Method] = {
    "vanilla": Method(),
    "kd": Method(gamma=0.1, alpha=0.9),
    "fitnet": Method(losses.fitnet, beta=100.0),
    "pkt": Method(losses.pkt, beta=30000.0),
    "rkd": Method(losses.rkd, beta=1.0),
    "nce": Method(losses.nce, ("xs", "xt", "target"), beta=1.0),
    "irg": Method(losses.irg, ("xs", "xt", *LOGITS), beta=1.0),
    "sp": Method(losses.sp, beta=3000.0),
    "crd": Method(losses.CRD, ("xs", "xt", "index", "generator"), beta=0.8),
    "ccl": Method(losses.ccl, ("xs", "xt", "target", *LOGITS), beta=1.0),
    "ega": ega_family(),
    "ega+kd": ega_family(alpha=1.0),
    "ega-node": ega_family(options={"edge_weight": 0.0}),
    "ega-edge": ega_family(options={"node_weight": 0.0}),
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}.")
    return METHODS[name]


def cast_options(method: str, given: dict[str, str]) -> dict:
    """Command-line option text cast to each option's type; a wrong type is one sentence."""
    types, cast = get(method).option_types, {}
    for key, text in given.items():
        kind = types.get(key)
        if kind is None:  # RunConfig refuses it, naming the method's options
            cast[key] = text
            continue
        try:
            cast[key] = kind(text)
        except ValueError:
            raise ValueError(
                f"option {key}={text!r} of method {method!r} must be {kind.__name__} "
                f"(its default is {get(method).defaults[key]!r}); give a number of that type."
            ) from None
    return cast
