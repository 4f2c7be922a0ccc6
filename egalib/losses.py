"""Distillation losses as pure functions: student first, teacher second, a 0-d tensor out; CRD,
with its memory bank, the one module. Inputs' shapes are checked first (`egalib.check`)."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import check
from .graph import embedding_graphs, max_scaled, unit_rows


def ega_terms(xs: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
    """(L_node, L_edge): ||N_st - I||_F and ||E_t - E_s||_F, Frobenius norms, not squared."""
    check.pair("ega", xs, xt, min_batch=2, same_shape=True)
    g, norm = embedding_graphs(xs, xt), torch.linalg.matrix_norm
    identity = torch.eye(len(xs), dtype=g.node.dtype, device=g.node.device)
    return norm(g.node - identity), norm(g.teacher - g.student)


def ega_with_terms(
    fs: Tensor, ft: Tensor, node_weight: float = 0.8, edge_weight: float = 0.24
) -> dict[str, Tensor]:
    """{"ega": node_weight * L_node + edge_weight * L_edge, "node": L_node, "edge": L_edge}."""
    check.options("ega", node_weight=node_weight, edge_weight=edge_weight)
    node, edge = ega_terms(fs, ft)
    return {"ega": node_weight * node + edge_weight * edge, "node": node, "edge": edge}


def ega(fs: Tensor, ft: Tensor, node_weight: float = 0.8, edge_weight: float = 0.24) -> Tensor:
    """Embedding Graph Alignment: node_weight * L_node + edge_weight * L_edge.

    `fs`, `ft` are the student's and teacher's node embeddings (B x D, same D). The defaults are
    the authors' code; the paper's L_node + lambda * L_edge has lambda = 0.24 / 0.8 = 0.3.
    """
    return ega_with_terms(fs, ft, node_weight, edge_weight)["ega"]


def kd(logits_s: Tensor, logits_t: Tensor, T: float = 4.0) -> Tensor:
    """Hinton's KD: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch."""
    check.pair("kd", logits_s, logits_t, T=T)
    check.logits("kd", logits_s, logits_t, len(logits_s))
    log_p_s = F.log_softmax(logits_s / T, dim=1)
    log_p_t = F.log_softmax(logits_t / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * T * T


def _safe_divide(x: Tensor, scale: Tensor) -> Tensor:
    """x / scale, the scale floored at the dtype's smallest normal number: 0 / 0 gives 0."""
    return x / scale.clamp_min(torch.finfo(x.dtype).tiny)


def _cosines(a: Tensor, b: Tensor) -> Tensor:
    """Cosine of every row of `a` with every row of `b`; a zero row has cosine 0 with all."""
    return unit_rows(a) @ unit_rows(b).T


def _differences(x: Tensor) -> Tensor:
    """(B, B, D) tensor whose entry [i, j] is x_j - x_i."""
    return x.unsqueeze(0) - x.unsqueeze(1)


def _distances(x: Tensor) -> Tensor:
    """B x B Euclidean distances ||x_i - x_j||; where a distance is 0 its gradient is 0, not NaN."""
    return torch.linalg.vector_norm(_differences(x), dim=-1)


def fitnet(fs: Tensor, ft: Tensor) -> Tensor:
    """FitNets' hint loss: mean over all B x D entries of (fs - ft)^2."""
    check.pair("fitnet", fs, ft, same_shape=True)
    return F.mse_loss(fs, ft)


def _cosine_probabilities(x: Tensor) -> Tensor:
    """PKT's row probabilities: P_ij = k_ij / sum_m k_im, k_ij = (cos(x_i, x_j) + 1) / 2."""
    k = (_cosines(x, x) + 1) / 2
    return k / k.sum(dim=1, keepdim=True)


def sp(fs: Tensor, ft: Tensor) -> Tensor:
    """Similarity-Preserving KD (Tung & Mori, ICCV 2019): ||G^t - G^s||_F^2 / B^2, where
    G = x x^T (B x B) with each row divided by its L2 norm (a zero row stays 0). Widths may
    differ; unchanged when a side is scaled. EGA's edge term is its closest kin: Pearson graphs
    under an unsquared norm."""
    check.pair("sp", fs, ft, min_batch=2)
    return (_row_normalised_gram(ft) - _row_normalised_gram(fs)).pow(2).sum() / len(fs) ** 2


def _row_normalised_gram(x: Tensor) -> Tensor:
    """x x^T with unit rows; x is max-scaled first (the same rows after the norm, no overflow)."""
    x = max_scaled(x)
    return unit_rows(x @ x.T)


def pkt(fs: Tensor, ft: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018).

    With P^s and P^t the B x B matrices of `_cosine_probabilities`,
    loss = mean over all i, j of P^t_ij * log((P^t_ij + eps) / (P^s_ij + eps)); 0 when fs == ft.
    The two embeddings may have different widths.
    """
    check.pair("pkt", fs, ft, min_batch=2, eps=eps)
    p_s, p_t = _cosine_probabilities(fs), _cosine_probabilities(ft)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def _scaled_distances(x: Tensor, by: str) -> Tensor:
    """Distances divided by the mean of the positive ones (`by` "mean") or by their maximum
    ("max"); all 0 if every sample is the same."""
    d = _distances(max_scaled(x))
    return _safe_divide(d, d.sum() / (d > 0).sum().clamp_min(1) if by == "mean" else d.amax())


def _angle_cosines(x: Tensor) -> Tensor:
    """(B, B, B) tensor: [i, j, k] is e_ij . e_ik, e_ij the unit vector from x_i to x_j (0 if
    x_j = x_i), the cosine of the angle at x_i in (x_i, x_j, x_k); max-scaled: nothing overflows."""
    e = unit_rows(_differences(max_scaled(x)))
    return e @ e.transpose(1, 2)


def rkd(
    fs: Tensor, ft: Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0
) -> Tensor:
    """Relational Knowledge Distillation (Park et al., CVPR 2019).

    distance = smoothL1(d^s / mu^s, d^t / mu^t) over the B x B distance matrices d, mu the mean
    of the positive (off-diagonal, distinct-sample) distances; angle = smoothL1 over all B^3
    angle cosines e_ij . e_ik (see `_angle_cosines`); smoothL1 has beta 1 and averages entries.
    loss = distance_weight * distance + angle_weight * angle. Unchanged when both embeddings are
    scaled; widths may differ. Gradients reach the teacher too unless the caller detaches it.
    """
    weights = dict(distance_weight=distance_weight, angle_weight=angle_weight)
    check.pair("rkd", fs, ft, min_batch=2, **weights)
    distance = F.smooth_l1_loss(_scaled_distances(fs, "mean"), _scaled_distances(ft, "mean"))
    angle = F.smooth_l1_loss(_angle_cosines(fs), _angle_cosines(ft))
    return distance_weight * distance + angle_weight * angle


def nce(fs: Tensor, ft: Tensor, target: Tensor, tau: float = 0.1) -> Tensor:
    """CCL's class-aware contrastive term (Chen et al., CVPR 2021).

    p_ij = softmax over j of cos(s_i, t_j) / tau. Row i costs the mean of -log p_ij over the j
    with target_j == target_i (i included) plus the mean of -log(1 - p_ij) over the other j (0 if
    there is none); the loss is the mean over rows. 1 - p of a row's largest p is the sum of
    the row's other p, not 1 minus a number near 1 (float32 would round it to 0 and lose the
    gradient); it is floored at the dtype's smallest normal number, so the loss stays finite.
    """
    check.pair("nce", fs, ft, min_batch=2, same_shape=True, tau=tau)
    check.rows("nce", "target", target, fs.shape[0], dims=1)
    logits = _cosines(fs, ft) / tau
    same = (target[:, None] == target[None, :]).to(logits.dtype)
    other = 1 - same
    log_p = logits.log_softmax(dim=1)
    not_top = log_p.argmax(dim=1, keepdim=True) != torch.arange(len(fs), device=fs.device)
    p = log_p.exp() * not_top  # each p below 1/2: log1p(-p) is exact; the largest set aside
    top_not_p = p.sum(dim=1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    log_not_p = torch.where(not_top, torch.log1p(-p), top_not_p.log())
    pull = -(same * log_p).sum(dim=1) / same.sum(dim=1)
    push = -(other * log_not_p).sum(dim=1) / other.sum(dim=1).clamp_min(1)
    return (pull + push).mean()


def ccl(
    fs: Tensor, ft: Tensor, target: Tensor, logits_s: Tensor, logits_t: Tensor, tau=0.1, T=1.0
) -> Tensor:
    """CCL: nce(fs, ft, target, tau) + 0.5 * (KL(p_t || p_s) + KL(p_s || p_t)).

    p = softmax(logits / T), each KL averaged over the batch (`kd` divided by T^2).
    """
    check.pair("ccl", fs, ft, min_batch=2, same_shape=True, tau=tau, T=T)
    check.logits("ccl", logits_s, logits_t, fs.shape[0])
    symmetric_kl = (kd(logits_s, logits_t, T) + kd(logits_t, logits_s, T)) / (2 * T * T)
    return nce(fs, ft, target, tau) + symmetric_kl


def irg(
    fs: Tensor, ft: Tensor, logits_s: Tensor, logits_t: Tensor, vertex_weight=1.0, edge_weight=1.0
) -> Tensor:
    """Instance Relation Graph (Liu et al., CVPR 2019), egalib's variant (EGA's code has no IRG).

        loss = vertex_weight * mean_{i,c} (z^s_ic - z^t_ic)^2
             + edge_weight   * mean_{i,j} (d^s_ij / max(d^s) - d^t_ij / max(d^t))^2

    z the logits (B x C), d^s_ij = ||fs_i - fs_j||_2 and d^t_ij = ||ft_i - ft_j||_2 (B x B,
    Euclidean, not squared); a batch of identical samples has d / max(d) = 0. The paper's
    transformation term and its multi-layer graphs are left out; embedding widths may differ.
    """
    check.pair("irg", fs, ft, min_batch=2, vertex_weight=vertex_weight, edge_weight=edge_weight)
    check.logits("irg", logits_s, logits_t, fs.shape[0])
    vertex = F.mse_loss(logits_s, logits_t)
    edge = F.mse_loss(_scaled_distances(fs, "max"), _scaled_distances(ft, "max"))
    return vertex_weight * vertex + edge_weight * edge


class CRD(nn.Module):
    """Contrastive Representation Distillation (Tian et al., ICLR 2020) with its memory bank.

    Each side is embedded by a linear layer to `embed_dim` and L2-normalised: s_i, t_i. Two
    memory banks hold one embedding per training sample (N = len(labels)): `memory_s`
    (student's) and `memory_t` (teacher's). For anchor i, slot 0 is i itself and slots 1..K are
    negatives drawn uniformly, with replacement, among the training samples of other classes.
    With P_ik = exp(anchor . memory_k / tau) / Z (Z = N * mean of the first batch's exp terms,
    one per anchor side, stored in the buffer `z`), noise c = K / N and eps = 1e-7, one side's
    loss is

        -(1 / B) * sum_i [ log(P_i0 / (P_i0 + c + eps)) + sum_{k>=1} log(c / (P_ik + c + eps)) ]

    The student anchor s_i is scored against `memory_t`, the teacher anchor t_i against
    `memory_s`; the forward returns the sum of both sides. Afterwards, without gradient, only the
    slots at `index` move: m <- normalise(momentum * m + (1 - momentum) * new embedding).

    K = min(num_negatives, N - size of the largest class). The banks start uniform in
    (-stdv, stdv), stdv = 1 / sqrt(embed_dim / 3), so that each row's expected squared norm is 1.
    Banks and `z` are buffers, saved in the state_dict; the label bookkeeping is rebuilt from
    `labels`. `check_index` reads the index's range on the host at every call; turn it off where
    the caller guarantees the range and a host read is costly (a GPU waits for it).
    Memory: 2 x embed_dim float32 and 16 B of int64 bookkeeping per training sample.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        labels: Tensor,
        embed_dim=128,
        num_negatives=16384,
        tau=0.07,
        momentum=0.5,
        check_index=True,
    ):
        super().__init__()
        if labels.dim() != 1 or labels.is_floating_point():
            raise ValueError(
                f"CRD expects labels as a 1-d integer tensor with one class per training sample, "
                f"got dtype {labels.dtype} and shape {tuple(labels.shape)}; pass the training "
                f"set's targets, e.g. torch.as_tensor(dataset.targets)."
            )
        _, sample_class, class_count = torch.unique(labels, return_inverse=True, return_counts=True)
        if len(class_count) < 2:
            raise ValueError(
                f"CRD draws its negatives from other classes, but the {len(labels)} labels hold "
                f"{len(class_count)} class; pass the labels of a training set with two or more."
            )
        check.options(
            "CRD", tau=tau, momentum=momentum, embed_dim=embed_dim, num_negatives=num_negatives
        )
        self.embed_s = nn.Linear(student_dim, embed_dim)
        self.embed_t = nn.Linear(teacher_dim, embed_dim)
        self.tau, self.momentum = tau, momentum
        self.num_negatives = min(num_negatives, len(labels) - int(class_count.max()))
        stdv = 1.0 / math.sqrt(embed_dim / 3)
        self.register_buffer("memory_s", torch.empty(len(labels), embed_dim).uniform_(-stdv, stdv))
        self.register_buffer("memory_t", torch.empty(len(labels), embed_dim).uniform_(-stdv, stdv))
        self.register_buffer("z", torch.full((2,), -1.0))  # -1: not estimated yet
        self.register_buffer("sample_class", sample_class, persistent=False)
        self.register_buffer("class_count", class_count, persistent=False)
        self.register_buffer("class_start", class_count.cumsum(0) - class_count, persistent=False)
        self.register_buffer("by_class", torch.argsort(sample_class, stable=True), persistent=False)
        self.check_index = check_index

    def embed(self, fs: Tensor, ft: Tensor) -> tuple[Tensor, Tensor]:
        """The L2-normalised embeddings (s, t) of student and teacher features."""
        return unit_rows(self.embed_s(fs)), unit_rows(self.embed_t(ft))

    def sample_negatives(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, K) training-sample positions, each row drawn uniformly with replacement among the
        samples whose class differs from that of the sample at `index`."""
        count = self.class_count[self.sample_class[index]].unsqueeze(1)
        start = self.class_start[self.sample_class[index]].unsqueeze(1)
        # Position u among the N - count samples of other classes, in class order: skip the block
        # [start, start + count) of the anchor's own class.
        size = (len(index), self.num_negatives)
        u = torch.randint(2**62, size, generator=generator, device=index.device)
        u = u % (len(self.sample_class) - count)
        return self.by_class[u + count * (u >= start)]

    def forward(
        self,
        fs: Tensor,
        ft: Tensor,
        index: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """CRD loss for features fs (B x student_dim) and ft (B x teacher_dim) of the training
        samples at positions `index` (B,); then updates those samples' memory slots."""
        check.crd_inputs(self, fs, ft, index)
        s, t = self.embed(fs, ft)
        slots = torch.cat([index.unsqueeze(1), self.sample_negatives(index, generator)], dim=1)
        # anchor . memory_k for every bank row, then the K + 1 slots picked out: one (B, N) matmul
        # in place of gathering B x (K + 1) rows of D values. The banks are copied because
        # backward needs them as they were before `_update`.
        student_anchor = (s @ self.memory_t.clone().T).gather(1, slots)
        teacher_anchor = (t @ self.memory_s.clone().T).gather(1, slots)
        # in float32 at least: under float16 autocast e^(1 / tau) = 1.6e6 would overflow 65,504
        dots = torch.stack([student_anchor, teacher_anchor])  # (2, B, K + 1)
        dots = dots.to(torch.promote_types(dots.dtype, torch.float32)) / self.tau
        estimate = dots.detach().exp().mean(dim=(1, 2)) * len(self.sample_class)
        self.z.copy_(torch.where(self.z > 0, self.z, estimate.to(self.z.dtype)))
        log_p = dots - self.z.log().view(2, 1, 1)
        noise = self.num_negatives / len(self.sample_class)
        log_positive = log_p[..., 0] - torch.log(log_p[..., 0].exp() + noise + 1e-7)
        log_negative = math.log(noise) - torch.log(log_p[..., 1:].exp() + noise + 1e-7)
        loss = -(log_positive.sum() + log_negative.sum()) / len(index)
        self._update(self.memory_s, index, s)
        self._update(self.memory_t, index, t)
        return loss

    @torch.no_grad()
    def _update(self, bank: Tensor, index: Tensor, new: Tensor) -> None:
        mixed = self.momentum * bank[index] + (1 - self.momentum) * new.to(bank.dtype)
        bank.index_copy_(0, index, F.normalize(mixed, dim=1))
