"""The map's pixel-contrast refinement (core/eval/anomaly_map.refine_by_contrast, decision 0028):
what it raises and keeps, that the image score is the model's, how it is switched, old models,
and the viewer's copy of the map."""
from __future__ import annotations

import numpy as np
import pytest

from core.config import Config, ConfigError
from core.eval.anomaly_map import (contrast_kernel, image_map, output_map, pixel_contrast,
                                   refine_by_contrast)


def _paper(seed=0, hw=(64, 64), speck=(30, 30)):
    """Grey noise around 150 with a dark 3 x 3 speck."""
    rng = np.random.default_rng(seed)
    g = np.clip(150 + rng.normal(0, 4, hw), 0, 255)
    y, x = speck
    g[y - 1:y + 2, x - 1:x + 2] = 90
    return np.repeat(g.astype(np.uint8)[..., None], 3, axis=2)


def test_a_speck_stands_out_and_a_typical_pixel_is_one():
    z = pixel_contrast(_paper(), (64, 64), 9)
    assert z[30, 30] > 10 * np.median(z)
    assert abs(float(np.median(z)) - 1.0) < 1e-6
    far = np.ones((64, 64), bool)
    far[26:35, 26:35] = False
    assert z[far].max() < z[29:32, 29:32].min()
    assert not pixel_contrast(np.full((32, 32, 3), 77, np.uint8), (32, 32), 9).any()    # flat: nothing


def test_the_window_is_counted_in_blocks_of_the_map():
    assert contrast_kernel((256, 256), (32, 32), 2.0) == 33      # 8 map px a block: 16 each side
    assert contrast_kernel((128, 256), (16, 32), 1.5) == 25
    assert contrast_kernel((64, 64), (32, 32), 0.1) == 1          # pixel_contrast takes at least 3


def test_refinement_raises_the_speck_inside_its_blob_and_keeps_typical_pixels():
    img = _paper()
    amap = np.full((64, 64), 0.1, np.float32)
    amap[22:39, 22:39] = 0.8                                     # a blob of about 2 blocks around it
    out = Config().output
    assert refine_by_contrast(amap, img, (8, 8), out.contrast, out.contrast_radius) is amap   # beta 0: the paper's map
    on = Config().updated({"output": {"contrast": 0.3}}).output
    r = refine_by_contrast(amap, img, (8, 8), on.contrast, on.contrast_radius)
    assert r[30, 30] > 1.5 * amap[30, 30]                        # the speck rises
    blob_rim = r[23, 23]
    assert r[30, 30] > 2 * blob_rim                              # above the rest of the blob
    z = pixel_contrast(img, (64, 64), contrast_kernel((64, 64), (8, 8), on.contrast_radius))
    typical = np.isclose(z, 1.0, atol=0.05)
    assert typical.any() and np.allclose(r[typical], amap[typical], rtol=0.02)


def test_image_map_keeps_the_models_score_and_needs_the_image():
    rng = np.random.default_rng(3)
    block = rng.random((8, 8)).astype(np.float32)
    img = _paper()
    on = Config().updated({"output": {"contrast": 0.2, "eval_size": 64}}).output
    off = Config().updated({"output": {"eval_size": 64}}).output
    m_on, s_on = image_map(block, (64, 64), on, image=img)
    m_off, s_off = image_map(block, (64, 64), off, image=img)
    assert s_on == s_off == float(output_map(block, (64, 64), off).max())
    assert not np.allclose(m_on, m_off)
    np.testing.assert_array_equal(m_off, image_map(block, (64, 64), off)[0])       # off: the image is unused
    with pytest.raises(ValueError, match="needs the image"):
        image_map(block, (64, 64), on)


def test_contrast_is_a_checked_setting_and_old_models_keep_their_maps():
    from core.deploy.modelfile import _with_legacy_defaults
    assert Config().output.contrast == 0.0 and Config().output.contrast_choice == "validation"
    with pytest.raises(ConfigError, match="output.contrast_choice"):
        Config().updated({"output": {"contrast_choice": "always"}}).validate()
    for bad in ({"contrast": -0.1}, {"contrast": float("nan")}, {"contrast_radius": 0}, {"contrast_radius": 40}):
        with pytest.raises(ConfigError, match="output.contrast"):
            Config().updated({"output": bad}).validate()
    saved = Config().to_dict()
    del saved["output"]["contrast"], saved["output"]["contrast_radius"]     # a model from before 0028
    assert Config.from_dict(_with_legacy_defaults(saved)).output.contrast == 0.0


def test_the_viewer_remakes_the_refined_map_from_the_display_record():
    from app.viewer.maps import needs_image, smoothed_map
    rng = np.random.default_rng(4)
    block = rng.random((8, 8)).astype(np.float32)
    img = _paper()
    rec = {"eval_size": 64, "gaussian_sigma": 4.0, "upsample": "nearest", "sharpness": 1.0,
           "contrast": 0.2, "contrast_radius": 2.0}
    core = Config().updated({"output": {k: v for k, v in rec.items()}}).output
    np.testing.assert_array_equal(smoothed_map(block, 64, 64, rec, img), image_map(block, (64, 64), core, image=img)[0])
    assert needs_image(rec) and not needs_image({k: v for k, v in rec.items() if k != "contrast"})


def _val_set(speck_defects: bool):
    """Validation maps whose blobs are 2 blocks wide around each defect: specks that stand out of
    their image (the refinement helps) or defects that look like their surroundings while the
    normal images carry high-contrast marks (it hurts)."""
    rng = np.random.default_rng(5)
    maps, greys, masks = [], [], []
    for i in range(6):
        img = _paper(seed=i)[..., 0].copy()
        mask = np.zeros((64, 64), bool)
        amap = rng.random((64, 64)).astype(np.float32) * 0.1
        if i % 2:
            y, x = 16 + 6 * i % 30, 20 + 5 * i % 30
            mask[y - 1:y + 2, x - 1:x + 2] = True
            amap[y - 8:y + 9, x - 8:x + 9] = 0.6 + 0.1 * rng.random((17, 17))
            img[y - 1:y + 2, x - 1:x + 2] = 90 if speck_defects else 150
            if not speck_defects:            # the blob's other pixels carry the contrast instead
                img[y - 6, x - 6:x + 7:3] = 60
        elif not speck_defects:
            img[::7, ::9] = 40                                        # marks on a normal image
            amap[::7, ::9] = 0.3
        maps.append(amap), greys.append(img), masks.append(mask)
    return maps, greys, [(8, 8)] * len(maps), masks


def test_validation_chooses_the_refinement_where_it_helps_and_not_where_it_hurts():
    from core.eval.calibration import choose_contrast
    out = Config().output
    beta, aps = choose_contrast(*_val_set(True), out)
    assert beta > 0 and aps[str(beta)] > aps["0.0"] + 0.1
    beta, aps = choose_contrast(*_val_set(False), out)
    assert beta == 0.0 and all(aps["0.0"] >= v for v in aps.values())
    maps, greys, grids, masks = _val_set(True)
    assert choose_contrast(maps, greys, grids, [np.zeros_like(m) for m in masks], out) == (0.0, {})


@pytest.mark.parametrize("method", ["semirest", "patchcore"])
def test_a_model_trained_with_the_choice_on_validation_keeps_what_validation_chose(method, demo_data, tmp_path):
    """The chosen beta is the saved model's ``output.contrast``: inference, the viewer's record and
    an export read it from there; the calibration keeps every beta's validation AP beside it."""
    from core import api
    from core.data.images import read_image
    from core.deploy.inference import Predictor
    from core.deploy.modelfile import ModelBundle
    from tests.conftest import tiny_config
    cfg = tiny_config().updated({"method": method})            # validation is the default
    path = tmp_path / f"{method}.pt"
    api.fit(sorted((demo_data / "train" / "good").glob("*.png")), path, cfg, "cpu", resume=False)
    b = ModelBundle.load(path)
    c = b.calibration["contrast"]
    assert c["choice"] == "validation" and set(c["val_pixel_ap"]) == {"0.0", "0.1", "0.3", "1.0"}
    best = max(c["val_pixel_ap"].values())
    assert c["val_pixel_ap"][str(c["beta"])] == best
    assert b.config.output.contrast == c["beta"]
    # and a fixed beta is what a model trained without the choice keeps
    fixed = tiny_config().updated({"method": method, "output": {"contrast": 0.3, "contrast_choice": "fixed"}})
    api.fit(sorted((demo_data / "train" / "good").glob("*.png")), tmp_path / "fixed.pt", fixed, "cpu", resume=False)
    f = ModelBundle.load(tmp_path / "fixed.pt")
    assert f.config.output.contrast == 0.3 and f.calibration["contrast"] == {"beta": 0.3, "choice": "fixed"}
    img = read_image(sorted((demo_data / "test").glob("*/*.png"))[-1])
    plain = ModelBundle.load(tmp_path / "fixed.pt")
    plain.config = plain.config.updated({"output": {"contrast": 0.0}})
    a, z = Predictor(f, "cpu").predict(img), Predictor(plain, "cpu").predict(img)
    assert a.score == z.score and not np.allclose(a.anomaly_map, z.anomaly_map)


def test_held_out_real_masks_choose_the_refinement_on_real_specks(tmp_path):
    """With pixel masks labelled, the held-out ones (train.real_val_fraction) choose beta instead of
    the synthetic defects, which reject it (decision 0028); on PIPED's real specks they take it."""
    from core import api
    from core.data.datasets import load_mvtec
    from core.data.protocols import make_protocol
    from core.deploy.modelfile import ModelBundle
    from tests.conftest import PIPED_ROOT, tiny_config
    if not (PIPED_ROOT / "PA_BDP01_TL" / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED_ROOT}")
    ds = load_mvtec(PIPED_ROOT, "PA_BDP01_TL")
    split = make_protocol(ds, "sup", 6, seed=0)
    api.fit(ds.train[:12], tmp_path / "sup.pt", tiny_config(), "cpu", labels=split.labels)
    c = ModelBundle.load(tmp_path / "sup.pt").calibration["contrast"]
    assert c["on"] == "held-out mask"
    assert c["beta"] > 0 and c["val_pixel_ap"][str(c["beta"])] > c["val_pixel_ap"]["0.0"]
    assert ModelBundle.load(tmp_path / "sup.pt").config.output.contrast == c["beta"]
    assert f"maps refined by pixel contrast (beta {c['beta']:g}, chosen on held-out mask)" in \
        ModelBundle.load(tmp_path / "sup.pt").summary()


def test_held_out_boxes_choose_it_too(tmp_path):
    """Boxes (their insides counted as the defect) choose beta as masks do: around a speck a box is
    tight, and the refinement moves the blob's mass onto the speck inside it."""
    from core import api
    from core.data.datasets import load_mvtec
    from core.data.protocols import make_protocol
    from core.deploy.modelfile import ModelBundle
    from tests.conftest import PIPED_ROOT, tiny_config
    if not (PIPED_ROOT / "PA_BDP01_TL" / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED_ROOT}")
    ds = load_mvtec(PIPED_ROOT, "PA_BDP01_TL")
    split = make_protocol(ds, "semi", 6, seed=0)
    api.fit(ds.train[:12], tmp_path / "unsup.pt", tiny_config(), "cpu")
    assert ModelBundle.load(tmp_path / "unsup.pt").calibration["contrast"]["on"] == "synthetic"
    api.fit(ds.train[:12], tmp_path / "semi.pt", tiny_config(), "cpu", labels=split.labels,
            init_from=tmp_path / "unsup.pt")
    c = ModelBundle.load(tmp_path / "semi.pt").calibration["contrast"]
    assert c["on"] == "held-out boxes"
    assert c["beta"] > 0 and c["val_pixel_ap"][str(c["beta"])] > c["val_pixel_ap"]["0.0"]


def test_held_out_block_cells_choose_it_as_boxes_do(tmp_path):
    """Block labels (the block tool's cells) are a region a person marked, as a box's inside is:
    the held-out ones choose beta on the same footing, and the model says so."""
    from core import api
    from core.data.datasets import load_mvtec
    from core.data.protocols import make_protocol
    from core.deploy.modelfile import ModelBundle
    from tests.conftest import PIPED_ROOT, tiny_config
    if not (PIPED_ROOT / "PA_BDP01_TL" / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED_ROOT}")
    ds = load_mvtec(PIPED_ROOT, "PA_BDP01_TL")
    split = make_protocol(ds, "blocks", 6, seed=0)
    assert {lab.kind for lab in split.labels} == {"blocks"}
    api.fit(ds.train[:12], tmp_path / "blocks.pt", tiny_config(), "cpu", labels=split.labels)
    c = ModelBundle.load(tmp_path / "blocks.pt").calibration["contrast"]
    assert c["on"] == "held-out blocks"
    assert set(c["val_pixel_ap"]) == {"0.0", "0.1", "0.3", "1.0"}
    assert ModelBundle.load(tmp_path / "blocks.pt").config.output.contrast == c["beta"]


def test_evaluate_scores_other_betas_from_the_same_pass_as_their_own_evaluation(demo_data, tmp_path):
    """``also_contrast``: each beta's metrics from the one pass are what an evaluation with that
    contrast measures (the bench's per-beta diagnostic and its unrefined map), while the main
    metrics stay the model's own; an export, which has no block maps, refuses it."""
    from core import api
    from tests.conftest import kept_unsup_model
    model = kept_unsup_model(demo_data, tmp_path)
    res = api.evaluate(model, demo_data.parent, demo_data.name, device="cpu", also_contrast=(0.0, 0.3, 1.0))
    assert set(res.by_contrast) == {0.0, 0.3, 1.0}
    assert res.metrics == api.evaluate(model, demo_data.parent, demo_data.name, device="cpu").metrics
    assert res.by_contrast[0.0] == pytest.approx(res.metrics, abs=1e-12)    # the model's beta is 0
    for beta in (0.3, 1.0):
        alone = api.evaluate(model, demo_data.parent, demo_data.name, device="cpu", contrast=beta).metrics
        assert res.by_contrast[beta] == pytest.approx(alone, abs=1e-12)
    assert res.by_contrast[1.0]["pixel_ap"] != res.by_contrast[0.0]["pixel_ap"]
    assert res.by_contrast[1.0]["image_auroc"] == res.metrics["image_auroc"]       # scores are the model's
    assert api.evaluate(model, demo_data.parent, demo_data.name, device="cpu").by_contrast == {}
    with pytest.raises(ConfigError, match="also_contrast"):
        api.evaluate(tmp_path / "export", demo_data.parent, demo_data.name, runtime="onnxruntime",
                     also_contrast=(0.0,))
