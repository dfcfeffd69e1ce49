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
        "train": {"steps": 120, "val_every": 40, "checkpoint_every": 40, "warmup_steps": 10,
                  "precision": "float32"},
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


def _impurity_auc(ds, model_path) -> tuple[float, float, float]:
    """Block AUROC of impurity blocks against clean blocks of 8 defective test images, and the
    mean score of each."""
    pred = Predictor(ModelBundle.load(model_path), "cpu")
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
    return roc_auc_score([1] * len(on) + [0] * len(off), on + off), float(np.mean(on)), float(np.mean(off))


def test_heatmap_higher_on_impurity_blocks(trained):
    ds, out, bundle, _ = trained
    # impurity blocks score higher than clean blocks of the same images: on average, and as a
    # ranking (a random map gives 0.5; the bare nearest-neighbour distance gives about 0.95)
    auc, on, off = _impurity_auc(ds, out)
    assert on > off
    assert auc > 0.85, auc


def test_training_in_bfloat16_learns_the_same(trained, tmp_path):
    """train.precision bfloat16 (decision 0024) runs the Swin's training passes under autocast:
    other weights than float32's (the arithmetic changed), stored as float32, and a model that
    finds the impurities as well. float16 on the CPU is refused before anything is built."""
    from core.errors import ConfigError
    ds, out, bundle, _ = trained
    cfg = bundle.config.updated({"train": {"precision": "bfloat16"}})
    low = api.fit(ds.train[:10], tmp_path / "bf16.pt", cfg, "cpu", resume=False)
    assert low.config.train.precision == "bfloat16" and low.training["precision"] == "bfloat16"
    assert bundle.training["precision"] == "float32"
    assert " in bfloat16" in low.summary() and " in bfloat16" not in bundle.summary()   # semirest info
    assert all(v.dtype == torch.float32 for v in low.swin_state.values() if v.is_floating_point())
    assert any(not torch.equal(a, low.swin_state[k]) for k, a in bundle.swin_state.items()
               if a.is_floating_point())
    auc, on, off = _impurity_auc(ds, tmp_path / "bf16.pt")
    assert on > off and auc > 0.85, auc
    with pytest.raises(ConfigError, match="float16 runs on a CUDA device only"):
        api.fit(ds.train[:10], tmp_path / "f16.pt", bundle.config.updated({"train": {"precision": "float16"}}),
                "cpu", resume=False)
    assert not (tmp_path / "f16.pt").exists()


def test_image_scores_rank_defective_above_good(trained):
    ds, out, bundle, _ = trained
    res = api.evaluate(out, ds.root, samples=[s for s in ds.test if not s.is_anomalous][:6]
                       + [s for s in ds.test if s.is_anomalous][:6], device="cpu")
    assert set(res.metrics) == {"pixel_ap", "pro", "pixel_auroc", "image_auroc"}
    assert res.metrics["pixel_auroc"] > 0.8
    assert res.metrics["image_auroc"] > 0.7
    assert set(res.timings_ms) == {"backbone", "search", "swin", "post"}


def test_auto_training_precision_follows_the_hardware(monkeypatch):
    """train.precision auto (the default) is bfloat16 only where the CPU multiplies it in hardware
    (emulated bfloat16 is slower than float32), and an explicit choice is kept as it is."""
    from core.config import preset
    from core.deploy import precision
    assert preset("cpu").train.precision == "auto" and preset("paper").train.precision == "auto"
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert precision.resolve_precision("auto", cpu) == "bfloat16"
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert precision.resolve_precision("auto", cpu) == "float32"
    assert precision.resolve_precision("bfloat16", cpu) == "bfloat16"
    assert precision.resolve_precision("float32", cpu) == "float32"
