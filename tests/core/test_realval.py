"""Validation on held-out real labelled defects (core/eval/realval.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data.labels import BLOCK_ANOMALOUS, BLOCK_IGNORE, BLOCK_NORMAL, BLOCK_UNKNOWN
from core.eval.realval import split_labelled, validate_real
from core.learning.trainset import TokenImage


def test_split_labelled_holds_out_a_fraction_deterministically():
    items = list(range(10))
    train, held = split_labelled(items, 0.3, 4, seed=0)
    assert len(held) == 3 and sorted(train + held) == items
    assert split_labelled(items, 0.3, 4, seed=0) == (train, held)
    assert split_labelled(items, 0.3, 4, seed=1) != (train, held)
    assert split_labelled(items[:3], 0.3, 4, 0) == (items[:3], [])      # too few labelled: none held
    assert len(split_labelled(items[:4], 0.1, 4, 0)[1]) == 1              # at least one
    assert split_labelled(items, 0.0, 4, 0)[1] == []


class _Oracle(torch.nn.Module):
    """A 'model' whose anomaly probability is the first residual channel (for a known ranking)."""
    def forward(self, x):
        p = x[..., :1].clamp(0, 1)
        return torch.log(torch.cat([1 - p, p], -1).clamp_min(1e-6))


def test_validate_real_scores_blocks_by_label_kind(tiny_cfg):
    cfg = tiny_cfg.updated({"swin": {"mu": 8, "step": 8, "window": 8}})
    bank = torch.zeros(1, 4)
    model = _Oracle()
    model.register_buffer("input_scale", torch.tensor(1.0))

    def item(values, targets):
        f = torch.zeros(8, 8, 4)
        f[..., 0] = torch.as_tensor(values, dtype=torch.float32).sqrt()   # residual = f^2
        return TokenImage(f.half(), torch.zeros(8, 8, 1, dtype=torch.long), torch.as_tensor(targets, dtype=torch.int8),
                          "defective", "x")

    t = np.full((8, 8), BLOCK_NORMAL, np.int8)
    t[0, 0], t[0, 1], t[0, 2] = BLOCK_ANOMALOUS, BLOCK_UNKNOWN, BLOCK_IGNORE
    v = np.full((8, 8), 0.1, np.float32)
    v[0, 0], v[0, 1], v[0, 2] = 0.9, 0.8, 0.95      # the ignored block's score must not count
    perfect = validate_real(model, [item(v, t)], [item(np.full((8, 8), 0.2), np.zeros((8, 8)))], bank, cfg, "cpu")
    assert perfect["val_real_ap"] == pytest.approx(1.0)
    v2 = v.copy()
    v2[5, 5] = 0.99                                   # one normal block above every defect
    worse = validate_real(model, [item(v2, t)], [], bank, cfg, "cpu")
    assert worse["val_real_ap"] < 1.0
    assert validate_real(model, [], [], bank, cfg, "cpu") == {}


def test_fit_holds_out_labelled_defects_and_validates_on_them(demo_data, tiny_cfg, tmp_path):
    from core import api
    from core.data.datasets import load_mvtec
    from core.data.images import read_mask
    from core.data.labels import ImageLabel
    ds = load_mvtec(demo_data)
    bad = [s for s in ds.test if s.is_anomalous][:4]
    labels = [ImageLabel(s.path, mask=read_mask(s.mask_path) > 0) for s in bad]
    events = []
    b = api.fit(ds.train, tmp_path / "m.pt", tiny_cfg, "cpu", labels=labels, progress=events.append)
    assert len(b.validation["real_defect_images"]) == 1
    assert 0.0 <= b.validation["val_real_ap"] <= 1.0
    assert all("val_real_ap" in h for h in b.validation["history"])
    assert any(e.stage == "log" and "held out to validate on real defects" in e.message for e in events)
    # the kept state is the best on real defects (checkpoints are chosen on them)
    assert b.validation["val_real_ap"] == max(h["val_real_ap"] for h in b.validation["history"])


def _peak_item(peak: float, kind: str, label_kind: str | None) -> TokenImage:
    """An 8x8-token image whose oracle probability is ``peak`` at one block and 0.3 elsewhere;
    tagged images have every block unknown, others every block normal."""
    f = torch.zeros(8, 8, 4)
    f[..., 0] = 0.3
    f[2, 3, 0] = peak ** 0.5
    t = np.full((8, 8), BLOCK_UNKNOWN if label_kind == "tag" else BLOCK_NORMAL, np.int8)
    return TokenImage(f.half(), torch.zeros(8, 8, 1, dtype=torch.long), torch.as_tensor(t), kind, "x",
                      label_kind=label_kind)


def test_validate_real_scores_tagged_images_at_image_level(tiny_cfg):
    cfg = tiny_cfg.updated({"swin": {"mu": 8, "step": 8, "window": 8}})
    model = _Oracle()
    model.register_buffer("input_scale", torch.tensor(1.0))
    item = _peak_item
    tagged = [item(0.9, "defective", "tag"), item(0.8, "defective", "tag")]
    normals = [item(0.5, "normal", None), item(0.85, "normal", None)]
    out = validate_real(model, tagged, normals, torch.zeros(1, 4), cfg, "cpu")
    assert "val_real_ap" not in out                   # a tag does not say where the defect is
    assert out["val_real_image_auroc"] == pytest.approx(0.75)   # 3 of 4 pairs ordered right


def test_training_on_images_of_several_sizes_validates_and_predicts(tiny_cfg, tmp_path):
    """Real sets mix sizes (and grayscale): validation pooled the maps with np.stack and died."""
    import cv2
    from core import api
    from core.data.images import write_png
    from core.demo import surface
    rng = np.random.default_rng(0)
    sizes = [(64, 128), (128, 128), (128, 64)]   # model inputs of three shapes at 128 px
    paths = []
    for i in range(8):
        h, w = sizes[i % 3]
        img = cv2.cvtColor(cv2.resize(surface(rng), (w, h)), cv2.COLOR_RGB2GRAY)
        p = tmp_path / "normals" / f"{i}.png"
        write_png(p, np.dstack([img] * 3))
        paths.append(p)
    b = api.fit(paths, tmp_path / "m.pt", tiny_cfg, "cpu")
    assert np.isfinite(b.validation["val_pixel_ap"])
    res = api.predict(b, paths[:3], tmp_path / "out", "cpu", maps="npy")
    for r, (h, w) in zip(res, sizes):
        assert np.load(r.map_file).shape == (h, w)


def test_a_checkpoint_must_win_on_most_held_out_images_to_replace_the_start(tiny_cfg):
    from core.learning.training import Trainer
    t = Trainer.__new__(Trainer)
    start = {"stage": "previous", "per_image": [0.5, 0.5, 0.5]}
    t.last_per_image = [0.9, 0.4, 0.45]            # one image carries the pool: not enough
    assert not t._beats_start(start)
    t.last_per_image = [0.6, 0.55, 0.45]           # two of three
    assert t._beats_start(start)
    # against another checkpoint of the same stage, or without per-image scores, the pool decides
    assert Trainer._beats_start(t, {"stage": "ResMixMatch", "per_image": [0.9, 0.9, 0.9]})
    t.last_per_image = None
    assert t._beats_start(start)


def test_tagged_images_each_report_how_many_normals_they_outscore(tiny_cfg):
    cfg = tiny_cfg.updated({"swin": {"mu": 8, "step": 8, "window": 8}})
    model = _Oracle()
    model.register_buffer("input_scale", torch.tensor(1.0))
    item = _peak_item
    out = validate_real(model, [item(0.9, "defective", "tag"), item(0.6, "defective", "tag")],
                        [item(0.5, "normal", None), item(0.85, "normal", None)], torch.zeros(1, 4), cfg, "cpu")
    assert out["per_image"] == pytest.approx([1.0, 0.5])
