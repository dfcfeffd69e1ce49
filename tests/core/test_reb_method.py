"""REB as a method: LDKNN against hand-computed and brute-force references, the densities and the
adapted backbone kept in the model file, DefectMaker fine-tuning, and train / predict / eval
through the CLI on real PIPED images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core import api
from core.cli import main
from core.config import Config, preset
from core.deploy.modelfile import ModelBundle
from core.embedding.bank import MemoryBank
from core.errors import Cancelled, ConfigError, InputError
from core.methods.ldknn import ldknn, local_density


# ---- LDKNN ------------------------------------------------------------------------------------
def test_ldknn_on_a_hand_computed_toy_bank():
    # 1-D bank {0, 1, 3}, K = 1: densities 1 (0 -> 1), 1 (1 -> 0), 2 (3 -> 1)
    bank = MemoryBank(np.array([[0.0], [1.0], [3.0]], np.float32), np.array([0, 1, 2]))
    dens = local_density(bank, 1)
    np.testing.assert_allclose(dens, [1.0, 1.0, 2.0], atol=1e-6)
    q = np.array([[2.9], [0.4], [5.0]], np.float32)
    # 2.9: nearest 3 at 0.1, minus its density 2; 0.4: nearest 0 at 0.4 minus 1; 5: 2 - 2
    np.testing.assert_allclose(ldknn(bank, dens, q, 1.0), [-1.9, -0.6, 0.0], atol=1e-5)
    np.testing.assert_allclose(ldknn(bank, dens, q, 0.5), [-0.9, -0.1, 1.0], atol=1e-5)
    # leave-one-out: without owner 2 (the entry 3), 2.9 is matched to 1 (1.9 - 1)
    assert ldknn(bank, dens, q[:1], 1.0, exclude_owner=2)[0] == pytest.approx(0.9, abs=1e-5)


def _brute_density(x: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)                      # other entries only
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


def test_ldknn_matches_a_brute_force_numpy_reference():
    rng = np.random.default_rng(3)
    # a dense cluster and a sparse one, so densities differ by an order of magnitude
    x = np.concatenate([rng.normal(0, 0.1, (30, 6)), rng.normal(5, 2.0, (20, 6))]).astype(np.float32)
    x[7] = x[3]                                      # a duplicate: self need not come first
    owner = np.repeat(np.arange(10), 5)
    bank = MemoryBank(x, owner)                      # already sorted by owner: order kept
    k = 4
    dens = local_density(bank, k, chunk=7)           # chunks that do not divide the bank
    ref = _brute_density(x, k)
    np.testing.assert_allclose(dens, ref, rtol=1e-4, atol=1e-5)
    assert dens[30:].mean() > 5 * dens[:30].mean()
    q = rng.normal(2, 2.0, (3, 4, 6)).astype(np.float32)
    got = ldknn(bank, dens, q, 1.0)
    dq = np.sqrt(((q.reshape(-1, 1, 6).astype(np.float64) - x[None]) ** 2).sum(-1))
    nn = dq.argmin(1)
    want = (dq[np.arange(len(nn)), nn] - ref[nn]).reshape(3, 4)
    assert got.shape == (3, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # leave-one-out: entries of owner 0 are never the match
    dq[:, owner == 0] = np.inf
    nn = dq.argmin(1)
    want = (dq[np.arange(len(nn)), nn] - ref[nn]).reshape(3, 4)
    np.testing.assert_allclose(ldknn(bank, dens, q, 1.0, exclude_owner=0), want, rtol=1e-4, atol=1e-4)


def test_local_density_needs_more_entries_than_k():
    bank = MemoryBank(np.zeros((5, 3), np.float32), np.arange(5))
    with pytest.raises(ValueError, match="K=9.*5"):
        local_density(bank, 9)


# ---- config -----------------------------------------------------------------------------------
def test_reb_settings_presets_and_old_configs():
    assert preset("cpu").reb.finetune is False           # plain features on a CPU
    assert preset("paper").reb.finetune is True
    r = preset("paper").reb
    assert (r.ldknn_lambda, r.ldknn_k, r.finetune_lr) == (1.0, 9, 0.03)
    old = preset("cpu").to_dict()
    del old["reb"]                                       # a config saved before REB existed
    assert Config.from_dict(old).reb == Config().reb
    for bad in ({"ldknn_k": 0}, {"ldknn_lambda": -1.0}, {"finetune": True, "finetune_batch": 1},
                {"finetune_head_steps": 400}, {"finetune_grad_clip": -1.0}):
        with pytest.raises(ConfigError, match="reb\\."):
            preset("cpu").updated({"reb": bad}).validate()


# ---- model file -------------------------------------------------------------------------------
def _bundle(density=None, backbone_state=None) -> ModelBundle:
    cfg = preset("cpu").updated({"method": "reb"})
    state = {"features": torch.arange(12, dtype=torch.float32).reshape(4, 3),
             "owner": torch.tensor([0, 0, 1, 1], dtype=torch.int32)}
    if density is not None:
        state["density"] = density
    return ModelBundle(cfg, "tf_efficientnet_lite0", 3, state, {}, 1.0, backbone_state=backbone_state or {})


def test_densities_and_backbone_weights_round_trip_through_the_model_file(tmp_path):
    dens = torch.tensor([0.5, 1.5, 2.5, 3.5])
    w = {"conv.weight": torch.randn(2, 3, 3, 3)}
    _bundle(dens, w).save(tmp_path / "m.pt")
    b = ModelBundle.load(tmp_path / "m.pt")
    assert b.method == "reb"
    assert torch.equal(b.bank_state["density"], dens)
    assert set(b.backbone_state) == {"conv.weight"} and torch.equal(b.backbone_state["conv.weight"], w["conv.weight"])


def test_model_file_checks_the_density_and_backbone_fields(tmp_path):
    _bundle(torch.ones(3)).save(tmp_path / "short.pt")           # 3 densities for 4 entries
    with pytest.raises(InputError, match=r"short\.pt.*density.*one value per bank entry \(4\)"):
        ModelBundle.load(tmp_path / "short.pt")
    raw = _bundle(torch.ones(4)).to_dict()
    raw["backbone_state"] = {"w": "not a tensor"}
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(InputError, match=r"bad\.pt.*'backbone_state' must be a dictionary of weight tensors"):
        ModelBundle.load(tmp_path / "bad.pt")


def test_a_model_file_without_backbone_state_loads_with_imagenet_weights(tmp_path):
    raw = _bundle(torch.ones(4)).to_dict()
    del raw["backbone_state"]                                     # files written before it existed
    torch.save(raw, tmp_path / "old.pt")
    assert ModelBundle.load(tmp_path / "old.pt").backbone_state == {}


def test_reb_detector_refuses_a_bank_without_densities():
    from core.methods.reb import RebDetector
    with pytest.raises(InputError, match="no LDKNN densities"):
        RebDetector(_bundle(None), torch.device("cpu"), encoder=None)


# ---- DefectMaker fine-tuning ------------------------------------------------------------------
def test_defect_classes_cover_the_six_kinds():
    from core.methods.defect_finetune import CLASSES, draw_batch
    from core.synthetic.defectmaker import DefectMaker
    rng = np.random.default_rng(0)
    x = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    imgs, labels = draw_batch([x], 140, rng, {(64, 64): DefectMaker()})
    assert len(CLASSES) == 7 and set(labels.tolist()) == set(range(7))
    for img, lab in zip(imgs, labels):
        assert (lab == 0) == np.array_equal(img, x)               # class 0: the normal itself


def _tiny_reb(tiny_cfg, finetune: bool, steps: int = 6):
    return tiny_cfg.updated({"method": "reb", "reb": {
        "finetune": finetune, "finetune_steps": steps, "finetune_head_steps": 2, "finetune_batch": 4}})


@pytest.fixture(scope="module")
def few_normals():
    from tests.conftest import PIPED
    if not (PIPED / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED}")
    return sorted((PIPED / "train" / "good").glob("*.png"))[:6]


@pytest.mark.parametrize("finetune", [False, True])
def test_finetune_on_and_off_give_a_model_that_loads_and_predicts(tmp_path, tiny_cfg, few_normals, finetune):
    from core.data.images import read_image
    from core.deploy.inference import Predictor
    from core.embedding.features import Encoder
    from tests.conftest import PIPED
    out = tmp_path / "reb.pt"
    torch.set_num_threads(1)
    api.fit(few_normals, out, _tiny_reb(tiny_cfg, finetune), "cpu")
    b = ModelBundle.load(out)
    assert b.method == "reb" and b.config.reb.finetune is finetune
    assert b.bank_state["density"].shape == b.bank_state["features"].shape[:1]
    assert float(b.bank_state["density"].min()) > 0
    imagenet = Encoder(b.config.features, "cpu").extractor.net.state_dict()
    if finetune:
        assert b.training["finetune"]["steps"] == 6 and b.training["steps"] == 6
        assert set(b.backbone_state) == set(imagenet)
        changed = [k for k, v in b.backbone_state.items() if v.is_floating_point()
                   and not torch.equal(v, imagenet[k])]
        assert changed                                            # the backbone did move
        pred = Predictor(b, "cpu")                                # predict uses the adapted weights
        used = pred.encoder.extractor.net.state_dict()
        assert all(torch.equal(used[k], b.backbone_state[k]) for k in changed)
    else:
        assert b.backbone_state == {} and b.training["finetune"] == {}
        pred = Predictor(b, "cpu")
    img = read_image(sorted((PIPED / "test" / "impurity").glob("*.png"))[0])
    p = pred.predict(img)
    assert p.block_map.shape == (16, 16) and np.isfinite(p.anomaly_map).all()
    # LDKNN map = the nearest distance minus a density: recompute it from the bank
    from core.data.datasets import prepare_image
    f = pred.encoder.encode([prepare_image(img, 128, 64)], with_position=False)[0]
    ref = ldknn(b.bank("cpu"), b.bank_state["density"], f, 1.0)
    np.testing.assert_allclose(p.block_map, ref, rtol=1e-4, atol=1e-4)


def test_finetune_reports_progress_and_cancels(tmp_path, tiny_cfg, few_normals):
    seen = []

    def progress(ev):
        seen.append(ev)
        return not (ev.stage == "finetune" and ev.done == 3)       # cancel at the third step

    out = tmp_path / "reb.pt"
    with pytest.raises(Cancelled, match="finetune"):
        api.fit(few_normals, out, _tiny_reb(tiny_cfg, True, steps=20), "cpu", progress=progress)
    steps = [ev for ev in seen if ev.stage == "finetune"]
    assert [ev.done for ev in steps] == [1, 2, 3] and steps[0].total == 20
    assert {"loss", "acc"} <= set(steps[-1].metrics)
    assert not out.exists()


def test_reb_refuses_defect_labels(tmp_path, demo_data):
    from core.data.labels import ImageLabel, RotatedBox
    img = next((demo_data / "test").glob("*/*.png"))
    lab = ImageLabel(img, boxes=[RotatedBox(10, 10, 20, 20, 0.0)])
    cfg = preset("cpu").updated({"method": "reb"})
    with pytest.raises(ConfigError, match="REB learns from normal images only"):
        api.fit(sorted((demo_data / "train" / "good").glob("*.png")), tmp_path / "m.pt", cfg, "cpu",
                labels=[lab])


# ---- end to end on real images ----------------------------------------------------------------
@pytest.fixture(scope="module")
def reb_model(tmp_path_factory):
    from tests.conftest import PIPED
    if not (PIPED / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED}")
    out = tmp_path_factory.mktemp("reb") / "reb.pt"
    assert main(["train", "--data", str(PIPED.parent), "--category", PIPED.name, "--out", str(out),
                 "--method", "reb", "--device", "cpu"]) == 0
    return out


def test_train_predict_eval_through_the_cli(reb_model, tmp_path, capsys):
    from core.data.images import read_image, read_mask
    from tests.conftest import PIPED
    b = ModelBundle.load(reb_model)
    assert b.method == "reb" and b.swin_state == {} and b.backbone_state == {}   # cpu preset: plain
    assert b.training["normal_images"] == 24
    n = round(24 * 32 * 32 * 0.1)
    assert b.bank_state["features"].shape[0] == n and b.bank_state["density"].shape == (n,)
    cal = b.calibration
    assert np.median(cal["defect_image_scores"]) > np.median(cal["normal_image_scores"])
    folder = PIPED / "test" / "impurity"
    out = tmp_path / "out"
    assert main(["predict", "--model", str(reb_model), "--images", str(folder), "--out", str(out),
                 "--maps", "npy", "--device", "cpu"]) == 0
    # defect pixels score above clean ones on every defective test image
    for png in sorted(folder.glob("*.png"))[:6]:
        m = np.load(out / f"{png.stem}.npy")
        gt = read_mask(PIPED / "ground_truth" / "impurity" / f"{png.stem}_mask.png", m.shape[:2])
        assert m.shape == read_image(png).shape[:2]
        assert m[gt].mean() > m[~gt].mean(), png.name
    assert (out / "scores.csv").is_file() and len(list(out.glob("*_heatmap.png"))) >= 6
    capsys.readouterr()
    assert main(["eval", "--model", str(reb_model), "--data", str(PIPED.parent), "--category", PIPED.name,
                 "--json-out", str(tmp_path / "r.json"), "--device", "cpu"]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    metrics = r.get("metrics", r)
    assert metrics["pixel_auroc"] > 0.8 and metrics["pixel_ap"] > 0.05
    assert main(["info", "--model", str(reb_model)]) == 0
    assert "method reb" in capsys.readouterr().out
