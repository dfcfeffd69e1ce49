"""End to end on real PIPED images: train on a few normals, then the heatmaps must be higher on
the true impurity blocks than on clean blocks, and the model file must be self-contained."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core import api
from core.data.datasets import load_mvtec, load_sample_mask
from core.data.geometry import BlockGrid
from core.data.images import read_image
from core.data.labels import block_labels_from_mask
from core.deploy.inference import Predictor
from core.deploy.modelfile import ModelBundle


@pytest.fixture(scope="module")
def trained(piped, tmp_path_factory):
    from core.config import preset
    torch.manual_seed(0)
    cfg = preset("cpu").updated({
        "swin": {"embed_dim": 48, "num_heads": 2, "depth": 2},
        "train": {"steps": 120, "val_every": 40, "checkpoint_every": 40, "warmup_steps": 10},
    })
    ds = load_mvtec(piped, "PA_FLR01_TL")
    out = tmp_path_factory.mktemp("e2e") / "model.pt"
    events = []
    bundle = api.fit(ds.train[:10], out, cfg, "cpu", progress=events.append, resume=False)
    return ds, out, bundle, events


def test_model_file_is_self_contained(trained):
    ds, out, bundle, events = trained
    loaded = ModelBundle.load(out)
    assert loaded.backbone == "tf_efficientnet_lite0"
    assert loaded.config.preset == "cpu"
    assert loaded.bank_state["features"].shape[1] == loaded.feature_dim == 152
    assert 0.0 <= loaded.validation["val_pixel_ap"] <= 1.0
    assert loaded.training["normal_images"] + loaded.training["val_images"] == 10
    # bank.include_val: after training the hold-outs join the bank (10 images x 32 x 32 x 10%)
    assert len(loaded.training["bank_images"]) == 10
    assert loaded.bank_state["features"].shape[0] == round(10 * 32 * 32 * loaded.config.bank.coreset_ratio)
    # fusion with the NN distance: its weight was chosen on validation and is recorded
    fusion = loaded.calibration["fusion"]
    assert fusion["d_ref"] > 0 and str(fusion["weight"]) in fusion["val_pixel_ap"]
    assert fusion["val_pixel_ap"][str(fusion["weight"])] == max(fusion["val_pixel_ap"].values())
    # the checkpoint used for resuming is gone once the model file is written
    assert not out.with_name(out.name + ".ckpt").exists()
    stages = {e.stage for e in events}
    assert {"features", "coreset", "synthesis", "neighbours", "train"} <= stages
    assert any(e.stage == "log" and "tf_efficientnet_lite0" in e.message for e in events)


def test_heatmap_higher_on_impurity_blocks(trained):
    ds, out, bundle, _ = trained
    pred = Predictor(ModelBundle.load(out), "cpu")
    defective = [s for s in ds.test if s.is_anomalous][:8]
    on, off = [], []
    for s in defective:
        img = read_image(s.path)
        mask = load_sample_mask(s, img.shape[:2])
        grid = BlockGrid.for_image(img.shape[1], img.shape[0], 256, 8)
        labels = block_labels_from_mask(mask, grid, 0.25, 0.01)
        block = pred.predict(img).block_map
        assert block.shape == (grid.rows, grid.cols)
        on += block[labels == 1].tolist()
        off += block[labels == 0].tolist()
    assert len(on) > 10
    from sklearn.metrics import roc_auc_score
    # impurity blocks score higher than clean blocks of the same images: on average, and as a
    # ranking (a random map gives 0.5; the bare nearest-neighbour distance gives about 0.95)
    assert np.mean(on) > np.mean(off)
    auc = roc_auc_score([1] * len(on) + [0] * len(off), on + off)
    assert auc > 0.85, auc


def test_image_scores_rank_defective_above_good(trained):
    ds, out, bundle, _ = trained
    res = api.evaluate(out, ds.root, samples=[s for s in ds.test if not s.is_anomalous][:6]
                       + [s for s in ds.test if s.is_anomalous][:6], device="cpu")
    assert set(res.metrics) == {"pixel_ap", "pro", "pixel_auroc", "image_auroc"}
    assert res.metrics["pixel_auroc"] > 0.8
    assert res.metrics["image_auroc"] > 0.7
    assert set(res.timings_ms) == {"backbone", "search", "swin", "post"}
