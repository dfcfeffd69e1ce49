"""The fast inference path (core/learning/model.py predict_maps, Predictor.predict_batch) equals the
straightforward one: windows cut one by one and run through the whole model (predict_map), one
image at a time through the backbone, the search and the Swin. Speed itself is measured in the
bench (bench/speed.py), never here."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from core.config import SwinConfig, preset
from core.learning.model import ResidualSwin, even_chunks, predict_map, predict_maps, window_plan

TOL = 1e-5


def _swin(in_dim: int, cfg: SwinConfig, seed: int = 0) -> ResidualSwin:
    torch.manual_seed(seed)
    model = ResidualSwin(in_dim, cfg)
    with torch.no_grad():   # larger weights so that attention visibly mixes tokens across windows
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
            elif name.endswith("bias"):
                p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("n,most,sizes", [
    (9, 8, [5, 4]), (9, 16, [9]), (72, 16, [15, 15, 14, 14, 14]), (25, 4, [4, 4, 4, 4, 3, 3, 3]),
    (1, 8, [1]), (3, 0, [1, 1, 1]),
])
def test_even_chunks_cover_everything_in_near_equal_pieces(n, most, sizes):
    pieces = even_chunks(n, most)
    assert [p.stop - p.start for p in pieces] == sizes
    assert pieces[0].start == 0 and pieces[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))


@pytest.mark.parametrize("shape,window,mu,step", [
    ((32, 32), 8, 16, 8),     # the cpu preset: windows on the attention grid, first block shared
    ((24, 40), 8, 16, 4),     # windows off the grid (starts at 4): only the embedding is shared
    ((8, 16), 8, 16, 8),      # map smaller than mu: one window
    ((40, 24), 4, 8, 4),      # flush last windows (starts 0, 4, ..., 32) on a 4-token grid
])
def test_predict_maps_equals_window_by_window(shape, window, mu, step):
    cfg = SwinConfig(embed_dim=24, num_heads=3, depth=4, window=window, mu=mu, step=step, drop_path=0.0)
    model = _swin(6, cfg)
    tokens = torch.rand(3, *shape, 6, generator=torch.Generator().manual_seed(1))
    fast = predict_maps(model, tokens, mu, step)
    for i in range(3):
        ref = predict_map(model, tokens[i], mu, step)
        assert (fast[i] - ref).abs().max().item() <= TOL
    # Small chunks give the same result as one forward.
    assert (predict_maps(model, tokens, mu, step, max_windows=2) - fast).abs().max().item() <= TOL
    nobag = predict_maps(model, tokens, mu, step, bagging=False)
    assert (nobag[1] - predict_map(model, tokens[1], mu, step, bagging=False)).abs().max().item() <= TOL
    # The maps vary over the image (a constant map would hide a wrong window placement).
    assert fast.std().item() > 1e-3


def test_window_plan_counts_and_alignment():
    plan = window_plan(24, 40, 16, 4)
    count = plan.count.view(24, 40)
    assert count[0, 0] == 1 and count.min() >= 1
    assert count[12, 20] == 12         # row starts 0, 4, 8 x column starts 8, 12, 16, 20
    assert not plan.aligned(8) and window_plan(32, 32, 16, 8).aligned(8)


def test_predict_maps_generic_model():
    """Any model (not a ResidualSwin) still runs window by window through its forward."""
    class Mean(torch.nn.Module):
        def forward(self, x):   # each window's own mean as the anomalous logit
            m = x.mean(dim=(1, 2, 3), keepdim=True).expand(*x.shape[:3], 1)
            return torch.cat([torch.zeros_like(m), m], -1)
    tokens = torch.rand(2, 12, 20, 3)
    fast = predict_maps(Mean(), tokens, 8, 4)
    for i in range(2):
        assert (fast[i] - predict_map(Mean(), tokens[i], 8, 4)).abs().max().item() <= TOL


# ---------------------------------------------------------------------------------------------
# The whole path on real images
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_model(piped):
    """A cpu-preset model built without training: a bank of real features of 4 training normals
    and a Swin with random, large weights (the path, not the weights, is under test)."""
    from core.data.datasets import prepare_image
    from core.data.images import read_image
    from core.deploy.modelfile import ModelBundle
    from core.embedding.bank import build_bank
    from core.embedding.features import Encoder
    from core.learning.model import build_model
    cfg = preset("cpu")
    enc = Encoder(cfg.features, "cpu")
    category = piped / "PA_BDP01_TL"
    normals = sorted((category / "train" / "good").glob("*.png"))[:4]
    feats = enc.encode([prepare_image(read_image(p), cfg.features.image_size,
                                      cfg.features.size_multiple) for p in normals])
    bank = build_bank([f.reshape(-1, f.shape[-1]).numpy() for f in feats], 0.25, 128, 10,
                      1_000_000, 0)
    model = build_model(enc.dim, cfg, 0.05)
    model.load_state_dict(_swin(enc.dim, cfg.swin).state_dict(), strict=False)
    bundle = ModelBundle(cfg, enc.backbone_name, enc.dim, bank.state(), model.state_dict(), 0.05)
    paths = sorted((category / "test").rglob("*.png"))[::9][:8]
    return bundle, enc, bundle.bank("cpu"), bundle.swin("cpu"), [read_image(p) for p in paths]


def _reference(bundle, enc, bank, swin, img, bagging, out_hw):
    """The straightforward computation of one image, stage by stage."""
    from core.data.datasets import prepare_image
    from core.embedding.residuals import residual
    from core.eval.anomaly_map import eval_hw, output_map
    from core.learning.fusion import fuse
    from core.learning.model import model_tokens
    cfg = bundle.config
    x = prepare_image(img, cfg.features.image_size, cfg.features.size_multiple)
    f = enc.encode([x])[0]
    dist, idx = bank.nearest(f)
    r = residual(f, torch.from_numpy(bank.features)[torch.from_numpy(idx)], cfg.bank.residual)
    with torch.no_grad():
        block = predict_map(swin, model_tokens(swin, r), cfg.swin.mu, cfg.swin.step, bagging).numpy()
    w = float((bundle.calibration.get("fusion") or {}).get("weight", 0.0))
    if w:
        block = fuse(block, dist, w, bundle.calibration["fusion"]["d_ref"])
    ev = eval_hw(img.shape[1], img.shape[0], cfg.output.eval_size)
    amap = output_map(block, ev, cfg.output)
    score = float(amap.max())
    if out_hw != ev:
        amap = cv2.resize(amap, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    return block, amap, score


@pytest.mark.parametrize("fusion_weight", [0.0, 0.5])
def test_predictor_equals_reference_on_real_images(real_model, fusion_weight):
    import dataclasses
    from core.deploy.inference import Predictor
    bundle, enc, bank, swin, imgs = real_model
    if fusion_weight:
        bundle = dataclasses.replace(bundle, calibration={"fusion": {"weight": fusion_weight, "d_ref": 2.0}})
    imgs = list(imgs)
    # two other sizes, so that a batch holds groups of different model-input sizes
    imgs[2] = cv2.resize(imgs[2], (200, 96))
    imgs[5] = cv2.resize(imgs[5], (80, 150))
    out_hws = [im.shape[:2] for im in imgs]
    for bagging in (True, False):
        pred = Predictor(bundle, "cpu", bagging=bagging)
        batch = pred.predict_batch(imgs, out_hws)
        single = pred.predict(imgs[0], out_hw=out_hws[0])
        assert set(single.timings_ms) == {"backbone", "search", "swin", "post"}
        for i, (img, got) in enumerate(zip(imgs, batch)):
            block, amap, score = _reference(bundle, enc, bank, swin, img, bagging, out_hws[i])
            assert got.anomaly_map.shape == img.shape[:2]
            # float32 agrees to a relative 1e-5: fused maps hold distances / d_ref, up to about 12
            # large, where the batched and the one-image searches round differently (1.1e-5 seen)
            tol = TOL * max(1.0, float(np.abs(block).max()))
            assert np.abs(got.block_map - block).max() <= tol
            assert np.abs(got.anomaly_map - amap).max() <= tol
            assert abs(got.score - score) <= tol
        assert np.abs(single.anomaly_map - batch[0].anomaly_map).max() <= TOL
        # the maps are not flat: the comparison above can see a misplaced window
        assert batch[0].block_map.std() > 1e-3


def test_api_predict_batches_and_keeps_outputs_before_an_unreadable_image(real_model, tmp_path):
    """api.predict scores 8 images at a time: the same scores as one at a time, and an unreadable
    image still stops the run naming it, after the images before it got their outputs."""
    from core import api
    from core.data.images import write_png
    from core.deploy.inference import Predictor
    from core.errors import InputError
    bundle, _, _, _, imgs = real_model
    paths = []
    for i, img in enumerate(imgs[:3] * 4):     # 12 images: a batch of 8 and one of 4
        paths.append(tmp_path / "in" / f"{i:02d}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        write_png(paths[-1], img)
    res = api.predict(bundle, paths, device="cpu")
    single = Predictor(bundle, "cpu")
    for p, r in zip(paths, res):
        assert abs(r.score - single.predict(imgs[int(p.stem) % 3]).score) <= TOL
    bad = tmp_path / "in" / "10.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="10.png"):
        api.predict(bundle, paths, out_dir=tmp_path / "out", device="cpu")
    assert sorted(p.name for p in (tmp_path / "out").glob("*_heatmap.png")) == \
        [f"{i:02d}_heatmap.png" for i in range(10)]


def test_bench_speed_measures_every_setting(real_model):
    """bench/speed.py's record (not its times): batch 1 and 8, with and without bagging, each
    beside the backbone at the same batch size, ratio = whole / backbone."""
    from bench.speed import measure
    bundle, _, _, _, imgs = real_model
    res = measure(bundle, imgs[:8], passes=1)
    got = {(r["batch"], r["bagging"]) for r in res["rows"]}
    assert got == {(1, True), (1, False), (8, True), (8, False)}
    for r in res["rows"]:
        assert r["ms"] > 0 and r["backbone_ms"] > 0
        assert r["ratio"] == pytest.approx(r["ms"] / r["backbone_ms"])
        assert set(r["stages_ms"]) == {"backbone", "search", "swin", "post"}
    with pytest.raises(ValueError, match="at least 8 images"):
        measure(bundle, imgs[:3])


# ---------------------------------------------------------------------------------------------
# --precision (core/deploy/precision.py, decision 0024)
# ---------------------------------------------------------------------------------------------
def test_bfloat16_runs_the_swin_only_and_stays_close(real_model):
    """bfloat16 changes the Swin's arithmetic (the maps differ from float32's) but not what it
    finds (within a few hundredths on real images), and leaves the backbone and search exact."""
    from core.deploy.inference import Predictor
    bundle, _, _, _, imgs = real_model
    imgs = list(imgs)
    ref, low = (Predictor(bundle, "cpu", precision=p) for p in ("float32", "bfloat16"))
    a, b = ref.predict_batch(imgs), low.predict_batch(imgs)
    diff = max(float(np.abs(x.block_map - y.block_map).max()) for x, y in zip(a, b))
    assert 0.0 < diff <= 0.1     # random, large weights (real models: bench/precision.py)
    # the same blocks stand out: per image, the block maps rank blocks alike
    for x, y in zip(a, b):
        assert np.corrcoef(x.block_map.ravel(), y.block_map.ravel())[0, 1] > 0.99
        assert y.block_map.dtype == np.float32
    # features and the neighbour search are untouched by the Swin's precision
    from core.data.datasets import prepare_image
    cfg = bundle.config
    x = [prepare_image(imgs[0], cfg.features.image_size, cfg.features.size_multiple)]
    assert torch.equal(ref.encoder.encode(x)[0], low.encoder.encode(x)[0])


def test_precision_errors_are_clear(real_model):
    from core.deploy.inference import Predictor
    from core.errors import ConfigError
    from core.methods import detector_class
    bundle, enc, _, _, _ = real_model
    with pytest.raises(ConfigError, match="float16 runs on a CUDA device only"):
        Predictor(bundle, "cpu", precision="float16")
    with pytest.raises(ConfigError, match="expected one of float32, bfloat16, float16"):
        Predictor(bundle, "cpu", precision="int4")
    # methods without a network to speed up say so instead of silently running float32
    with pytest.raises(ConfigError, match="patchcore method runs in float32 only"):
        detector_class("patchcore")(bundle, torch.device("cpu"), enc, None, "bfloat16")
