"""The optimisation loop (method.md components 11-14, 19): batches, augmentation, focal loss, AdamW,
gradient clipping, EMA, validation-based checkpoint choice, resumable checkpoints.

Per step: b1 normal, b2 synthetic and (when labelled defects exist) b3 defective images; from each,
a fraction p of its sliding windows (at least one). Residuals are formed on the fly with the K-NN
augmentation (Eq. 12), PCR dropout zeroes tokens (Eq. 13), and the focal loss (Eq. 11) is taken
over the labelled, visible tokens of all windows together.

The EMA weights are validated every ``val_every`` steps on the validation split (held-out normals
and synthetic defects made from them; never test images) and the best EMA state is what the model
file keeps. A resumable checkpoint (model, EMA, optimiser, step, RNG states, best so far) is
written atomically every ``checkpoint_every`` steps.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import SELECTION_METRICS, Config
from ..data.labels import BLOCK_UNKNOWN
from ..embedding.residuals import knn_residual, pcr_dropout, residual
from ..eval.realval import validate_real
from ..fileio import atomic_write_with
from ..progress import Reporter
from ..deploy.precision import check_precision, low_precision, resolve_precision
from .losses import focal_loss
from .model import ResidualSwin, build_model, model_tokens, predict_map, sliding_windows
from .trainset import Material, TokenImage


@dataclass
class TrainResult:
    state: dict                     # best EMA weights
    best_step: int
    best_metric: float
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    val: dict = field(default_factory=dict)   # every validation metric of the kept state


class EMA:
    """Exponential moving average of the weights, with the usual warm-up of the decay
    (min(decay, (1 + t) / (10 + t))) so early steps do not freeze the average at initialisation."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(p.detach(), alpha=1 - d)
            else:
                e.copy_(p)


class WindowSampler:
    """Chooses images and windows for a step, deterministically from a seeded generator."""

    def __init__(self, cfg: Config, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)

    def pick(self, items: list[TokenImage], n: int, fraction: float) -> list[tuple[TokenImage, tuple]]:
        if not items or n <= 0:
            return []
        chosen = self.rng.choice(len(items), n, replace=len(items) < n)
        out = []
        for i in chosen:
            item = items[int(i)]
            wins = sliding_windows(*item.shape, self.cfg.swin.mu, self.cfg.swin.step)
            m = max(1, int(round(fraction * len(wins))))
            for w in self.rng.choice(len(wins), m, replace=False):
                out.append((item, wins[int(w)]))
        return out


def gather_windows(picks: list[tuple[TokenImage, tuple]], device) -> dict[tuple, tuple]:
    """Group picked windows by shape: {(mr, mc): (feats, nbr, targets)} stacked on ``device``."""
    groups: dict[tuple, list] = {}
    for item, (r, c, mr, mc) in picks:
        groups.setdefault((mr, mc), []).append((item.feats[r:r + mr, c:c + mc], item.nbr[r:r + mr, c:c + mc],
                                                item.targets[r:r + mr, c:c + mc]))
    out = {}
    for key, lst in groups.items():
        out[key] = tuple(torch.stack([x[i] for x in lst]).to(device, non_blocking=True) for i in range(3))
    return out


@torch.no_grad()
def block_maps(model: ResidualSwin, it: TokenImage, bank_t: torch.Tensor, cfg: Config,
               device) -> tuple[np.ndarray, np.ndarray]:
    """(the Swin's block probability map, the nearest-neighbour distance map) of one token image,
    both (rows, cols) float32: what validation, calibration and pseudo-masks score."""
    f = it.feats.to(device).float()
    nb = bank_t[it.nbr[..., 0].to(device)]
    p = predict_map(model, model_tokens(model, residual(f, nb, cfg.bank.residual)), cfg.swin.mu,
                    cfg.swin.step, cfg.swin.bagging)
    return p.cpu().numpy(), nearest_distance(it, bank_t, device)


def nearest_distance(it: TokenImage, bank_t: torch.Tensor, device) -> np.ndarray:
    """(rows, cols) float32: each block's distance to its nearest normal bank entry."""
    f = it.feats.to(device).float()
    return (f - bank_t[it.nbr[..., 0].to(device)]).norm(dim=-1).cpu().numpy()


def validate(model: ResidualSwin, items: list[TokenImage], bank_t: torch.Tensor, cfg: Config,
             device) -> dict[str, float]:
    """Pixel AP of the (bagged, upsampled, smoothed) maps on the validation split."""
    from ..eval.anomaly_map import postprocess
    from ..eval.metrics import pooled_pixel_ap
    if not items:
        return {}
    maps, masks = [], []
    model.eval()
    for it in items:
        block, _ = block_maps(model, it, bank_t, cfg, device)
        h, w = it.mask.shape
        maps.append(postprocess(block, (h, w), cfg.output.gaussian_sigma * h / cfg.output.eval_size,
                                cfg.output.upsample, cfg.output.sharpness))
        masks.append(it.mask)
    # images of different sizes (real sets mix them): pool the pixels, as the evaluation does
    return {"val_pixel_ap": pooled_pixel_ap(maps, masks)}


class Trainer:
    """Unsupervised / supervised training of the residual Swin Transformer (Eq. 11 focal loss)."""

    def __init__(self, cfg: Config, material: Material, device: torch.device, report: Reporter,
                 checkpoint: Path | None = None, init_state: dict | None = None, fingerprint: str = ""):
        self.cfg, self.m, self.device, self.report = cfg, material, torch.device(device), report
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint   # of config + data: a checkpoint of another run is not resumed
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(material.feature_dim, cfg, material.residual_scale).to(self.device)
        if init_state is not None:
            self.model.load_state_dict(init_state)
        self.precision = check_precision(resolve_precision(cfg.train.precision, self.device), self.device)
        self.bank_t = torch.from_numpy(material.bank.features).to(self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.train.seed)
        self.sampler = WindowSampler(cfg, cfg.train.seed)
        # Images whose every block is known (masks, block maps, normal tags) train with Eq. 11;
        # those with unknown blocks (boxes, defective tags) are left to ResMixMatch.
        self.hard_labelled = [d for d in material.defective if not (d.targets == BLOCK_UNKNOWN).any()]
        self.last_per_image: list[float] | None = None   # per held-out image AP of the last validation
        # Wall time of the whole fit across processes: the caller sets when its fit started; a
        # resumed checkpoint brings the seconds the killed processes had spent (material included).
        self.fit_started = time.perf_counter()
        self.earlier_fit_seconds = 0.0

    # -- hooks a subclass (ResMixMatch) overrides ------------------------------------------------
    lr = property(lambda self: self.cfg.train.lr)
    total_steps = property(lambda self: self.cfg.train.steps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """The Swin's logits for training, at ``train.precision`` (autocast for a low one; the
        losses always see float32)."""
        with low_precision(self.device, self.precision):
            return self.model(tokens).float()

    def step_loss(self, step: int) -> tuple[torch.Tensor, dict]:
        t = self.cfg.train
        picks = (self.sampler.pick(self.m.normals, t.b_normal, t.window_fraction)
                 + self.sampler.pick(self.m.synthetic, t.b_synthetic, t.window_fraction)
                 + self.sampler.pick(self.hard_labelled, t.b_defective, t.window_fraction))
        logits, labels, valid = [], [], []
        for f, nbr, tg in gather_windows(picks, self.device).values():
            r = self.augment(f.float(), nbr)
            r, keep = pcr_dropout(model_tokens(self.model, r), t.pcr_dropout, self.gen)
            logits.append(self.forward(r).reshape(-1, 2))
            labels.append(tg.reshape(-1))
            valid.append(keep.reshape(-1))
        loss = focal_loss(torch.cat(logits), torch.cat(labels), t.focal_alpha, t.focal_gamma, torch.cat(valid),
                          t.focal_norm)
        return loss, {"loss": float(loss.detach())}

    def augment(self, f: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        t = self.cfg.train
        return knn_residual(f, self.bank_t, nbr, self.cfg.bank.residual, t.knn_a1, t.knn_a2,
                            t.knn_noise_sigma, t.knn_noise_clip, self.gen)

    def validation(self, model) -> tuple[dict, float]:
        """(every validation metric, the one checkpoints are chosen on): pixel AP on the synthetic
        validation split, and block AP on held-out real labelled defects when there are some."""
        val = validate(model, self.m.val, self.bank_t, self.cfg, self.device)
        if self.m.val_real:
            normals = [it for it in self.m.val if it.kind == "normal"]
            val.update(validate_real(model, self.m.val_real, normals, self.bank_t, self.cfg, self.device))
        self.last_per_image = val.pop("per_image", None)   # not a metric to plot: kept aside
        for key in SELECTION_METRICS:
            if key in val:
                return val, val[key]
        return val, float("nan")

    def _beats_start(self, best: dict) -> bool:
        """Against the model a stage started from, a checkpoint must also win on a majority of the
        held-out labelled images, not only on their pooled AP: with a handful of images one image
        can carry the pool, and labels that do not help should leave the start in place."""
        if best.get("stage") != "previous" or not best.get("per_image") or not self.last_per_image:
            return True
        wins = sum(c > b for c, b in zip(self.last_per_image, best["per_image"]))
        return 2 * wins > len(best["per_image"])

    def start_point(self) -> TrainResult:
        """The current weights as a result (validated), for runs that skip this stage."""
        val, metric = self.validation(self.model)
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return TrainResult(state, 0, metric, [dict(step=0, seconds=0.0, **val)], 0, 0.0, val)

    # -- the loop ----------------------------------------------------------------------------------
    stage = "supervised"          # history tag and progress message of this stage

    previous_is_candidate = True  # may the result this stage starts from be kept instead of it?
    @property
    def select_on_validation(self) -> bool:
        """Choose the best validated EMA state (train.checkpoint = validation), else the last one."""
        return self.cfg.train.checkpoint == "validation"

    def run(self, previous: TrainResult | None = None) -> TrainResult:
        """Train, continuing the history of ``previous`` (the result this stage starts from)."""
        cfg, t = self.cfg, self.cfg.train
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=t.weight_decay)
        total = self.total_steps

        def lr_at(step):   # linear warm-up, then cosine to 1% (a smooth decay suits EMA selection)
            if step < t.warmup_steps:
                return (step + 1) / t.warmup_steps
            prog = (step - t.warmup_steps) / max(1, total - t.warmup_steps)
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        ema = EMA(self.model, t.ema_decay)
        start, best, history = 0, {"metric": float("nan"), "step": 0, "state": None}, []
        # Real labelled defects held out (core/eval/realval.py) rank checkpoints the way synthetic ones
        # do not: with them, choose on validation, and let the start of this stage compete.
        real = bool(self.m.val_real)
        select = self.select_on_validation or real
        if previous is not None:
            history = list(previous.history)
            if (self.previous_is_candidate or real) and not math.isnan(previous.best_metric):
                best = {"metric": previous.best_metric, "step": 0, "state": previous.state,
                        "val": previous.val, "stage": "previous"}
                if real:   # the start's score on each held-out image (its weights are the model's now)
                    self.validation(self.model)
                    best["per_image"] = self.last_per_image
        t0, seconds_before = time.perf_counter(), (history[-1]["seconds"] if history else 0.0)
        pending = None   # a checkpoint written just before a validation: that validation is still due
        if self.checkpoint is not None and self.checkpoint.exists():
            resumed = self._resume(opt, sched, ema)
            if resumed is None:
                self.report.log(f"{self.checkpoint} belongs to another run (other settings or data): starting over")
            else:
                start, best, history, seconds_before, pending = resumed
                self.report.log(f"resumed from {self.checkpoint} at step {start}")
        steps_before = previous.steps if previous is not None else 0
        clock = lambda: seconds_before + time.perf_counter() - t0   # noqa: E731  (this stage, every process)

        def validate_at(done: int, parts: dict) -> dict:
            nonlocal best
            val, metric = self.validation(ema.model)
            self.model.train()
            # without a usable validation metric (or when this stage does not select on it)
            # the latest EMA state is kept
            if (not select or math.isnan(metric) or best["state"] is None
                    or (metric > best["metric"] and self._beats_start(best))):
                best = {"metric": metric, "step": done, "val": val, "stage": self.stage,
                        "per_image": self.last_per_image,
                        "state": {k: v.detach().cpu().clone() for k, v in ema.model.state_dict().items()}}
            history.append(dict(stage=self.stage, step=done, seconds=clock(), **parts, **val))
            return val

        if pending is not None:
            validate_at(start, pending)
            self._save(start, opt, sched, ema, best, history, clock())
        every = cfg.synthesis.refresh_every
        if every and start >= every and self.m.refresh is not None:   # resumed: the pool of that round
            self.m.synthetic = self.m.refresh(start // every)
        self.model.train()
        saved = False
        for step in range(start, total):
            if every and step and step % every == 0 and self.m.refresh is not None:
                self.m.synthetic = self.m.refresh(step // every)      # fresh defects, nothing memorised
            loss, parts = self.step_loss(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            opt.step()
            sched.step()
            ema.update(self.model)
            done = step + 1
            metrics = dict(parts, lr=sched.get_last_lr()[0])
            if done % t.val_every == 0 or done == total:
                if self.checkpoint is not None and not saved:
                    # the steps so far are safe before the first validation of this process runs
                    # (a validation that fails on odd data must not cost the steps before it)
                    self._save(done, opt, sched, ema, best, history, clock(), pending=parts)
                    saved = True
                metrics.update(validate_at(done, parts))
            self.report("train", done, total, self.stage, **metrics)
            # also at the very end: a resumed run whose stage finished skips straight past it
            if self.checkpoint is not None and (done % t.checkpoint_every == 0 or done == total):
                self._save(done, opt, sched, ema, best, history, clock())
                saved = True
        if best["state"] is None:
            best = {"metric": float("nan"), "step": total, "state": ema.model.state_dict()}
        return TrainResult(best["state"], best["step"], best["metric"], history, steps_before + total,
                           clock(), best.get("val", {}))

    # -- checkpoints -------------------------------------------------------------------------------
    def _save(self, step, opt, sched, ema, best, history, seconds: float, pending: dict | None = None) -> None:
        """``pending``: the step's loss parts when its validation has not run yet (resume runs it)."""
        state = {"step": step, "model": self.model.state_dict(), "ema": ema.model.state_dict(),
                 "seconds": seconds, "pending_validation": pending,
                 "fit_seconds": self.earlier_fit_seconds + time.perf_counter() - self.fit_started,
                 "ema_updates": ema.updates, "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "best": best, "history": history, "gen": self.gen.get_state(), "fingerprint": self.fingerprint,
                 "sampler": self.sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
        # through a file handle, so a full disk is an OSError that becomes a plain WriteError
        atomic_write_with(self.checkpoint, lambda fh: torch.save(state, fh))

    def _resume(self, opt, sched, ema):
        try:
            st = torch.load(self.checkpoint, map_location=self.device, weights_only=True)
        except Exception:   # truncated or foreign file: not resumable
            return None
        if not isinstance(st, dict) or st.get("fingerprint") != self.fingerprint:
            return None
        self.model.load_state_dict(st["model"])
        ema.model.load_state_dict(st["ema"])
        ema.updates = st["ema_updates"]
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        self.gen.set_state(st["gen"].cpu() if hasattr(st["gen"], "cpu") else st["gen"])
        self.sampler.rng.bit_generator.state = st["sampler"]
        torch.set_rng_state(st["torch_rng"].cpu())
        self.earlier_fit_seconds = float(st.get("fit_seconds", 0.0))
        seconds = st.get("seconds", st["history"][-1]["seconds"] if st["history"] else 0.0)
        return st["step"], st["best"], st["history"], float(seconds), st.get("pending_validation")
