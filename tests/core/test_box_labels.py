"""How boxes teach (decision 0015): Eq. 15's ignore band, label paste and pseudo-masks."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.data.geometry import BlockGrid
from core.synthetic.labelpaste import Labelled, paste, paste_labelled
from core.data.labels import (BLOCK_ANOMALOUS, BLOCK_IGNORE, BLOCK_NORMAL, BLOCK_UNKNOWN, RotatedBox,
                              block_labels_from_boxes)
from core.learning.pseudomask import pseudo_mask_record, pseudo_masks, read_rows
from core.learning.trainset import TokenImage


def test_boxes_leave_partly_covered_blocks_unlabelled():
    g = BlockGrid(32, 32, 32, 32, 8)
    box = RotatedBox(14, 14, 8, 8, 0)      # block (1, 1): 56% inside; (1, 2) and (2, 1): 19%; (2, 2): 6%
    eq15 = block_labels_from_boxes([box], g, 0.5)
    band = block_labels_from_boxes([box], g, 0.5, 0.08)
    assert eq15[1, 1] == band[1, 1] == BLOCK_UNKNOWN
    # Eq. 15 calls the quarter-covered blocks normal, where part of the defect may be; the band ignores them
    assert eq15[1, 2] == BLOCK_NORMAL and band[1, 2] == BLOCK_IGNORE and band[2, 1] == BLOCK_IGNORE
    assert band[2, 2] == BLOCK_NORMAL and band[3, 3] == BLOCK_NORMAL


def test_paste_copies_the_region_feathered_and_nothing_far_from_it():
    src = np.full((32, 32, 3), 200, np.uint8)
    dst = np.full((32, 32, 3), 50, np.uint8)
    region = np.zeros((32, 32), bool)
    region[10:14, 10:14] = True
    out = paste(src, region, dst, feather_px=2)
    assert (out[region] == 200).all()                       # the labelled pixels come over whole
    assert (out[0:5, 0:5] == 50).all() and (out[25:, 25:] == 50).all()   # far away: the normal
    assert 50 < out[12, 15, 0] < 200                          # the seam is blended
    with pytest.raises(ValueError, match="paste"):
        paste(src, region, dst[:16], 2)


def test_paste_labelled_labels_the_copies_like_their_source():
    rng = np.random.default_rng(0)
    normals = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    region = np.zeros((32, 32), bool)
    region[8:16, 8:16] = True
    mask_item = Labelled(normals[0], np.zeros((4, 4), np.int8), "mask", "a.png", region)
    box_item = Labelled(normals[1], np.zeros((4, 4), np.int8), "boxes", "b.png", region)
    tag_item = Labelled(normals[2], np.zeros((4, 4), np.int8), "tag", "c.png", None)
    out = paste_labelled([mask_item, box_item, tag_item], normals, 3, 0, 0.25, 0.08, 0.5, 2.0, 0.08)
    assert len(out) == 6                                      # tags locate nothing: not pasted
    assert len({j for j, x in out if x.name.startswith("a.png")}) == 3   # onto distinct normals
    masks = [x for _, x in out if x.kind == "mask"]
    boxes = [x for _, x in out if x.kind == "boxes"]
    assert all(x.targets[1, 1] == BLOCK_ANOMALOUS and x.targets[3, 3] == BLOCK_NORMAL for x in masks)
    assert all(x.targets[1, 1] == BLOCK_UNKNOWN and x.targets[3, 3] == BLOCK_NORMAL for x in boxes)
    again = paste_labelled([mask_item], normals, 3, 0, 0.25, 0.08, 0.5, 2.0)
    assert [j for j, _ in again] == [j for j, x in out if x.kind == "mask"]   # deterministic
    assert paste_labelled([mask_item], normals, 0, 0, 0.25, 0.08, 0.5, 2.0) == []


class _Oracle(torch.nn.Module):
    """A 'model' whose anomaly probability is the first residual channel."""
    def forward(self, x):
        p = x[..., :1].clamp(0, 1)
        return torch.log(torch.cat([1 - p, p], -1).clamp_min(1e-6))


def _token_image(values, targets, kind="defective", label_kind="boxes"):
    f = torch.zeros(8, 8, 4)
    f[..., 0] = torch.as_tensor(values, dtype=torch.float32).sqrt()      # residual = f^2
    return TokenImage(f.half(), torch.zeros(8, 8, 1, dtype=torch.long), torch.as_tensor(targets, dtype=torch.int8),
                      kind, "x", label_kind=label_kind)


def test_pseudo_masks_keep_the_believed_blocks_of_each_box_and_ignore_the_rest(tiny_cfg):
    cfg = tiny_cfg.updated({"swin": {"mu": 8, "step": 8, "window": 8}})
    model = _Oracle()
    model.register_buffer("input_scale", torch.tensor(1.0))
    t = np.full((8, 8), BLOCK_NORMAL, np.int8)
    t[1:3, 1:3] = BLOCK_UNKNOWN                 # box A: one believed block
    t[5:7, 5:7] = BLOCK_UNKNOWN                 # box B: nothing above the threshold
    v = np.full((8, 8), 0.0, np.float32)
    v[1, 1], v[2, 2] = 0.9, 0.3
    v[5, 6] = 0.2
    boxed = _token_image(v, t)
    tagged = _token_image(v, np.full((8, 8), BLOCK_UNKNOWN), label_kind="tag")
    # held-out normal blocks: distances 0.6-0.8 (distance belief 0 below the median 0.7)
    normal = _token_image(np.linspace(0.6, 0.8, 64).reshape(8, 8) ** 2, np.zeros((8, 8)), kind="normal",
                          label_kind=None)
    material = SimpleNamespace(bank=SimpleNamespace(features=np.zeros((1, 4), np.float32)),
                               val=[normal], normals=[normal], defective=[boxed, tagged])
    before = [t == BLOCK_UNKNOWN]
    assert pseudo_masks(model, material, cfg, "cpu", threshold=0.5) == 1
    new = boxed.targets.numpy()
    assert new[1, 1] == BLOCK_ANOMALOUS and new[2, 2] == BLOCK_IGNORE and new[1, 2] == BLOCK_IGNORE
    # what the model file keeps: the boxed blocks and the ones made defective, as rows of 0/1
    (rec,) = pseudo_mask_record(before, material)
    assert rec["name"] == "x" and len(rec["boxed"]) == 8 and rec["boxed"][1] == "01100000"
    assert (read_rows(rec["boxed"]) == before[0]).all()
    assert (read_rows(rec["defective"]) == (new == BLOCK_ANOMALOUS)).all()
    with pytest.raises(ValueError, match="box regions"):
        pseudo_mask_record(before * 2, material)
    assert new[5, 6] == BLOCK_ANOMALOUS and (new[5:7, 5:7] == BLOCK_ANOMALOUS).sum() == 1   # the box's best
    assert (new[t == BLOCK_NORMAL] == BLOCK_NORMAL).all()        # outside the boxes: unchanged
    assert (tagged.targets.numpy() == BLOCK_UNKNOWN).all()       # tags stay with ResMixMatch



def test_boxes_on_grayscale_images_of_several_sizes_train_through_pseudo_masks(tiny_cfg, tmp_path, capsys):
    """The hidden sets mix sizes and grayscale: boxes, label paste (same-size normals only) and
    pseudo-masks must cope, and the model must predict every size."""
    import cv2
    from core import api
    from core.data.images import write_png
    from core.data.labels import ImageLabel
    from core.demo import surface
    rng = np.random.default_rng(1)
    sizes = [(64, 128), (128, 128), (128, 64)]
    normals, labels = [], []
    for i in range(12):
        h, w = sizes[i % 3]
        img = cv2.cvtColor(cv2.resize(surface(rng), (w, h)), cv2.COLOR_RGB2GRAY)
        if i >= 8:       # a dark speck, boxed
            cy, cx = h // 2, w // 3
            cv2.circle(img, (cx, cy), 4, 20, -1)
        p = tmp_path / ("bad" if i >= 8 else "good") / f"{i}.png"
        write_png(p, np.dstack([img] * 3))
        if i >= 8:
            labels.append(ImageLabel(p, width=w, height=h, boxes=[RotatedBox(cx, cy, 12, 12, 20)]))
        else:
            normals.append(p)
    cfg = tiny_cfg.updated({"train": {"paste_per_label": 2, "real_val_min_labelled": 4}})
    start = api.fit(normals, tmp_path / "start.pt", cfg, "cpu")
    events = []
    b = api.fit(normals, tmp_path / "boxes.pt", cfg, "cpu", labels=labels, init_from=start,
                progress=events.append)
    assert any("pseudo-masks for" in e.message for e in events if e.stage == "log")
    assert any("label paste:" in e.message for e in events if e.stage == "log")
    assert len(b.validation["real_defect_images"]) == 1 and np.isfinite(b.validation["val_real_ap"])
    # the model file keeps each trained box image's pseudo-mask (and those of their pasted copies):
    # inside its boxes, at least one block
    recs = b.training["pseudo_masks"]
    own = [r["name"] for r in recs if "-pasted-on-" not in r["name"]]
    assert len(own) == 3 and set(own) <= {Path(lab.image).name for lab in labels}
    assert len(recs) > 3
    for r in recs:
        boxed, bad = read_rows(r["boxed"]), read_rows(r["defective"])
        assert boxed.any() and bad.any() and not (bad & ~boxed).any()
    assert "pseudo_masks" not in start.training
    from core.deploy.modelfile import ModelBundle
    assert ModelBundle.load(tmp_path / "boxes.pt").training["pseudo_masks"] == recs
    counts = b.pseudo_mask_counts()
    assert counts["images"] == len(recs) and 0 < counts["defective"] <= counts["boxed"]
    assert f"{counts['defective']} of {counts['boxed']} boxed blocks" in b.summary()
    assert start.pseudo_mask_counts() is None and "boxed" not in start.summary()
    import json
    from core.cli import main as cli
    capsys.readouterr()
    assert cli(["info", "--model", str(tmp_path / "boxes.pt")]) == 0
    text = capsys.readouterr().out
    assert json.loads(text[text.index("{"):])["training"]["pseudo_masks"] == counts
    res = api.predict(b, [labels[0].image, normals[1], normals[2]], tmp_path / "out", "cpu", maps="npy")
    for r, p in zip(res, [labels[0].image, normals[1], normals[2]]):
        assert np.load(r.map_file).shape == cv2.imread(str(p)).shape[:2]


@pytest.mark.parametrize("belief", ["swin", "max"])
def test_pseudo_masks_belief_the_swin_alone_or_with_the_distance(tiny_cfg, belief):
    """Decision 0022: by default a boxed block's belief is the start model's probability alone; a
    block far from the bank that the Swin calls normal (the normal blocks beside a thin fibre) is
    left unlabelled, where ``max`` with the distance belief would call it defective."""
    cfg = tiny_cfg.updated({"swin": {"mu": 8, "step": 8, "window": 8}, "semi": {"pseudo_belief": belief}})
    model = _Oracle()
    model.register_buffer("input_scale", torch.tensor(1.0))
    t = np.full((8, 8), BLOCK_NORMAL, np.int8)
    t[1:3, 1:3] = BLOCK_UNKNOWN
    v = np.zeros((8, 8), np.float32)
    v[1, 1] = 0.9                                   # the Swin is sure of this one
    boxed = _token_image(v, t)
    far = boxed.feats.float()
    far[2, 1, 1] = 2.0                              # far from the bank, probability 0
    boxed.feats = far.half()
    normal = _token_image(np.linspace(0.6, 0.8, 64).reshape(8, 8) ** 2, np.zeros((8, 8)), kind="normal",
                          label_kind=None)
    material = SimpleNamespace(bank=SimpleNamespace(features=np.zeros((1, 4), np.float32)),
                               val=[normal], normals=[normal], defective=[boxed])
    assert pseudo_masks(model, material, cfg, "cpu", threshold=0.5) == 1
    new = boxed.targets.numpy()
    assert new[1, 1] == BLOCK_ANOMALOUS
    assert new[2, 1] == (BLOCK_IGNORE if belief == "swin" else BLOCK_ANOMALOUS)


def test_pseudo_belief_is_checked():
    from core.config import ConfigError, preset
    assert preset("cpu").semi.pseudo_belief == preset("paper").semi.pseudo_belief == "swin"
    with pytest.raises(ConfigError, match="semi.pseudo_belief"):
        preset("cpu").updated({"semi": {"pseudo_belief": "distance"}}).validate()
