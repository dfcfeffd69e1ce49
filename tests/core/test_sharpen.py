"""The block map's sharpening at local maxima (core/eval/anomaly_map.sharpen, decision 0026): what it
keeps and lowers, how it enters the map, old models, and its exported form."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.config import Config, ConfigError
from core.deploy.exportgraph import sharpen_graph
from core.eval.anomaly_map import postprocess, sharpen


def test_sharpen_lowers_a_halo_and_keeps_peaks_and_ridges():
    b = np.zeros((5, 7), np.float32)
    b[2, 1] = 0.8                                   # a peak
    b[2, 2] = 0.4                                   # its halo: half the peak
    b[:, 5] = 0.6                                   # a ridge (a fibre): every block alike
    s = sharpen(b, 1.0)
    assert s[2, 1] == np.float32(0.8) and abs(s[2, 2] - 0.2) < 1e-6      # 0.4 * (0.4 / 0.8)
    assert np.allclose(s[:, 5], 0.6)
    assert np.array_equal(sharpen(b, 0.0), b)
    assert abs(sharpen(b, 2.0)[2, 2] - 0.1) < 1e-6                       # 0.4 * 0.5 ** 2


def test_sharpen_keeps_negative_scores_and_their_order():
    """REB's LDKNN score can be negative: those blocks stay as they are, below every positive one."""
    b = np.array([[-0.5, -0.2, 0.3], [0.1, -1.0, 0.6]], np.float32)
    s = sharpen(b, 1.0)
    neg = b <= 0
    assert np.array_equal(s[neg], b[neg])
    assert (s[~neg] > 0).all() and s[~neg].min() > s[neg].max()
    assert s[1, 2] == np.float32(0.6)                                      # the maximum of all
    assert abs(s[0, 2] - 0.3 * 0.5) < 1e-6                                # its neighbour, halved


def test_sharpen_at_the_border_sees_only_real_neighbours():
    b = np.array([[0.2, 0.1], [0.1, 0.1]], np.float32)
    s = sharpen(b, 1.0)
    assert s[0, 0] == np.float32(0.2)
    assert np.allclose(s[[0, 1, 1], [1, 0, 1]], 0.05)


def test_postprocess_applies_sharpness_before_upsampling():
    rng = np.random.default_rng(0)
    b = rng.random((6, 8)).astype(np.float32)
    want = postprocess(sharpen(b, 1.5), (48, 64), 4.0)
    assert np.array_equal(postprocess(b, (48, 64), 4.0, "nearest", 1.5), want)
    assert not np.allclose(postprocess(b, (48, 64), 4.0), want)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_the_exported_sharpening_equals_the_numpy_one(gamma):
    rng = np.random.default_rng(1)
    b = (rng.random((9, 11)) - 0.2).astype(np.float32)       # some negative blocks too
    b[4, 4] = 0.0
    got = sharpen_graph(torch.from_numpy(b), gamma).numpy()
    np.testing.assert_allclose(got, sharpen(b, gamma), atol=1e-6)


def test_sharpness_is_a_checked_setting_and_old_models_keep_their_maps():
    from core.deploy.modelfile import _with_legacy_defaults
    assert Config().output.sharpness == 1.0
    with pytest.raises(ConfigError, match="output.sharpness"):
        Config().updated({"output": {"sharpness": -1}}).validate()
    with pytest.raises(ConfigError, match="output.sharpness"):
        Config().updated({"output": {"sharpness": float("nan")}}).validate()
    saved = Config().to_dict()
    del saved["output"]["sharpness"]                          # a model file from before decision 0026
    assert Config.from_dict(_with_legacy_defaults(saved)).output.sharpness == 0.0
    assert Config.from_dict(_with_legacy_defaults(Config().to_dict())).output.sharpness == 1.0


def test_the_viewer_remakes_the_models_own_map_from_its_display_record():
    """app/viewer/maps.py: a record with sharpness remakes the core's map; an old record (no key)
    remakes the unsharpened map its model made."""
    from app.viewer.maps import smoothed_map
    rng = np.random.default_rng(2)
    b = rng.random((8, 8)).astype(np.float32)
    rec = {"eval_size": 64, "gaussian_sigma": 4.0, "upsample": "nearest"}
    assert np.array_equal(smoothed_map(b, 64, 64, {**rec, "sharpness": 1.0}),
                          postprocess(b, (64, 64), 4.0, "nearest", 1.0))
    assert np.array_equal(smoothed_map(b, 64, 64, rec), postprocess(b, (64, 64), 4.0, "nearest", 0.0))
