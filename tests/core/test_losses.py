"""Focal loss (Eq. 11, per-class normalisation), the ResMixMatch focal terms, sharpening and the
lambda_u ramp-up (method.md components 11 and 15)."""
from __future__ import annotations

import math

import pytest
import torch

from core.data.labels import BLOCK_ANOMALOUS, BLOCK_IGNORE, BLOCK_NORMAL, BLOCK_UNKNOWN
from core.learning.losses import focal_loss, mixmatch_focal, rampup, sharpen, soft_focal_terms

LN3 = math.log(3)
# Logits (0, z) give p+ = softmax(.)[1] = e^z / (1 + e^z):
#   (0, 0) -> p+ = 1/2,  (0, ln 3) -> p+ = 3/4,  (0, -ln 3) -> p+ = 1/4.
HALF, THREE_Q, ONE_Q = [0.0, 0.0], [0.0, LN3], [0.0, -LN3]


def _normal_term(p, alpha=0.25, gamma=4.0):
    """-(1 - alpha) p+^gamma log(1 - p+)"""
    return -(1 - alpha) * p ** gamma * math.log(1 - p)


def _anomalous_term(p, alpha=0.25, gamma=4.0):
    """-alpha (1 - p+)^gamma log(p+)"""
    return -alpha * (1 - p) ** gamma * math.log(p)


def test_focal_single_tokens():
    # One normal token with p+ = 1/2: 0.75 * (1/2)^4 * ln 2 = 0.75 * 0.0625 * 0.693147 = 0.0324913
    loss = focal_loss(torch.tensor([HALF]), torch.tensor([BLOCK_NORMAL]))
    assert loss.item() == pytest.approx(0.0324913, rel=1e-5)
    # One anomalous token with p+ = 1/4: 0.25 * (3/4)^4 * ln 4 = 0.25 * 0.31640625 * 1.386294 = 0.1096582
    loss = focal_loss(torch.tensor([ONE_Q]), torch.tensor([BLOCK_ANOMALOUS]))
    assert loss.item() == pytest.approx(0.1096582, rel=1e-5)


def test_focal_per_class_normalisation():
    # Two normal tokens (p+ = 1/2 and 3/4) and one anomalous (p+ = 3/4):
    #   normal:    (0.0324913 + 0.75 * 0.31640625 * ln 4 = 0.3289742) / 2 = 0.1807327
    #   anomalous:  0.25 * (1/4)^4 * ln(4/3) = 0.25 * 0.00390625 * 0.2876821 = 0.000280940
    #   total 0.1810137 -- each class divided by its own count, not a mean over all 3 tokens.
    logits = torch.tensor([HALF, THREE_Q, THREE_Q])
    labels = torch.tensor([BLOCK_NORMAL, BLOCK_NORMAL, BLOCK_ANOMALOUS])
    expected = (_normal_term(0.5) + _normal_term(0.75)) / 2 + _anomalous_term(0.75)
    assert expected == pytest.approx(0.1810137, rel=1e-6)
    assert focal_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    plain_mean = (_normal_term(0.5) + _normal_term(0.75) + _anomalous_term(0.75)) / 3   # 0.1205822
    assert focal_loss(logits, labels).item() != pytest.approx(plain_mean, rel=1e-2)


def test_focal_plain_mean_as_the_research_code():
    # train.focal_norm = "mean": both sums over the 3 labelled tokens, (0.0324913 + 0.3289742 +
    # 0.000280940) / 3 = 0.1205822; an ignored token counts in neither.
    logits = torch.tensor([HALF, THREE_Q, THREE_Q, HALF])
    labels = torch.tensor([BLOCK_NORMAL, BLOCK_NORMAL, BLOCK_ANOMALOUS, BLOCK_IGNORE])
    loss = focal_loss(logits, labels, norm="mean")
    assert loss.item() == pytest.approx(0.1205822, rel=1e-5)
    assert loss.item() == pytest.approx(
        (_normal_term(0.5) + _normal_term(0.75) + _anomalous_term(0.75)) / 3, rel=1e-5)


def test_focal_any_leading_shape():
    # (B, H, W, 2) and (B, H, W) as the trainer passes them: same tokens as above in a 1 x 2 x 2 map
    # with the fourth token ignored.
    logits = torch.tensor([[[HALF, THREE_Q], [THREE_Q, [5.0, -5.0]]]])
    labels = torch.tensor([[[BLOCK_NORMAL, BLOCK_NORMAL], [BLOCK_ANOMALOUS, BLOCK_IGNORE]]])
    assert focal_loss(logits, labels).item() == pytest.approx(0.1810137, rel=1e-5)


def test_focal_ignored_and_invalid_tokens_excluded():
    base_logits = torch.tensor([HALF, THREE_Q, THREE_Q])
    base_labels = torch.tensor([BLOCK_NORMAL, BLOCK_NORMAL, BLOCK_ANOMALOUS])
    # Add very wrong tokens labelled ignored (-2) and unknown (-1): no change.
    logits = torch.cat([base_logits, torch.tensor([[9.0, -9.0], [-9.0, 9.0]])])
    labels = torch.cat([base_labels, torch.tensor([BLOCK_IGNORE, BLOCK_UNKNOWN])])
    assert focal_loss(logits, labels).item() == pytest.approx(0.1810137, rel=1e-5)
    # valid = False on the p+ = 3/4 normal token: normal mean is that of the p+ = 1/2 token alone.
    valid = torch.tensor([True, False, True, True, True])
    expected = _normal_term(0.5) + _anomalous_term(0.75)       # 0.0324913 + 0.000280940
    assert focal_loss(logits, labels, valid=valid).item() == pytest.approx(expected, rel=1e-5)


def test_focal_empty_class_contributes_zero():
    # Only normal tokens: the anomalous part is 0, not NaN (0/0).
    loss = focal_loss(torch.tensor([HALF, THREE_Q]), torch.tensor([BLOCK_NORMAL, BLOCK_NORMAL]))
    assert loss.item() == pytest.approx((_normal_term(0.5) + _normal_term(0.75)) / 2, rel=1e-5)
    # No labelled token at all, or all invalid: exactly 0.
    assert focal_loss(torch.tensor([HALF]), torch.tensor([BLOCK_IGNORE])).item() == 0.0
    assert focal_loss(torch.tensor([HALF]), torch.tensor([BLOCK_NORMAL]),
                      valid=torch.tensor([False])).item() == 0.0


def test_focal_alpha_and_gamma():
    logits = torch.tensor([ONE_Q, ONE_Q])
    labels = torch.tensor([BLOCK_NORMAL, BLOCK_ANOMALOUS])
    # gamma = 0, alpha = 0.5: half the cross-entropy of each class:
    #   normal p+ = 1/4: -ln(3/4) = 0.2876821;  anomalous p+ = 1/4: -ln(1/4) = 1.3862944
    #   0.5 * (0.2876821 + 1.3862944) = 0.8369882
    assert focal_loss(logits, labels, alpha=0.5, gamma=0.0).item() == pytest.approx(0.8369882, rel=1e-5)
    # alpha shifts weight between the classes: alpha = 1 keeps only the anomalous term.
    assert focal_loss(logits, labels, alpha=1.0, gamma=0.0).item() == pytest.approx(1.3862944, rel=1e-5)
    assert focal_loss(logits, labels, alpha=0.0, gamma=0.0).item() == pytest.approx(0.2876821, rel=1e-5)
    # gamma = 2 down-weights the easy normal token by (1/4)^2 and the hard anomalous one by (3/4)^2:
    #   0.75 * 0.0625 * 0.2876821 + 0.25 * 0.5625 * 1.3862944 = 0.0134851 + 0.1949476 = 0.2084327
    assert focal_loss(logits, labels, alpha=0.25, gamma=2.0).item() == pytest.approx(0.2084327, rel=1e-5)


def test_focal_gradient_flows():
    logits = torch.tensor([HALF, HALF], requires_grad=True)
    focal_loss(logits, torch.tensor([BLOCK_NORMAL, BLOCK_ANOMALOUS])).backward()
    # Pushing the normal token towards normal and the anomalous one towards anomalous lowers the loss.
    assert logits.grad[0, 1] > 0 > logits.grad[1, 1]


# ---------------------------------------------------------------------------------------------
# ResMixMatch focal terms (Algorithm 1 step 9)
# ---------------------------------------------------------------------------------------------
def test_soft_focal_terms_and_mixmatch_focal():
    # Predicted y = 3/4. Target y* = 1: term = (1/4)^4 ln(3/4) = -0.00112376.
    # Target y* = 0.5: 0.5 (1/4)^4 ln(3/4) + 0.5 (3/4)^4 ln(1/4) = -0.00056188 - 0.2193161.
    logits = torch.tensor([THREE_Q, THREE_Q, THREE_Q])
    target = torch.tensor([1.0, 0.5, 0.0])
    t = soft_focal_terms(logits, target, 4.0)
    assert t[:2].tolist() == pytest.approx(
        [0.25 ** 4 * math.log(0.75), 0.5 * 0.25 ** 4 * math.log(0.75) + 0.5 * 0.75 ** 4 * math.log(0.25)], rel=1e-5)
    # y* = 0: term = (3/4)^4 ln(1/4) = -0.4386322
    assert t[2].item() == pytest.approx(0.75 ** 4 * math.log(0.25), rel=1e-5)
    # Tokens 0 and 2 selected, token 0 in Z+ (weight alpha 0.25), token 2 in Z- (0.75):
    #   -(0.25 * -0.00112376 + 0.75 * -0.4386322) / 2 = (0.00028094 + 0.3289742) / 2 = 0.1646276
    hard_pos = torch.tensor([True, False, False])
    select = torch.tensor([True, False, True])
    loss = mixmatch_focal(logits, target, hard_pos, 0.25, 4.0, select)
    assert loss.item() == pytest.approx(0.1646276, rel=1e-5)
    assert mixmatch_focal(logits, target, hard_pos, 0.25, 4.0, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_soft_focal_term_is_minimised_near_a_soft_target():
    # A mixed pseudo-label of 0.45 must pull the prediction towards 0.45, not to 0 (the literal
    # p_t form is linear in y and would push it to 0: the collapse of decision 0012).
    target = torch.tensor([0.45])
    ys = torch.linspace(0.02, 0.98, 97)
    losses = [-soft_focal_terms(torch.log(torch.tensor([[1 - y, y]])), target, 4.0).item() for y in ys]
    best = ys[int(torch.tensor(losses).argmin())].item()
    assert 0.2 < best < 0.6
    # and a hard target still has its optimum at the end
    losses1 = [-soft_focal_terms(torch.log(torch.tensor([[1 - y, y]])), torch.tensor([1.0]), 4.0).item() for y in ys]
    assert int(torch.tensor(losses1).argmin()) == len(ys) - 1


# ---------------------------------------------------------------------------------------------
# sharpen, rampup
# ---------------------------------------------------------------------------------------------
def test_sharpen():
    p = torch.tensor([0.75, 0.5, 0.25, 0.0, 1.0, 0.9])
    # T = 0.5: p^2 / (p^2 + (1-p)^2): 0.5625 / 0.625 = 0.9; 0.5; 0.0625 / 0.625 = 0.1; 0; 1;
    #          0.81 / 0.82 = 0.98780488
    assert sharpen(p, 0.5).tolist() == pytest.approx([0.9, 0.5, 0.1, 0.0, 1.0, 0.81 / 0.82], abs=1e-6)
    assert sharpen(p, 1.0).tolist() == pytest.approx(p.tolist(), abs=1e-6)       # T = 1: unchanged
    # T = 0.25: 0.75^4 / (0.75^4 + 0.25^4) = 0.31640625 / 0.3203125 = 0.98780488
    assert sharpen(torch.tensor([0.75]), 0.25).item() == pytest.approx(0.98780488, abs=1e-6)


def test_rampup_linear_then_clamped():
    assert rampup(0, 400, 5.0) == 0.0
    assert rampup(100, 400, 5.0) == pytest.approx(1.25)      # 5 * 100/400
    assert rampup(200, 400, 5.0) == pytest.approx(2.5)
    assert rampup(400, 400, 5.0) == 5.0
    assert rampup(401, 400, 5.0) == 5.0                      # clamped (the research code is not)
    assert rampup(10_000, 400, 5.0) == 5.0
    assert rampup(-3, 400, 5.0) == 0.0
    assert rampup(7, 0, 5.0) == 5.0                          # no ramp: the maximum at once
