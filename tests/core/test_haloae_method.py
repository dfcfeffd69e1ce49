"""HaloAE (core/methods/haloae.py): halo attention windows, CutPaste copies, the loss schedule, training,
the model file, and train / predict / eval through the CLI on real images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from core.cli import main
from core.config import HaloAEConfig, preset
from core.errors import ConfigError, InputError
from core.synthetic.cutpaste import AREA, cutpaste_patch, cutpaste_scar
from core.methods.haloae import (HaloAttention, TrainingMaps, build_haloae, channel_stats, crop_origin,
                                 loss_weights, ssim, train_autoencoder)
from core.deploy.modelfile import ModelBundle

# no colour jitter: the error is then measured on the images trained on (a jittered pool of one copy
# per normal misses the plain images)
TINY = {"width": 16, "latent": 8, "depth": 1, "heads": 2, "dim_head": 8, "batch": 2,
        "steps": 12, "pool_per_normal": 1, "lr": 3e-3, "jitter": 0.0}


# ---------------------------------------------------------------------------------------------
# Halo attention
# ---------------------------------------------------------------------------------------------
def test_halo_windows_and_masks_by_hand():
    a = HaloAttention(8, block=8, halo=4, heads=2, dim_head=4)
    assert a.window == 16
    assert a.padded_size(13, 21) == (16, 24)
    m = a.key_mask(13, 21)
    assert m.shape == (2 * 3, 16 * 16)                   # 2 x 3 blocks, a 16 x 16 window each
    # block (0, 0): window rows and cols -4..11; the image has rows 0..12, cols 0..20: 12 x 12 inside
    assert int(m[0].sum()) == 12 * 12
    # block (1, 2) (rows 8..15, cols 16..23): window rows 4..19 -> 4..12 (9), cols 12..27 -> 12..20 (9)
    assert int(m[5].sum()) == 9 * 9
    # an interior block of a large map sees its whole window
    assert bool(a.key_mask(32, 32).view(4, 4, -1)[1, 1].all())


@pytest.mark.parametrize("hw", [(13, 21), (8, 8), (32, 24), (5, 40), (3, 3)])
def test_halo_attention_keeps_any_map_size(hw):
    a = HaloAttention(12, block=8, halo=4, heads=3, dim_head=4)
    x = torch.randn(2, 12, *hw)
    assert a(x).shape == x.shape


def _direct_halo_attention(a: HaloAttention, x: torch.Tensor) -> torch.Tensor:
    """Halo attention written position by position: a query at (y, x) of block (by, bx) attends to
    the image positions of rows by*b - halo .. by*b + b + halo - 1 (and the same for columns)."""
    b, halo, heads, dh = a.block, a.halo, a.heads, a.dim_head
    _, _, h, w = x.shape
    q = a.q(x)[0].view(heads, dh, h, w)
    k, v = a.kv(x)[0].view(2, heads, dh, h, w)
    out = torch.zeros(heads, dh, h, w)
    for y in range(h):
        for xx in range(w):
            y0, x0 = (y // b) * b, (xx // b) * b
            keys = [(ky, kx) for ky in range(max(0, y0 - halo), min(h, y0 + b + halo))
                    for kx in range(max(0, x0 - halo), min(w, x0 + b + halo))]
            for hd in range(heads):
                logits = torch.stack([q[hd, :, y, xx] @ k[hd, :, ky, kx] * dh ** -0.5
                                      + a.rel_row[hd, ky - y + b + halo - 1] + a.rel_col[hd, kx - xx + b + halo - 1]
                                      for ky, kx in keys])
                wts = logits.softmax(0)
                out[hd, :, y, xx] = sum(wt * v[hd, :, ky, kx] for wt, (ky, kx) in zip(wts, keys))
    return a.out(out.reshape(1, heads * dh, h, w))


def test_halo_attention_equals_the_direct_computation_on_an_odd_map():
    torch.manual_seed(0)
    a = HaloAttention(6, block=4, halo=2, heads=2, dim_head=3)
    with torch.no_grad():
        a.rel_row.normal_()
        a.rel_col.normal_()
    x = torch.randn(1, 6, 7, 10)                 # neither side a multiple of the block
    with torch.no_grad():
        np.testing.assert_allclose(a(x).numpy(), _direct_halo_attention(a, x).numpy(), atol=1e-5)


def test_halo_attention_is_local():
    """A change farther than the block and halo reach leaves a position's output unchanged."""
    torch.manual_seed(0)
    a = HaloAttention(4, block=8, halo=4, heads=1, dim_head=4)
    x = torch.randn(1, 4, 32, 32)
    y = x.clone()
    y[..., 20:, 20:] += 5.0                      # block (0, 0) reaches rows and cols up to 11
    with torch.no_grad():
        ox, oy = a(x), a(y)
    assert torch.equal(ox[..., :8, :8], oy[..., :8, :8])
    assert not torch.allclose(ox[..., 24:, 24:], oy[..., 24:, 24:])


class _UnfoldHalo(HaloAttention):
    """The key windows cut with ``Tensor.unfold``, as the layer did before it gathered them by
    index (the ONNX exporter cannot convert an unfold of a padded map): the reference."""

    def key_windows(self, t, h, w):
        win, b, halo = self.window, self.block, self.halo
        kv = torch.nn.functional.pad(t, (halo,) * 4).unfold(2, win, b).unfold(3, win, b)
        hp, wp = self.padded_size(h, w)
        inside = torch.zeros(1, 1, hp + 2 * halo, wp + 2 * halo)
        inside[..., halo:halo + h, halo:halo + w] = 1
        real = inside.unfold(2, win, b).unfold(3, win, b).reshape(-1, win * win) > 0.5
        return kv.reshape(*t.shape[:2], -1, win * win), real


@pytest.mark.parametrize("block,halo,hw", [(8, 4, (13, 21)), (8, 4, (16, 16)), (4, 2, (7, 10)),
                                           (8, 4, (3, 3)), (8, 4, (32, 24)), (4, 3, (9, 5))])
def test_gathered_halo_windows_give_the_unfold_layers_output_exactly(block, halo, hw):
    torch.manual_seed(0)
    a = HaloAttention(12, block, halo, heads=3, dim_head=4)
    ref = _UnfoldHalo(12, block, halo, heads=3, dim_head=4)
    ref.load_state_dict(a.state_dict())
    x = torch.randn(2, 12, *hw)
    with torch.no_grad():
        assert torch.equal(a(x), ref(x))
    assert torch.equal(a.key_mask(*hw), ref.key_windows(torch.zeros(1, 1, *a.padded_size(*hw)), *hw)[1])


def test_haloae_error_map_is_the_unfold_layers_exactly():
    """The whole auto-encoder (the cpu preset's shape), its attention swapped for the unfold form."""
    import copy
    torch.manual_seed(0)
    m = build_haloae(40, preset("cpu").haloae).eval()
    ref = copy.deepcopy(m)
    swapped = [mod for mod in ref.modules() if type(mod) is HaloAttention]
    for mod in swapped:
        mod.__class__ = _UnfoldHalo
    assert len(swapped) == 2 * preset("cpu").haloae.depth
    f = torch.randn(1, 16, 24, 40)
    assert torch.equal(m.error_map(f), ref.error_map(f))


@pytest.mark.parametrize("hw", [(32, 24), (8, 40), (16, 16)])
def test_haloae_reconstructs_maps_of_model_input_sizes(hw):
    """The cpu preset's model inputs are multiples of 64 px, i.e. maps of multiples of 8 positions,
    and need not be square."""
    h = preset("cpu").haloae
    m = build_haloae(152, h).eval()
    f = torch.randn(2, *hw, 152)
    with torch.no_grad():
        z = m.standardise(f)
        assert z.shape == (2, 152, *hw) and m(z).shape == z.shape
        assert m.classify(m(z)).shape == (2, 2)
    assert m.error_map(f).shape == (2, *hw)


# ---------------------------------------------------------------------------------------------
# CutPaste, crops, losses
# ---------------------------------------------------------------------------------------------
def _image(seed=0, hw=(96, 128)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*hw, 3), dtype=np.uint8)


@pytest.mark.parametrize("make", [cutpaste_patch, cutpaste_scar])
def test_cutpaste_changes_only_its_mask_and_repeats_with_a_seed(make):
    img = _image()
    for seed in range(20):
        out, mask = make(img, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == img.shape and mask.any()
        assert np.array_equal(out[~mask], img[~mask])
        assert (out[mask] != img[mask]).any()
        again, mask2 = make(img, np.random.default_rng(seed))
        assert np.array_equal(again, out) and np.array_equal(mask, mask2)


def test_cutpaste_patch_area_and_scar_size():
    img = _image(hw=(256, 256))
    areas = [cutpaste_patch(img, np.random.default_rng(s))[1].mean() for s in range(30)]
    assert AREA[0] * 0.9 <= min(areas) and max(areas) <= AREA[1] * 1.1
    scars = [cutpaste_scar(img, np.random.default_rng(s))[1].sum() for s in range(30)]
    assert 2 * 10 * 0.5 <= min(scars) and max(scars) <= 16 * 25 * 1.3   # width x length, rotated


def test_crop_origin_stays_on_the_block_grid_and_covers_the_centre():
    rng = np.random.default_rng(0)
    for _ in range(50):
        o = crop_origin(32, 16, 8, rng, None)
        assert o in (0, 8, 16)
        c = float(rng.uniform(0, 32))
        o = crop_origin(32, 16, 8, rng, c)
        assert o % 8 == 0 and o <= c < o + 16
    assert crop_origin(12, 16, 8, rng, 3.0) == 0          # map smaller than the crop: all of it
    assert crop_origin(20, 16, 8, rng, 19.0) == 4         # only the last start covers row 19


def test_loss_schedule_moves_from_the_head_to_the_reconstruction():
    head0, rec0 = loss_weights(0.0)
    head1, rec1 = loss_weights(1.0)
    assert head0 + rec0 == pytest.approx(1) and head1 + rec1 == pytest.approx(1)
    # research code at epoch 0: head 0.6 / (1 + e^-2.8) + 0.4 = 0.965, recon 1.2 - 1.2 / (1 + e^-3.75) = 0.0275
    assert head0 == pytest.approx(0.965 / (0.965 + 0.0275), abs=2e-3)
    # epoch 250: head 0.4 (to 1e-4), recon 1.2 (to 1e-4)
    assert rec1 == pytest.approx(1.2 / 1.6, abs=1e-3)
    assert loss_weights(0.5, cutpaste_weight=0.0) == (0.0, 1.0)
    assert loss_weights(0.2, 2.0)[0] > loss_weights(0.2, 1.0)[0]


def test_ssim_is_one_for_equal_maps_and_lower_for_noise():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, 16)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(x, x + torch.randn_like(x)).item() < 0.7


def test_config_checks_and_old_configs():
    with pytest.raises(ConfigError, match="haloae.ssim_window"):
        preset("cpu").updated({"haloae": {"ssim_window": 10}}).validate()
    with pytest.raises(ConfigError, match="haloae.heads"):
        preset("cpu").updated({"haloae": {"heads": 0}}).validate()
    d = preset("cpu").to_dict()
    del d["haloae"]                                       # a config written before HaloAE
    from core.config import Config
    assert Config.from_dict(d).haloae == HaloAEConfig()
    assert preset("paper").haloae == HaloAEConfig()       # the paper preset: the paper's sizes


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_training(tmp_path_factory):
    """Encoder features of a few generated normals at 128 px (fast, no outside data)."""
    torch.set_num_threads(1)
    from core.data.datasets import prepare_image, read_images
    from core.demo import make_dataset
    from core.embedding.features import Encoder
    root = make_dataset(tmp_path_factory.mktemp("demo"), n_train=4, n_good=1, n_bad=1)
    cfg = preset("cpu").updated({"features": {"image_size": 128}, "haloae": TINY})
    imgs = [prepare_image(i, 128, 64) for i in read_images(sorted((root / "train" / "good").glob("*.png")))]
    return cfg, imgs, Encoder(cfg.features, "cpu")


def _fit(cfg, imgs, encoder, steps):
    h = cfg.updated({"haloae": {"steps": steps}}).haloae
    torch.manual_seed(0)
    plain = encoder.encode(imgs, with_position=False)
    mean, std = channel_stats(plain)
    model = build_haloae(encoder.dim, h, mean, std)
    history = train_autoencoder(model, TrainingMaps(imgs, encoder, h, 0), h, torch.device("cpu"))
    return model, torch.stack(plain), history


def test_training_reduces_the_reconstruction_error_and_repeats_with_a_seed(tiny_training):
    cfg, imgs, encoder = tiny_training
    untrained, feats, _ = _fit(cfg, imgs, encoder, steps=1)
    before = untrained.eval().error_map(feats).mean().item()
    model, _, history = _fit(cfg, imgs, encoder, steps=150)
    after = model.error_map(feats).mean().item()
    assert after < 0.8 * before, (before, after)      # measured: 1.05 -> 0.73
    assert np.mean([x["mse"] for x in history[-10:]]) < np.mean([x["mse"] for x in history[:10]])
    again, _, _ = _fit(cfg, imgs, encoder, steps=150)
    for (k, v), w in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k


def test_training_maps_come_in_thirds_with_crops(tiny_training):
    cfg, imgs, encoder = tiny_training
    h = cfg.updated({"haloae": {"crop": 8, "batch": 3}}).haloae
    maps = TrainingMaps(imgs, encoder, h, seed=0)
    x = maps.batch(0)
    assert x.shape == (9, 8, 8, encoder.dim)
    assert torch.equal(x, maps.batch(0)) and not torch.equal(x, maps.batch(1))
    fresh = TrainingMaps(imgs, encoder, cfg.updated({"haloae": {"pool_per_normal": 0}}).haloae, seed=0)
    assert fresh.pool is None and fresh.batch(0).shape == (3 * TINY["batch"], 16, 16, encoder.dim)


# ---------------------------------------------------------------------------------------------
# The method: CLI train / predict / eval on real images, the model file
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def haloae_model(tmp_path_factory):
    from tests.conftest import PIPED
    if not (PIPED / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED}")
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("halo")
    cfg = d / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"preset": "cpu", "features": {"image_size": 128},
                                   "haloae": {**TINY, "steps": 40, "batch": 4}}), encoding="utf-8")
    out = d / "haloae.pt"
    assert main(["train", "--data", str(PIPED.parent), "--category", PIPED.name, "--out", str(out),
                 "--method", "haloae", "--config", str(cfg), "--device", "cpu"]) == 0
    return out


def test_model_records_method_weights_and_calibration(haloae_model):
    b = ModelBundle.load(haloae_model)
    assert b.method == "haloae" and b.swin_state == {} and len(b.bank_state["features"]) == 0
    assert b.config.haloae.steps == 40 and b.training["steps"] == 40
    assert b.training["normal_images"] == 20 and b.training["val_images"] == 4     # 15 % held out
    assert set(b.method_state) == set(build_haloae(b.feature_dim, b.config.haloae).state_dict())
    cal = b.calibration
    assert cal["map_scale"] > 0 and np.isfinite(cal["pixel_threshold"])
    assert np.median(cal["defect_image_scores"]) > np.median(cal["normal_image_scores"])


def test_save_load_round_trip_gives_identical_maps(haloae_model, tmp_path):
    from tests.conftest import PIPED
    from core.data.images import read_image
    from core.deploy.inference import Predictor
    imgs = [read_image(p) for p in sorted((PIPED / "test" / "impurity").glob("*.png"))[:3]]
    b = ModelBundle.load(haloae_model)
    copy = b.save(tmp_path / "copy.pt")
    first = Predictor(b, "cpu").block_maps(imgs)
    second = Predictor(ModelBundle.load(copy), "cpu").block_maps(imgs)
    for m1, m2 in zip(first, second):
        assert m1.shape == (16, 16) and np.array_equal(m1, m2)


def test_predict_and_eval_through_the_cli(haloae_model, tmp_path):
    from tests.conftest import PIPED
    out = tmp_path / "out"
    folder = PIPED / "test" / "impurity"
    assert main(["predict", "--model", str(haloae_model), "--images", str(folder), "--out", str(out),
                 "--maps", "npy", "--device", "cpu"]) == 0
    first = sorted(folder.glob("*.png"))[0]
    m = np.load(out / f"{first.stem}.npy")
    assert m.dtype == np.float32 and m.shape == (128, 128) and np.isfinite(m).all()
    res = tmp_path / "eval.json"
    assert main(["eval", "--model", str(haloae_model), "--data", str(PIPED.parent), "--category", PIPED.name,
                 "--device", "cpu", "--json-out", str(res)]) == 0
    metrics = json.loads(res.read_text(encoding="utf-8"))["metrics"]
    # reconstruction errors of standardised features rank defect pixels above clean ones even
    # for this 40-step model; the scores are never flipped
    assert metrics["pixel_auroc"] > 0.8, metrics              # measured: 0.93


def test_damaged_weights_are_refused_naming_the_file(haloae_model, tmp_path):
    raw = torch.load(haloae_model, weights_only=True)
    key = next(iter(raw["method_state"]))
    bad = dict(raw, method_state={k: v for k, v in raw["method_state"].items() if k != key})
    torch.save(bad, tmp_path / "missing.pt")
    with pytest.raises(InputError, match=r"missing\.pt.*missing \['" + key.replace(".", r"\.")):
        ModelBundle.load(tmp_path / "missing.pt")
    shaped = dict(raw, method_state={**raw["method_state"], key: torch.zeros(3)})
    torch.save(shaped, tmp_path / "shape.pt")
    with pytest.raises(InputError, match="shape.pt.*has shape"):
        ModelBundle.load(tmp_path / "shape.pt")
    torch.save(dict(raw, method_state={"x": "not a tensor"}), tmp_path / "str.pt")
    with pytest.raises(InputError, match="'method_state' must be a dictionary of weight tensors"):
        ModelBundle.load(tmp_path / "str.pt")
    torch.save(dict(raw, method_state={}), tmp_path / "empty.pt")
    with pytest.raises(InputError, match="without its auto-encoder weights"):
        ModelBundle.load(tmp_path / "empty.pt")


def test_a_model_file_from_before_method_weights_loads(tmp_path):
    cfg = preset("cpu")
    d = cfg.to_dict()
    del d["haloae"]
    bundle = ModelBundle(cfg, "tf_efficientnet_lite0", 152, {"features": torch.zeros(2, 152),
                         "owner": torch.zeros(2, dtype=torch.int32)}, {}, 1.0)
    raw = bundle.to_dict()
    raw["config"] = d
    del raw["method_state"]
    torch.save(raw, tmp_path / "old.pt")
    old = ModelBundle.load(tmp_path / "old.pt")
    assert old.method == "semirest" and old.method_state == {} and old.config.haloae == HaloAEConfig()


def test_steps_option_sets_the_chosen_methods_steps():
    from core.cli import _config, build_parser
    args = build_parser().parse_args(["train", "--data", "x", "--out", "m.pt", "--method", "haloae",
                                      "--steps", "7"])
    cfg = _config(args)
    assert cfg.haloae.steps == 7 and cfg.train.steps == preset("cpu").train.steps
    args = build_parser().parse_args(["train", "--data", "x", "--out", "m.pt", "--steps", "7"])
    assert _config(args).train.steps == 7
    args = build_parser().parse_args(["train", "--data", "x", "--out", "m.pt", "--method", "reb", "--steps", "70"])
    assert _config(args).reb.finetune_steps == 70
    args = build_parser().parse_args(["train", "--data", "x", "--out", "m.pt", "--method", "patchcore",
                                      "--steps", "7"])
    with pytest.raises(ConfigError, match="PatchCore has no training steps"):
        _config(args)


def test_haloae_refuses_defect_labels(tmp_path, demo_data):
    from core import api
    from core.data.labels import ImageLabel, RotatedBox
    img = next((demo_data / "test").glob("*/*.png"))
    lab = ImageLabel(img, boxes=[RotatedBox(10, 10, 20, 20, 0.0)])
    cfg = preset("cpu").updated({"method": "haloae"})
    with pytest.raises(ConfigError, match="HaloAE learns from normal images only"):
        api.fit(sorted((demo_data / "train" / "good").glob("*.png")), tmp_path / "m.pt", cfg, "cpu",
                labels=[lab])


def test_training_reports_its_steps_and_stops_when_cancelled(tmp_path, demo_data):
    from core import api
    from core.errors import Cancelled
    torch.set_num_threads(1)
    cfg = preset("cpu").updated({"method": "haloae", "features": {"image_size": 128},
                                 "haloae": {**TINY, "steps": 50}})
    seen = []

    def progress(ev):
        seen.append((ev.stage, ev.done, ev.total))
        return not (ev.stage == "train" and ev.done == 3)      # cancel at the third step

    out = tmp_path / "m.pt"
    with pytest.raises(Cancelled, match="train"):
        api.fit(sorted((demo_data / "train" / "good").glob("*.png")), out, cfg, "cpu", progress=progress)
    assert ("train", 1, 50) in seen and ("train", 3, 50) in seen and ("train", 4, 50) not in seen
    assert any(stage == "features" for stage, _, _ in seen)
    assert not out.exists()
