"""Learning from the defects users have: ResMixMatch pieces, the protocols, an end-to-end
semi-supervised fine-tune on real images, and clear errors for bad labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core import api
from core.data.datasets import load_mvtec, load_sample_mask
from core.data.geometry import BlockGrid
from core.data.images import read_image, write_mask
from core.deploy.inference import Predictor
from core.errors import LabelError
from core.methods import semirest
from core.data.labels import (BLOCK_NORMAL, BLOCK_UNKNOWN, FORMAT, ImageLabel, RotatedBox,
                              block_labels_from_mask, load_label, save_label)
from core.data.protocols import draw_anomalous, make_protocol
from core.deploy.modelfile import ModelBundle
from core.learning.losses import rampup, sharpen
from core.learning.resmixmatch import mixup_tokens


# ---------------------------------------------------------------------------------------------
# pieces of Algorithm 1
# ---------------------------------------------------------------------------------------------
def test_sharpen_hand_values():
    # T = 0.5: p^2 / (p^2 + (1-p)^2); p = 0.75 -> 0.5625 / (0.5625 + 0.0625) = 0.9
    p = torch.tensor([0.75, 0.5, 0.25, 0.0, 1.0])
    assert torch.allclose(sharpen(p, 0.5), torch.tensor([0.9, 0.5, 0.1, 0.0, 1.0]))
    # T = 1 leaves p unchanged
    assert torch.allclose(sharpen(p, 1.0), p)


def test_rampup_is_linear_then_clamped():
    # lambda_u = 5 over 400 steps: 100 -> 1.25, 200 -> 2.5; held at 5 after 400 (research code forgot)
    assert rampup(0, 400, 5.0) == 0.0
    assert rampup(100, 400, 5.0) == pytest.approx(1.25)
    assert rampup(200, 400, 5.0) == pytest.approx(2.5)
    assert rampup(400, 400, 5.0) == 5.0
    assert rampup(10_000, 400, 5.0) == 5.0


def test_mixup_label_arithmetic():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(12, dtype=torch.float32).view(6, 2)
    y = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.9, 0.2])
    xm, ym, perm = mixup_tokens(x, y, 0.75, g)
    # recover each token's lambda' from its first coordinate: xm = l x + (1 - l) x[perm]
    a, b = x[:, 0], x[perm, 0]
    same = a == b
    lam = torch.where(same, torch.ones_like(a), (xm[:, 0] - b) / (a - b).where(~same, torch.ones_like(a)))
    assert torch.all(lam[~same] >= 0.5 - 1e-6) and torch.all(lam <= 1 + 1e-6)   # lambda' = max(l, 1 - l)
    # the same lambda' mixes the label: y' = l y + (1 - l) y[perm]
    assert torch.allclose(ym[~same], (lam * y + (1 - lam) * y[perm])[~same], atol=1e-5)
    # and both coordinates of a token use one lambda
    assert torch.allclose(xm[:, 1], lam * x[:, 1] + (1 - lam) * x[perm, 1], atol=1e-4)
    assert sorted(perm.tolist()) == list(range(6))


def test_protocol_draw_is_stratified_and_seeded(piped):
    ds = load_mvtec(piped, "PA_FLR01_TL")
    a = draw_anomalous(ds.test, 10, seed=3)
    assert a == draw_anomalous(ds.test, 10, seed=3)
    assert a != draw_anomalous(ds.test, 10, seed=4)
    assert all(s.is_anomalous for s in a) and len({s.path for s in a}) == 10
    sup, semi, tag = (make_protocol(ds, p, 10, 3) for p in ("sup", "semi", "tag"))
    assert sup.moved == semi.moved == tag.moved          # same images under each protocol
    assert len(sup.test) == len(ds.test) - 10 and not set(sup.moved) & {s.path for s in sup.test}
    assert all(lab.kind == "mask" for lab in sup.labels)
    assert all(lab.kind == "boxes" and lab.boxes for lab in semi.labels)
    assert all(lab.tag == "defective" for lab in tag.labels)
    # one minimum-area box per connected component: every defect pixel lies inside the boxes
    from core.data.labels import rasterize_boxes
    for lab in semi.labels:
        sample = next(s for s in ds.test if s.path == lab.image)
        mask = load_sample_mask(sample, (lab.height, lab.width))
        inside = rasterize_boxes(lab.boxes, lab.width, lab.height)
        assert inside[mask].mean() > 0.97


# ---------------------------------------------------------------------------------------------
# end to end: boxes improve the heatmap on the boxed defects
# ---------------------------------------------------------------------------------------------
def _defect_auc(pred: Predictor, samples) -> float:
    from sklearn.metrics import roc_auc_score
    on, off = [], []
    for s in samples:
        img = read_image(s.path)
        m = load_sample_mask(s, img.shape[:2])
        lab = block_labels_from_mask(m, BlockGrid.for_image(img.shape[1], img.shape[0], 256, 8), 0.25, 0.01)
        b = pred.predict(img).block_map
        on += b[lab == 1].tolist()
        off += b[lab == 0].tolist()
    return roc_auc_score([1] * len(on) + [0] * len(off), on + off)


def _boxes_run(piped, tmp_path, train: dict, semi: dict):
    """An unsupervised start and a model fine-tuned from it on 6 boxed images of PA_BRG01_RL, and
    the defect AUC of each on the boxed images (small sizes, so it takes seconds)."""
    from core.config import preset
    torch.manual_seed(0)
    cfg = preset("cpu").updated({
        "swin": {"embed_dim": 48, "num_heads": 2, "depth": 2},
        "train": {"steps": 60, "val_every": 30, "checkpoint_every": 30, "warmup_steps": 10, **train},
        "semi": {"steps": 80, **semi},
    })
    ds = load_mvtec(piped, "PA_BRG01_RL")
    split = make_protocol(ds, "semi", 6, seed=0)
    start = api.fit(ds.train[:10], tmp_path / "unsup.pt", cfg, "cpu")
    events = []
    model = api.fit(ds.train[:10], tmp_path / "semi.pt", cfg, "cpu", labels=split.labels,
                    init_from=tmp_path / "unsup.pt", progress=events.append)
    boxed = [s for s in ds.test if s.path in set(split.moved)]
    aucs = (_defect_auc(Predictor(start, "cpu"), boxed),
            _defect_auc(Predictor(ModelBundle.load(tmp_path / "semi.pt"), "cpu"), boxed))
    return cfg, model, events, aucs


def test_resmixmatch_on_boxes_logs_its_losses_and_improves_on_boxed_defects(piped, tmp_path):
    cfg, semi, events, (auc_start, auc_semi) = _boxes_run(
        piped, tmp_path, {}, {"rampup_steps": 40, "lr": 1e-4, "boxes": "resmixmatch"})
    # the training log shows L_x and L_u separately, and lambda_u is ramped and clamped
    semi_ev = [e for e in events if e.stage == "train" and e.message == "ResMixMatch"]
    assert semi_ev and all({"l_x", "l_u", "l_f", "lambda_u"} <= set(e.metrics) for e in semi_ev)
    assert semi_ev[-1].metrics["lambda_u"] == cfg.semi.lambda_u
    assert semi.training["labels"] == {"boxes": 6}
    # both stages are in the history; the unsupervised stage was not re-run (init_from, no masks)
    stages = [h.get("stage") for h in semi.validation["history"]]
    assert "ResMixMatch" in stages
    # the fine-tuned model ranks the boxed defects' blocks better than its unsupervised start
    assert auc_semi > auc_start, (auc_start, auc_semi)


def test_boxes_as_pseudo_masks_fine_tune_and_improve_on_boxed_defects(piped, tmp_path):
    """The default: boxes become pseudo-masks (core/learning/pseudomask.py) and train like masks."""
    # without the known-defect bank (decision 0025), which would score these very blocks by their
    # own features: what is checked here is the fine-tuning alone
    cfg, semi, events, (auc_start, auc_semi) = _boxes_run(
        piped, tmp_path, {"real_val_fraction": 0.0, "known_defects_weight": 0.0}, {})
    assert cfg.semi.boxes == "pseudo_mask"
    stages = [h.get("stage") for h in semi.validation["history"]]
    assert "boxes (pseudo-masks)" in stages and "ResMixMatch" not in stages
    assert any("pseudo-masks for 6 images" in e.message for e in events if e.stage == "log")
    assert not list(tmp_path.glob("*.ckpt"))          # every stage's checkpoint is cleaned up
    assert auc_semi > auc_start, (auc_start, auc_semi)


@pytest.mark.parametrize("n_tags", [2, 4])
def test_tags_too_few_to_check_leave_the_model_at_its_start(piped, tmp_path, tiny_cfg, n_tags):
    """Decision 0023: with fewer defective tags than train.real_val_min_labelled nothing can check
    ResMixMatch on them, so it does not run and the model keeps its start (semi.unchecked_tags
    trains anyway); from that many on, some are held out and ResMixMatch runs."""
    ds = load_mvtec(piped, "PA_BRG01_RL")
    tags = [ImageLabel(s.path, tag="defective") for s in ds.test if s.is_anomalous][:n_tags]
    cfg = tiny_cfg.updated({"train": {"preflight_min_images": 0}})
    assert n_tags == 4 or n_tags < cfg.train.real_val_min_labelled
    start = api.fit(ds.train[:8], tmp_path / "start.pt", cfg, "cpu")
    events = []
    tagged = api.fit(ds.train[:8], tmp_path / "tags.pt", cfg, "cpu", labels=tags, init_from=start,
                     progress=events.append)
    logs = [e.message for e in events if e.stage == "log"]
    stages = [h.get("stage") for h in tagged.validation["history"]]
    same = all(torch.equal(tagged.swin_state[k], start.swin_state[k]) for k in start.swin_state)
    if n_tags == 2:
        assert any("too few for any to be held out" in m and "keeps its start" in m for m in logs), logs
        assert "ResMixMatch" not in stages and same
        forced = api.fit(ds.train[:8], tmp_path / "forced.pt", cfg.updated({"semi": {"unchecked_tags": True}}),
                         "cpu", labels=tags, init_from=start)
        assert "ResMixMatch" in [h.get("stage") for h in forced.validation["history"]]
    else:
        assert not any("too few for any to be held out" in m for m in logs)
        assert "ResMixMatch" in stages


# ---------------------------------------------------------------------------------------------
# bad labels
# ---------------------------------------------------------------------------------------------
def _image(tmp_path, name="a.png", size=(40, 30)):
    from core.data.images import write_png
    p = tmp_path / name
    write_png(p, np.full((size[1], size[0], 3), 128, np.uint8))
    return p


def _label_json(tmp_path, **fields) -> Path:
    img = _image(tmp_path)
    d = {"format": FORMAT, "image": img.name, "width": 40, "height": 30, **fields}
    p = tmp_path / "a.json"
    p.write_text(json.dumps(d))
    return p


def test_box_of_zero_size_is_refused(tmp_path):
    p = _label_json(tmp_path, boxes=[{"cx": 10, "cy": 10, "w": 0, "h": 5, "angle": 0}])
    with pytest.raises(LabelError, match="a.json.*zero or negative size"):
        load_label(p)


def test_angle_out_of_range_is_refused(tmp_path):
    p = _label_json(tmp_path, boxes=[{"cx": 10, "cy": 10, "w": 4, "h": 5, "angle": 400}])
    with pytest.raises(LabelError, match="a.json.*angle 400.*out of range"):
        load_label(p)


def test_mask_of_wrong_size_is_refused(tmp_path):
    img = _image(tmp_path)
    write_mask(tmp_path / "a_mask.png", np.zeros((10, 10), bool))
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"format": FORMAT, "image": img.name, "width": 40, "height": 30, "mask": "a_mask.png"}))
    with pytest.raises(Exception, match="a_mask.png.*10x10.*40x30"):
        load_label(p)


def test_label_for_missing_image_is_refused(tmp_path):
    p = tmp_path / "ghost.json"
    p.write_text(json.dumps({"format": FORMAT, "image": "ghost.png", "tag": "defective"}))
    with pytest.raises(LabelError, match="ghost.json.*does not exist.*ghost.png"):
        load_label(p)
    # and through the training API
    with pytest.raises(LabelError, match="ghost.png"):
        semirest.labelled_items([ImageLabel(image=tmp_path / "ghost.png", tag="defective")],
                            __import__("core.config", fromlist=["preset"]).preset("cpu"))


def test_label_size_must_match_the_image(tmp_path):
    img = _image(tmp_path, size=(40, 30))
    lab = ImageLabel(image=img, width=64, height=64, boxes=[RotatedBox(5, 5, 4, 4, 0)])
    from core.config import preset
    with pytest.raises(LabelError, match="64x64.*40x30"):
        semirest.labelled_items([lab], preset("cpu"))


def test_box_crossing_the_border_trains_and_unknown_blocks_follow_it(tmp_path):
    from core.config import preset
    img = _image(tmp_path, size=(64, 64))
    lab = ImageLabel(image=img, width=64, height=64, boxes=[RotatedBox(0, 32, 20, 10, 30)])
    item, = semirest.labelled_items([lab], preset("cpu"))
    x, targets, kind = item.image, item.targets, item.kind
    assert item.region is not None and item.region.shape == x.shape[:2] and item.region[:, :40].any()
    assert kind == "boxes" and x.shape == (256, 256, 3)
    assert (targets == BLOCK_UNKNOWN).any() and (targets == BLOCK_NORMAL).any()
    assert (targets[:, :3] == BLOCK_UNKNOWN).any() and (targets[:, 10:] == BLOCK_NORMAL).all()
    # save / load round trip of the JSON format keeps the box
    save_label(lab, tmp_path / "a.json")
    back = load_label(tmp_path / "a.json")
    assert back.boxes == lab.boxes and back.kind == "boxes"
