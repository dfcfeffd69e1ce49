"""ResMixMatch (paper Algorithm 1, method.md components 15-16): learning from boxes and image tags.

Blocks inside the union of boxes (more than v of their area) and every block of an image tagged
"defective" are *unknown*; the rest of a labelled image is normal. Per step:

- the full-supervision part (Fig. 4, blue): b1 normal and b2 synthetic images with hard block
  labels, focal loss Eq. 11;
- the semi-supervision part (red), on windows of b3 weakly labelled images:
  1. M K-NN-augmented copies of each window (Eq. 12), labels copied;
  2. pseudo-labels of unknown tokens: the sharpened (temperature T) mean prediction over the M
     copies, without gradient;
  3. all tokens of all copies flattened into a labelled set X (y* = 0, target 0) and an unlabelled
     set U (y* = -1, target = pseudo-label);
  4. MixUp of every token with a token of the shuffled union W (lambda ~ Beta(a, a),
     lambda' = max(lambda, 1 - lambda), one draw per token); the mixed token keeps the position
     and the X/U membership of the first token, so re-tensorising puts it back where it was
     (the paper: tokens stay tied to their image position);
  5. PCR dropout (Eq. 13) on the re-tensorised windows; dropped tokens carry no loss;
  6. L_x (alpha_x, gamma_x) over X and L_u (alpha_u, gamma_u) over U with the focal term of
     Algorithm 1 step 9 written as a soft-target focal cross-entropy (the literal form turns
     mixed pseudo-labels into hard ones and collapsed on real data: decision 0012); L = L_F + L_x + lambda_u L_u, lambda_u ramped linearly to its maximum
     over ``rampup_steps`` and then held (the research code forgets the clamp).

The model starts from the unsupervised (stage-1) model and this stage keeps its last EMA state
(``semi.checkpoint = "last"``): the validation split's defects are synthetic, so it cannot see
what the boxes teach, and selecting on it picks the steps before lambda_u has ramped up, i.e. a
model that has not learnt from the user's labels. Validation is still run and logged.
"""
from __future__ import annotations

import torch

from ..config import Config
from ..data.labels import BLOCK_NORMAL, BLOCK_UNKNOWN
from ..embedding.residuals import pcr_dropout
from .losses import focal_loss, mixmatch_focal, rampup, sharpen
from .model import model_tokens
from .training import Trainer, gather_windows


def mixup_tokens(x: torch.Tensor, y: torch.Tensor, alpha: float,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-level MixUp of Algorithm 1 step 6.

    ``x``: (N, d) tokens ordered X then U; ``y``: (N,) targets in [0, 1]. Every token i is mixed
    with token perm[i] of the shuffled union: lam' = max(lam, 1 - lam) with lam ~ Beta(alpha,
    alpha) per token, so the result stays closer to token i. Returns (mixed x, mixed y, perm).
    """
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator, device=x.device)
    beta = torch.distributions.Beta(torch.tensor(float(alpha), device=x.device),
                                    torch.tensor(float(alpha), device=x.device))
    lam = beta.sample((n,))
    lam = torch.maximum(lam, 1 - lam)
    xm = lam[:, None] * x + (1 - lam[:, None]) * x[perm]
    ym = lam * y + (1 - lam) * y[perm]
    return xm, ym, perm


class ResMixMatchTrainer(Trainer):
    """Stage 2: fine-tune with Algorithm 1 on weakly labelled images."""

    def __init__(self, cfg: Config, material, device, report, checkpoint=None, init_state=None, fingerprint=""):
        super().__init__(cfg, material, device, report, checkpoint, init_state, fingerprint)
        self.weak = [d for d in material.defective if (d.targets == BLOCK_UNKNOWN).any()]
        if not self.weak:
            raise ValueError("ResMixMatch needs images with unknown blocks (boxes or defective tags)")

    stage = "ResMixMatch"
    previous_is_candidate = False

    @property
    def select_on_validation(self) -> bool:
        return self.cfg.semi.checkpoint == "validation"
    lr = property(lambda self: self.cfg.semi.lr)
    total_steps = property(lambda self: self.cfg.semi.steps)

    def step_loss(self, step: int):
        s, t = self.cfg.semi, self.cfg.train
        # -- full supervision (blue): normals, synthetic and fully labelled images, Eq. 11
        picks = (self.sampler.pick(self.m.normals, s.b_normal, s.window_fraction)
                 + self.sampler.pick(self.m.synthetic, s.b_synthetic, s.window_fraction)
                 + self.sampler.pick(self.hard_labelled, t.b_defective if self.hard_labelled else 0,
                                     s.window_fraction))
        logits, labels, valid = [], [], []
        for f, nbr, tg in gather_windows(picks, self.device).values():
            r, keep = pcr_dropout(model_tokens(self.model, self.augment(f.float(), nbr)), t.pcr_dropout, self.gen)
            logits.append(self.forward(r).reshape(-1, 2))
            labels.append(tg.reshape(-1))
            valid.append(keep.reshape(-1))
        l_f = focal_loss(torch.cat(logits), torch.cat(labels), t.focal_alpha, t.focal_gamma, torch.cat(valid),
                          t.focal_norm)

        # -- semi supervision (red): Algorithm 1 on weakly labelled windows
        weak = self.sampler.pick(self.weak, s.b_defective, s.window_fraction)
        l_x = l_u = torch.zeros((), device=self.device)
        n_groups = 0
        for f, nbr, tg in gather_windows(weak, self.device).values():
            lx, lu = self.mixmatch_loss(f.float(), nbr, tg)
            l_x, l_u, n_groups = l_x + lx, l_u + lu, n_groups + 1
        if n_groups > 1:
            l_x, l_u = l_x / n_groups, l_u / n_groups
        lam_u = rampup(step, s.rampup_steps, s.lambda_u)
        loss = l_f + l_x + lam_u * l_u
        return loss, {"loss": float(loss.detach()), "l_f": float(l_f.detach()), "l_x": float(l_x.detach()),
                      "l_u": float(l_u.detach()), "lambda_u": lam_u}

    def mixmatch_loss(self, f: torch.Tensor, nbr: torch.Tensor, tg: torch.Tensor):
        """Steps 2-9 of Algorithm 1 for windows ``f`` (n, h, w, d) with labels ``tg`` in {0, -1}."""
        s = self.cfg.semi
        n, h, w, d = f.shape
        m = s.copies
        # step 2: M K-NN-augmented copies, labels copied
        copies = torch.cat([model_tokens(self.model, self.augment(f, nbr)) for _ in range(m)])   # (M n, h, w, d)
        y_star = tg.repeat(m, 1, 1)
        # step 3: guess pseudo-labels: sharpened mean prediction over the copies
        with torch.no_grad():
            p = self.forward(copies).softmax(-1)[..., 1].view(m, n, h, w).mean(0)
            guess = sharpen(p, s.temperature).repeat(m, 1, 1)
        # steps 3-5: flatten; X = known-normal tokens (target 0), U = unknown (target = guess)
        x_flat = copies.reshape(-1, d)
        ys = y_star.reshape(-1)
        target = torch.where(ys == BLOCK_UNKNOWN, guess.reshape(-1), torch.zeros_like(guess.reshape(-1)))
        is_u = ys == BLOCK_UNKNOWN
        is_x = ys == BLOCK_NORMAL   # blocks of a box's ignore band (labels.BLOCK_IGNORE) are neither
        order = torch.cat([torch.nonzero(is_x).view(-1), torch.nonzero(is_u).view(-1)])
        # step 6: MixUp with the shuffled union; step 7: re-tensorise at the original positions
        xm, ym, _ = mixup_tokens(x_flat[order], target[order], s.mixup_alpha, self.gen)
        x_mixed = x_flat.clone()     # ignored tokens stay as they are and carry no loss
        y_mixed = torch.zeros_like(target)
        x_mixed[order] = xm
        y_mixed[order] = ym
        tokens, keep = pcr_dropout(x_mixed.view(m * n, h, w, d), self.cfg.train.pcr_dropout, self.gen)
        # step 8-9: predictions and the two focal losses
        logits = self.forward(tokens).reshape(-1, 2)
        keep = keep.reshape(-1)
        hard_pos = y_mixed > 0.5
        l_x = mixmatch_focal(logits, y_mixed, hard_pos, s.alpha_x, s.gamma_x, keep & is_x)
        l_u = mixmatch_focal(logits, y_mixed, hard_pos, s.alpha_u, s.gamma_u, keep & is_u)
        return l_x, l_u
