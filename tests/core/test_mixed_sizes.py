"""Data of every shape (issue 14, part 1): a dataset whose images all differ in size trains, evaluates
and predicts end to end; a problem that a few images of different sizes show is found by the dry run
before the bank of every image; a failure at the first validation keeps the steps before it; a
resumed model counts the seconds of every process."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch
import yaml

from core import api
from core.cli import main
from core.config import Config
from core.data.images import read_image, write_mask, write_png
from core.demo import surface
from core.errors import Cancelled, PreflightError
from core.learning import training
from tests.core.test_cli import TINY_FULL

# (width, height): the extremes of the public set that crashed (113x288 .. 599x244) scaled to
# the tiny preset, plus squares and near-squares; every image its own size
SIZES = [(57, 144), (150, 61), (128, 128), (96, 80), (71, 133), (160, 90), (101, 99), (64, 64),
         (144, 72), (88, 120), (123, 77), (66, 141)]


def _gray(rng, w, h):
    return cv2.cvtColor(cv2.resize(surface(rng), (w, h)), cv2.COLOR_RGB2GRAY)


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory):
    """An MVTec-layout category of grayscale images, each of its own size and aspect ratio."""
    root = tmp_path_factory.mktemp("mixed")
    cat = root / "MIX"
    rng = np.random.default_rng(3)
    for i, (w, h) in enumerate(SIZES):
        write_png(cat / "train" / "good" / f"{i:03d}.png", np.dstack([_gray(rng, w, h)] * 3))
    for i, (w, h) in enumerate([(140, 70), (80, 120), (100, 100)]):
        write_png(cat / "test" / "good" / f"{i:03d}.png", np.dstack([_gray(rng, w, h)] * 3))
    for i, (w, h) in enumerate([(150, 64), (70, 130), (112, 96)]):
        img = _gray(rng, w, h)
        mask = np.zeros((h, w), bool)
        cy, cx = h // 2, w // 2
        cv2.circle(img, (cx, cy), 6, 15, -1)
        mask[cy - 6:cy + 7, cx - 6:cx + 7] = True
        write_png(cat / "test" / "spot" / f"{i:03d}.png", np.dstack([img] * 3))
        write_mask(cat / "ground_truth" / "spot" / f"{i:03d}_mask.png", mask)
    return root


def _cfg(**train) -> Config:
    return Config.from_dict(TINY_FULL()).updated({"train": train})


def test_mixed_sizes_train_eval_predict_end_to_end(mixed_data, tmp_path, capsys):
    cfg = TINY_FULL()
    cfg["train"]["preflight_min_images"] = 8          # 12 normals: the dry run comes first
    cfg_file = tmp_path / "mixed.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    model = tmp_path / "m.pt"
    rc = main(["train", "--data", str(mixed_data), "--category", "MIX", "--out", str(model),
               "--config", str(cfg_file), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "dry run: ok" in err
    assert err.index("dry run: ok") < err.index("memory bank:")   # before the bank of every image

    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(model), "--data", str(mixed_data), "--category", "MIX",
                 "--device", "cpu", "--json-out", str(out)]) == 0
    import json
    res = json.loads(out.read_text())
    metrics = res.get("metrics", res)
    assert 0.0 <= metrics["pixel_ap"] <= 1.0 and np.isfinite(metrics["pixel_ap"])

    maps = tmp_path / "maps"
    test_dir = mixed_data / "MIX" / "test" / "spot"
    assert main(["predict", "--model", str(model), "--images", str(test_dir), "--out", str(maps),
                 "--device", "cpu", "--maps", "npy"]) == 0
    for p in sorted(test_dir.glob("*.png")):
        assert np.load(maps / f"{p.stem}.npy").shape == read_image(p).shape[:2]


def test_dry_run_finds_a_size_problem_before_the_bank_of_every_image(mixed_data, tmp_path, monkeypatch):
    """The crash that cost 34 minutes (validation stacked maps of different sizes) now costs
    seconds: the dry run meets it on a few images and nothing of the real run is built."""
    real_validate = training.validate

    def stacking_validate(model, items, *a, **k):
        np.stack([it.mask for it in items])            # what the old validation did
        return real_validate(model, items, *a, **k)
    monkeypatch.setattr(training, "validate", stacking_validate)
    normals = sorted((mixed_data / "MIX" / "train" / "good").glob("*.png"))
    events = []
    t0 = time.perf_counter()
    with pytest.raises(PreflightError) as err:
        api.fit(normals, tmp_path / "m.pt", _cfg(preflight_min_images=8), "cpu", progress=events.append)
    msg = str(err.value)
    assert "dry run" in msg and "ValueError" in msg and "stacking_validate" in msg
    assert sum(n.name in msg for n in normals) >= 4            # the images it ran on are named
    stages = {e.stage for e in events}
    assert "coreset" not in stages and "train" not in stages     # the real run never started
    assert not (tmp_path / "m.pt").exists() and not list(tmp_path.glob("m.pt*"))
    assert time.perf_counter() - t0 < 60


def test_no_dry_run_for_small_sets_or_when_off(mixed_data, tmp_path):
    normals = sorted((mixed_data / "MIX" / "train" / "good").glob("*.png"))
    events = []
    api.fit(normals, tmp_path / "m.pt", _cfg(preflight_min_images=0), "cpu", progress=events.append)
    assert not any(e.stage == "preflight" or "dry run" in e.message for e in events)


def test_a_failing_first_validation_keeps_the_steps_before_it(mixed_data, tmp_path, monkeypatch):
    """A checkpoint is written before the first validation, and resuming from it runs that
    validation and ends exactly where an uninterrupted run ends."""
    normals = sorted((mixed_data / "MIX" / "train" / "good").glob("*.png"))
    cfg = _cfg(preflight_min_images=0, checkpoint_every=20)     # no regular checkpoint before step 20
    whole = api.fit(normals, tmp_path / "whole.pt", cfg, "cpu")

    real_validate = training.validate

    def broken(*a, **k):
        raise RuntimeError("validation broke")
    monkeypatch.setattr(training, "validate", broken)
    out = tmp_path / "m.pt"
    with pytest.raises(RuntimeError, match="validation broke"):
        api.fit(normals, out, cfg, "cpu")
    ckpt = api.checkpoint_path(out)
    assert ckpt.exists()
    st = torch.load(ckpt, weights_only=True)
    assert st["step"] == 10 and st["pending_validation"] is not None

    monkeypatch.setattr(training, "validate", real_validate)
    events = []
    resumed = api.fit(normals, out, cfg, "cpu", progress=events.append)
    assert any("resumed" in e.message and "step 10" in e.message for e in events if e.stage == "log")
    assert [h["step"] for h in resumed.validation["history"]] == [10, 20]
    for k, v in whole.swin_state.items():
        assert torch.equal(v, resumed.swin_state[k]), k
    assert resumed.validation["history"][0]["val_pixel_ap"] == whole.validation["history"][0]["val_pixel_ap"]


def test_a_resumed_model_counts_the_seconds_of_every_process(mixed_data, tmp_path):
    normals = sorted((mixed_data / "MIX" / "train" / "good").glob("*.png"))
    cfg = _cfg(preflight_min_images=0)
    out = tmp_path / "m.pt"

    def slow_then_stop(ev):
        if ev.stage == "train" and ev.done == 5:
            time.sleep(2.0)            # the first process spends 2 s more before its step-10 checkpoint
        if ev.stage == "train" and ev.done >= 12:
            return False
    with pytest.raises(Cancelled):
        api.fit(normals, out, cfg, "cpu", progress=slow_then_stop)
    t0 = time.perf_counter()
    bundle = api.fit(normals, out, cfg, "cpu")
    second = time.perf_counter() - t0
    assert bundle.training["seconds"] >= second + 2.0
    assert bundle.training["train_seconds"] >= 2.0
