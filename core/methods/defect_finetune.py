"""DefectMaker self-supervised fine-tuning of the backbone: REB's first stage (domain adaptation).

The backbone learns to tell a normal image from the six DefectMaker defect kinds painted on it
(3 shapes x 2 fills, :mod:`core.synthetic.defectmaker`), through a linear head on its stride-8 and
stride-16 maps, each globally average-pooled. Its features move towards the inspected domain and
towards local defects before REB builds its memory bank from them (core/methods/reb.py). As REB's code:
7-way cross-entropy, SGD (lr 0.03, weight decay 3e-5) with a cosine decay to 1e-5, and the first
steps train the head alone with the backbone frozen (40 of 300 epochs there), so that a random
head does not push noise into the pretrained weights.

Ours, where REB differs:
- the backbone stays in eval mode: its batch norms keep their ImageNet statistics, since a CPU
  batch of 8 is too small to re-estimate them (REB's batches are about 150 images) and the bank is
  built in eval mode anyway; the gradient still adapts every convolution and affine weight;
- the gradient norm is clipped (``reb.finetune_grad_clip``): without normalising batch statistics
  lr 0.03 diverged once the backbone joined; the head's input is batch-normalised (REB's MLP head
  carries BatchNorm1d) since the pooled maps' scale differs by stage and backbone;
- the head is one linear layer (REB: an MLP);
- each image of a batch is one training normal (drawn with replacement) either left normal (with
  probability 1/7) or given one DefectMaker defect, whose class is the kind DefectMaker drew
  (shapes 1/3 each, fills 1/2 each: the 7 classes come out uniform). REB shows every image in all
  7 versions; the expectation is the same;
- no colour jitter or transposition on top of DefectMaker's own.

Seeded (``train.seed``): the head's initial weights and every drawn image and defect.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..config import RebConfig, SynthesisConfig
from ..embedding.features import FeatureExtractor, to_tensor
from ..progress import Reporter
from ..synthetic.defectmaker import FILLS, SHAPES, DefectMaker
from ..synthetic.memseg import min_component_pixels

CLASSES = ("normal",) + tuple(f"{s}/{f}" for s in SHAPES for f in FILLS)   # 7, as REB's dm_com6
LR_MIN = 1e-5               # end of the cosine decay (REB's eta_min)
LOSS_WINDOW = 20            # steps averaged for the loss and accuracy shown and recorded


def defect_class(info: dict) -> int:
    """The class (1..6) of the defect DefectMaker just made, from its ``last_info``."""
    return 1 + SHAPES.index(info["shape"]) * len(FILLS) + FILLS.index(info["fill"])


def draw_batch(xs: list[np.ndarray], n: int, rng: np.random.Generator,
               makers: dict[tuple, DefectMaker]) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` (image, class) pairs: a random training normal, left normal with probability 1/7,
    else with one DefectMaker defect of the kind it drew. ``makers``: one per input shape."""
    imgs, labels = [], np.zeros(n, np.int64)
    for j in range(n):
        x = xs[int(rng.integers(len(xs)))]
        if rng.random() < 1.0 / len(CLASSES):
            imgs.append(x)
            continue
        maker = makers[x.shape[:2]]
        img, _ = maker(x, rng)
        imgs.append(img)
        labels[j] = defect_class(maker.last_info)
    return imgs, labels


def finetune_backbone(extractor: FeatureExtractor, xs: list[np.ndarray], rcfg: RebConfig,
                      synthesis: SynthesisConfig, seed: int, report: Reporter) -> tuple[dict, dict]:
    """Fine-tune ``extractor.net`` in place on DefectMaker self-supervision (module docstring).

    ``xs``: training normals at the model-input size (uint8 RGB). Reports a ``finetune`` event per
    step (loss, accuracy; each one a cancellation point). Returns (the adapted backbone's state
    dict, CPU tensors only; a record for the model file: steps, seconds, final loss and accuracy).
    The backbone is frozen and in eval mode again afterwards, also after a cancel."""
    net = extractor.net
    device = extractor.mean.device
    rng = np.random.default_rng([seed, 7])
    makers = {s: DefectMaker(min_component_pixels(synthesis, s)) for s in {x.shape[:2] for x in xs}}
    with torch.random.fork_rng(devices=[]):   # the head's init is seeded, the caller's RNG untouched
        torch.manual_seed(seed)
        c = sum(extractor.layer_channels)
        # batch-normalised input, as REB's head (its MLP layers carry BatchNorm1d): the pooled maps'
        # scale differs by stage and backbone, and an unnormalised head diverged at lr 0.03
        head = torch.nn.Sequential(torch.nn.BatchNorm1d(c), torch.nn.Linear(c, len(CLASSES))).to(device)
    backbone = [p for p in net.parameters()]
    opt = torch.optim.SGD([{"params": head.parameters()}, {"params": backbone}], lr=rcfg.finetune_lr,
                          momentum=rcfg.finetune_momentum, weight_decay=rcfg.finetune_weight_decay)
    steps, t0 = rcfg.finetune_steps, time.perf_counter()
    losses: list[float] = []
    hits: list[float] = []
    net.eval()
    try:
        for step in range(steps):
            tune = step >= rcfg.finetune_head_steps
            for p in backbone:
                p.requires_grad_(tune)
            lr = LR_MIN + (rcfg.finetune_lr - LR_MIN) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for g in opt.param_groups:
                g["lr"] = lr
            imgs, labels = draw_batch(xs, rcfg.finetune_batch, rng, makers)
            opt.zero_grad(set_to_none=True)
            by_size: dict[tuple, list[int]] = {}
            for j, im in enumerate(imgs):
                by_size.setdefault(im.shape, []).append(j)
            pooled, order = [], []
            for idx in by_size.values():   # one forward per input size, one head pass for all
                x = (to_tensor([imgs[j] for j in idx], device) - extractor.mean) / extractor.std
                with torch.set_grad_enabled(tune):
                    maps = net(x)
                pooled.append(torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1))
                order += idx
            logits = head(torch.cat(pooled))
            y = torch.from_numpy(labels[order]).to(device)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            if rcfg.finetune_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([*head.parameters(), *backbone], rcfg.finetune_grad_clip)
            loss_sum = float(loss.detach())
            correct = int((logits.argmax(1) == y).sum())
            opt.step()
            losses.append(loss_sum)
            hits.append(correct / len(imgs))
            report("finetune", step + 1, steps, "DefectMaker self-supervision" + ("" if tune else " (head only)"),
                   loss=float(np.mean(losses[-LOSS_WINDOW:])), acc=float(np.mean(hits[-LOSS_WINDOW:])),
                   lr=lr)
    finally:
        for p in backbone:
            p.requires_grad_(False)
        net.eval()
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
    record = {"steps": steps, "head_steps": rcfg.finetune_head_steps, "batch": rcfg.finetune_batch,
              "seconds": time.perf_counter() - t0, "loss": float(np.mean(losses[-LOSS_WINDOW:])),
              "accuracy": float(np.mean(hits[-LOSS_WINDOW:])), "first_loss": losses[0]}
    return state, record
