"""Losses (method.md component 11, Eq. 11) and the ResMixMatch pieces (component 15, Algorithm 1).

Focal loss as the paper writes it: each class's sum is divided by that class's own token count
(the research code takes a plain mean over all tokens, which lets the many normal tokens drown the
few anomalous ones; we follow the paper).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.labels import BLOCK_ANOMALOUS, BLOCK_NORMAL


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25,
               gamma: float = 4.0, valid: torch.Tensor | None = None,
               norm: str = "class") -> torch.Tensor:
    """Eq. 11 over tokens.

    ``logits``: (..., 2); ``labels``: (...) int with 1 = anomalous, 0 = normal, anything else
    ignored; ``valid``: optional bool (...) mask of tokens that may carry loss (PCR dropout).
    ``norm``: "class" divides each class's sum by its own token count (Eq. 11); "mean" divides
    both sums by the count of all labelled tokens (the research code). Returns a scalar; a class
    with no tokens contributes 0.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    log_p_pos, log_p_neg = logp[..., 1], logp[..., 0]
    p_pos = log_p_pos.exp()
    pos = labels == BLOCK_ANOMALOUS
    neg = labels == BLOCK_NORMAL
    if valid is not None:
        pos, neg = pos & valid, neg & valid
    loss = logits.new_zeros((), dtype=torch.float32)
    both = (neg.sum() + pos.sum()).clamp_min(1)
    if neg.any():
        loss = loss - ((1 - alpha) * p_pos[neg] ** gamma * log_p_neg[neg]).sum() / (
            neg.sum() if norm == "class" else both)
    if pos.any():
        loss = loss - (alpha * (1 - p_pos[pos]) ** gamma * log_p_pos[pos]).sum() / (
            pos.sum() if norm == "class" else both)
    return loss


def soft_focal_terms(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-token focal term of Algorithm 1 step 9 for soft targets y* in [0, 1], written as a
    soft-target focal cross-entropy over the two classes (the research code's
    ``focal_loss_mixmatch``):

        term = y* (1 - y)^gamma log(y) + (1 - y*) y^gamma log(1 - y),

    where y is the predicted anomaly probability. For hard targets (0 or 1) this equals the
    paper's ``(1 - p)^gamma log(p)`` with ``p = (1 - y*)(1 - y) + y* y``. For soft targets the
    paper's literal form is linear in y, so it drives y to 0 or 1 by the sign of y* - 0.5, i.e.
    it turns every mixed pseudo-label into a hard one; with an under-confident first-stage model,
    MixUp with mostly normal partners drags box targets just under 0.5 and the guesses collapse
    to "normal" (docs/decisions/0012-resmixmatch-soft-targets.md). This form is minimised near
    y = y*, as MixMatch's loss on guessed labels is. The class weight (alpha or 1 - alpha) is
    applied by the caller.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    log_q, log_1mq = logp[..., 1], logp[..., 0]
    q = log_q.exp()
    return target * (1 - q).pow(gamma) * log_q + (1 - target) * q.pow(gamma) * log_1mq


def mixmatch_focal(logits: torch.Tensor, target: torch.Tensor, hard_pos: torch.Tensor,
                   alpha: float, gamma: float, select: torch.Tensor) -> torch.Tensor:
    """L_x or L_u of Algorithm 1 step 9 over the tokens in ``select``.

    ``hard_pos`` marks Z^+ (mixed target > 0.5): weighted alpha; the rest of ``select`` is Z^-,
    weighted 1 - alpha. Normalised by |Z^+ u Z^-| as the algorithm writes it.
    """
    n = select.sum()
    if n == 0:
        return logits.new_zeros((), dtype=torch.float32)
    terms = soft_focal_terms(logits, target, gamma)
    w = torch.where(hard_pos, torch.full_like(terms, alpha), torch.full_like(terms, 1 - alpha))
    return -(w * terms)[select].sum() / n


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """MixMatch sharpening of a binary probability: p^(1/T) / (p^(1/T) + (1-p)^(1/T))."""
    a = p.clamp(0, 1).pow(1.0 / temperature)
    b = (1 - p).clamp(0, 1).pow(1.0 / temperature)
    return a / (a + b).clamp_min(1e-12)


def rampup(step: int, rampup_steps: int, maximum: float) -> float:
    """lambda_u: linear from 0 to ``maximum`` over ``rampup_steps`` steps, then held (clamped)."""
    if rampup_steps <= 0:
        return maximum
    return maximum * min(1.0, max(0.0, step / rampup_steps))
