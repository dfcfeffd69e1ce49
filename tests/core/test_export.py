"""ONNX export (core/deploy/export.py, core/deploy/exportgraph.py) against the torch Predictor on real PIPED
images, for every method: SemiREST with bagging over several windows, with fusion, the distance
alone, one pass; PatchCore; REB with plain and with fine-tuned features; HaloAE with padded halo
blocks. The CLI export + predict --runtime onnxruntime per method; and the bad inputs."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core import api
from core.cli import main
from core.data.images import read_image
from core.deploy.export import JSON_NAME, ONNX_NAME, ExportPredictor, export_model
from core.deploy.exportgraph import _pool_matrix, postprocess_matrices
from core.deploy.inference import Predictor
from core.eval.anomaly_map import postprocess
from core.deploy.modelfile import ModelBundle
from core.errors import ExportError
from core.learning.model import sliding_windows
from tests.conftest import PIPED, tiny_config

pytest.importorskip("onnxruntime")
TOL = 1e-4   # the parity bound: max absolute map difference


# ---------------------------------------------------------------------------------------------
# graph pieces, no data needed
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("rows,cols,out_hw", [(16, 16, (256, 256)), (12, 20, (154, 256)), (5, 3, (37, 29))])
def test_postprocess_is_two_matrix_products(upsample, rows, cols, out_hw):
    my, mx = postprocess_matrices(rows, cols, out_hw, 4.0, upsample)
    b = np.random.default_rng(1).random((rows, cols)).astype(np.float32) * 3
    assert np.abs(my @ b @ mx.T - postprocess(b, out_hw, 4.0, upsample)).max() < 1e-5


@pytest.mark.parametrize("c,out", [(112, 76), (40, 76), (1024, 512), (7, 3)])
def test_channel_pool_matrix_is_adaptive_average_pooling(c, out):
    x = torch.randn(10, 1, c)
    ref = torch.nn.functional.adaptive_avg_pool1d(x, out)[:, 0]
    assert torch.allclose(x[:, 0] @ _pool_matrix(c, out), ref, atol=1e-6)


@pytest.mark.parametrize("hw", [(16, 16), (13, 21), (5, 3)])
def test_halo_attention_runs_in_onnxruntime_as_in_torch(hw):
    """HaloAE's layer (core/methods/haloae.py) at map sides that are and are not multiples of the block."""
    import io
    import warnings

    import onnxruntime as ort

    from core.deploy.export import OPSET
    from core.methods.haloae import HaloAttention
    torch.manual_seed(0)
    a = HaloAttention(12, block=8, halo=4, heads=3, dim_head=4).eval()
    with torch.no_grad():
        a.rel_row.normal_()
        a.rel_col.normal_()
    x = torch.randn(1, 12, *hw)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(a, (x,), buf, dynamo=False, opset_version=OPSET, input_names=["x"])
        ref = a(x).numpy()
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5


# ---------------------------------------------------------------------------------------------
# real images
# ---------------------------------------------------------------------------------------------
def _images(n_good=2, n_bad=3):
    good = sorted((PIPED / "test" / "good").glob("*.png"))[:n_good]
    bad = sorted((PIPED / "test" / "impurity").glob("*.png"))[:n_bad]
    return good + bad


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny SemiREST model whose 16x16-token map takes 9 bagging windows of 8 tokens (each with
    shifted 4-token attention windows), and a PatchCore model, on 6 real normals."""
    if not (PIPED / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED}")
    root = tmp_path_factory.mktemp("export")
    cfg = tiny_config().updated({"swin": {"window": 4, "mu": 8, "step": 4}})
    normals = sorted((PIPED / "train" / "good").glob("*.png"))[:6]
    torch.manual_seed(0)
    api.fit(normals, root / "semirest.pt", cfg, "cpu", resume=False)
    api.fit(normals, root / "patchcore.pt", cfg.updated({"method": "patchcore"}), "cpu", resume=False)
    return root


@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    """REB with plain features and with a 6-step DefectMaker fine-tune, and a HaloAE whose halo
    blocks of 6 do not divide the 16x16 map (so the graph pads and masks), on 6 real normals."""
    if not (PIPED / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED}")
    root = tmp_path_factory.mktemp("export-other")
    cfg = tiny_config()
    normals = sorted((PIPED / "train" / "good").glob("*.png"))[:6]
    torch.manual_seed(0)
    api.fit(normals, root / "reb.pt", cfg.updated({"method": "reb", "reb": {"finetune": False}}),
            "cpu", resume=False)
    api.fit(normals, root / "reb-finetuned.pt", cfg.updated({"method": "reb", "reb": {
        "finetune": True, "finetune_steps": 6, "finetune_head_steps": 2, "finetune_batch": 4}}),
        "cpu", resume=False)
    api.fit(normals, root / "haloae.pt", cfg.updated({"method": "haloae", "haloae": {
        "width": 16, "latent": 8, "depth": 1, "heads": 2, "dim_head": 8, "block": 6, "halo": 3,
        "batch": 2, "steps": 10, "pool_per_normal": 1}}), "cpu", resume=False)
    return root


def _variant(root, weight: float, known: bool = False) -> Path:
    """The SemiREST model with the given fusion weight (0: the Swin alone; inf: the distance), and
    with ``known``, known-defect blocks (decision 0025): those of a real defective image that lie
    farthest from the bank."""
    b = ModelBundle.load(root / "semirest.pt")
    b.calibration["fusion"] = {**(b.calibration.get("fusion") or {"d_ref": 10.0}), "weight": weight}
    if known:
        from core.data.datasets import prepare_image
        pred = Predictor(b, "cpu")
        x = prepare_image(read_image(_images(0, 4)[3]), b.config.features.image_size, b.config.features.size_multiple)
        f = pred.encoder.encode([x])[0].reshape(-1, b.feature_dim)
        dist, _ = pred.detector.bank.nearest(f)
        b.method_state["known_defects"] = f[torch.from_numpy(np.argsort(-dist)[:40].copy())].clone()
        b.calibration["known_defects"] = {"weight": 1.0, "entries": 40}
    out = root / f"semirest-w{weight}{'-known' if known else ''}.pt"
    b.save(out)
    return out


def _parity(model, out_dir, images, image_size=None, bagging=None):
    meta = json.loads(export_model(model, out_dir, image_size=image_size, bagging=bagging).read_text())
    assert meta["check"]["max_abs_map_diff"] <= TOL
    ort = ExportPredictor(out_dir, threads=1)
    ref = Predictor(ModelBundle.load(model), "cpu", bagging=bagging)
    worst = 0.0
    for p in images:
        img = read_image(p)
        if image_size is not None:
            img = cv2.resize(img, image_size, interpolation=cv2.INTER_LINEAR)
        a, b = ref.predict(img), ort.predict(img)
        assert a.anomaly_map.shape == b.anomaly_map.shape
        assert np.abs(a.block_map - b.block_map).max() <= TOL
        worst = max(worst, float(np.abs(a.anomaly_map - b.anomaly_map).max()))
        assert abs(a.score - b.score) <= TOL
    assert worst <= TOL, worst
    return meta, ref


@pytest.mark.parametrize("weight,bagging,known", [(0.0, True, False), (0.5, True, False), (math.inf, True, False),
                                                  (0.5, False, False), (0.5, True, True), (math.inf, True, True)],
                         ids=["swin-bagging", "fusion-bagging", "distance-only", "fusion-one-pass",
                              "known-defects", "distance-known-defects"])
def test_semirest_export_matches_torch_on_real_images(models, tmp_path, weight, bagging, known):
    model = _variant(models, weight, known)
    meta, ref = _parity(model, tmp_path / "onnx", _images(), bagging=bagging)
    assert meta["known_defects"] == {"entries": 40 if known else 0, "weight": 1.0 if known else 0.0}
    if known:      # the case is the one it claims: the known defects move the maps
        off = ModelBundle.load(model)
        off.calibration["known_defects"]["weight"] = 0.0
        img = read_image(_images(0, 4)[3])
        assert np.abs(ref.block_map(img) - Predictor(off, "cpu", bagging=bagging).block_map(img)).max() > 100 * TOL
    cfg = ref.cfg.swin
    if bagging and not math.isinf(weight):   # the case is the one it claims to be
        assert len(sliding_windows(16, 16, cfg.mu, cfg.step)) == 9 and cfg.window < cfg.mu
        assert meta["bagging"] is True
    assert meta["method"] == "semirest" and meta["fusion_weight"] == str(weight)
    assert meta["map_scale"] == ModelBundle.load(model).calibration["map_scale"]


def test_patchcore_export_matches_torch_on_real_images(models, tmp_path):
    meta, _ = _parity(models / "patchcore.pt", tmp_path / "onnx", _images())
    assert meta["method"] == "patchcore" and meta["bagging"] is None


def test_an_export_refines_its_maps_by_pixel_contrast_as_torch_does(models, tmp_path):
    """Decision 0028: the refinement runs after the graph (OpenCV's median has no ONNX operator);
    the export's JSON says so and its maps equal torch's."""
    import dataclasses
    b = ModelBundle.load(models / "semirest.pt")
    on = tmp_path / "contrast.pt"
    dataclasses.replace(b, config=b.config.updated({"output": {"contrast": 0.3}})).save(on)
    meta, ref = _parity(on, tmp_path / "onnx", _images())
    assert meta["contrast"]["beta"] == 0.3 and meta["contrast"]["radius_blocks"] == 2.0
    img = read_image(_images(0, 1)[0])
    plain = Predictor(b, "cpu").predict(img)
    refined = ref.predict(img)
    assert refined.score == plain.score
    assert np.abs(refined.anomaly_map - plain.anomaly_map).max() > 100 * TOL


@pytest.mark.parametrize("name", ["reb", "reb-finetuned"])
def test_reb_export_matches_torch_on_real_images(other_models, tmp_path, name):
    model = other_models / f"{name}.pt"
    b = ModelBundle.load(model)
    assert bool(b.backbone_state) is (name == "reb-finetuned")     # the case is the one it claims
    meta, ref = _parity(model, tmp_path / "onnx", _images())
    assert meta["method"] == "reb" and meta["finetuned_backbone"] is bool(b.backbone_state)
    assert meta["ldknn_lambda"] == b.config.reb.ldknn_lambda and meta["bagging"] is None
    # the densities matter: the LDKNN map is far from the plain distance the PatchCore head gives
    from core.data.datasets import prepare_image
    img = read_image(_images(0, 1)[0])
    x = prepare_image(img, b.config.features.image_size, b.config.features.size_multiple)
    dist = ref.detector.bank.nearest(ref.encoder.encode([x], with_position=False)[0])[0]
    assert np.abs(ref.block_map(img) - dist).max() > 100 * TOL


def test_haloae_export_matches_torch_on_real_images(other_models, tmp_path):
    model = other_models / "haloae.pt"
    h = ModelBundle.load(model).config.haloae
    assert 16 % h.block                                        # the map is padded to whole blocks
    meta, _ = _parity(model, tmp_path / "onnx", _images())
    assert meta["method"] == "haloae" and meta["bagging"] is None and meta["fusion_weight"] is None


def test_reb_and_haloae_export_to_openvino(other_models, tmp_path):
    pytest.importorskip("openvino")
    for name in ("reb-finetuned", "haloae"):
        out = tmp_path / name
        meta = json.loads(export_model(other_models / f"{name}.pt", out, fmt="openvino").read_text())
        assert meta["check_openvino"]["max_abs_map_diff"] <= TOL and (out / "model.xml").is_file()


def test_openvino_export_matches_torch_on_real_images(models, tmp_path):
    pytest.importorskip("openvino")
    model = _variant(models, 0.5)
    out = tmp_path / "ov"
    meta = json.loads(export_model(model, out, fmt="openvino").read_text())
    assert meta["check_openvino"]["max_abs_map_diff"] <= TOL
    assert (out / "model.xml").is_file() and (out / "model.bin").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temporary left
    ref = Predictor(ModelBundle.load(model), "cpu")
    ov = ExportPredictor(out, "openvino", threads=1)
    for p in _images(1, 2):
        img = read_image(p)
        a, b = ref.predict(img), ov.predict(img)
        assert np.abs(a.anomaly_map - b.anomaly_map).max() <= TOL and abs(a.score - b.score) <= TOL


def test_export_for_another_image_size(models, tmp_path):
    """A wide camera image: input 128x64, evaluation map 256x128 (images stretched to it first)."""
    meta, _ = _parity(_variant(models, 0.5), tmp_path / "onnx", _images(1, 2), image_size=(200, 90))
    assert meta["image_size"] == [200, 90] and meta["input"]["size"] == [128, 64]
    assert meta["outputs"]["anomaly_map"] == [1, 115, 256]


@pytest.mark.parametrize("name", ["semirest", "reb-finetuned", "haloae"])
def test_cli_export_then_predict_with_onnxruntime_writes_the_same_outputs(name, request, tmp_path, capsys):
    model = (_variant(request.getfixturevalue("models"), 0.5) if name == "semirest"
             else request.getfixturevalue("other_models") / f"{name}.pt")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in _images():
        (folder / f"{p.parent.name}-{p.name}").write_bytes(p.read_bytes())   # good/000, impurity/000
    exp = tmp_path / "export"
    assert main(["export", "--model", str(model), "--format", "onnx", "--out", str(exp)]) == 0
    assert "exported" in capsys.readouterr().out
    assert (exp / ONNX_NAME).is_file() and (exp / JSON_NAME).is_file()
    rows = {}
    for runtime, src in (("torch", model), ("onnxruntime", exp)):
        out = tmp_path / runtime
        assert main(["predict", "--model", str(src), "--images", str(folder), "--out", str(out),
                     "--device", "cpu", "--runtime", runtime]) == 0
        with open(out / "scores.csv", newline="") as fh:
            rows[runtime] = list(csv.DictReader(fh))
        assert sorted(x.name for x in out.glob("*_heatmap.png")) == sorted(
            f"{p.stem}_heatmap.png" for p in folder.iterdir())
    t, o = rows["torch"], rows["onnxruntime"]
    assert [r["image"] for r in t] == [r["image"] for r in o] and len(t) == 5
    for a, b in zip(t, o):
        assert abs(float(a["score"]) - float(b["score"])) <= TOL
        assert a["image_threshold"] == b["image_threshold"]
        assert a["heatmap"] == b["heatmap"] and a["overlay"] == b["overlay"]
    # the images differ in score, so the comparison is not of constants
    assert len({r["score"] for r in o}) > 1


def test_int8_export_quantises_the_swin_and_keeps_the_maps(models, tmp_path, capsys):
    """--quantize int8: the Swin blocks' matrix products become int8 ones, the bank search and
    the embedding stay float32, and the maps on real images stay within INT8_TOLERANCE of torch's."""
    import onnx

    from core.deploy.export import INT8_TOLERANCE
    model = _variant(models, 0.0)                   # the Swin alone, bagged: int8 moves every pixel
    exp = tmp_path / "int8"
    assert main(["export", "--model", str(model), "--out", str(exp), "--quantize", "int8"]) == 0
    assert "int8" in capsys.readouterr().out
    meta = json.loads((exp / JSON_NAME).read_text())
    assert meta["quantize"] == "int8" and meta["check"]["max_abs_map_diff"] <= INT8_TOLERANCE
    assert meta["check_float32"]["max_abs_map_diff"] <= TOL
    nodes = onnx.load(str(exp / ONNX_NAME)).graph.node
    weights = {i.name for i in onnx.load(str(exp / ONNX_NAME)).graph.initializer}
    float_mm = [n.name for n in nodes if n.op_type == "MatMul"]
    # in the Swin blocks only attention's products of two activations stay float (no weights)
    assert not [n.name for n in nodes if n.op_type == "MatMul" and n.name.startswith("/head/swin/blocks.")
                and n.input[1] in weights]
    assert "/head/nearest/MatMul" in float_mm and "/head/swin/embed/MatMul" in float_mm
    n_int = sum(n.op_type == "MatMulInteger" for n in nodes)
    assert n_int == meta["int8_layers"]["matmuls"] == 4 * ModelBundle.load(model).config.swin.depth
    ort, ref = ExportPredictor(exp, threads=1), Predictor(ModelBundle.load(model), "cpu")
    assert "int8" in ort.summary()
    worst = 0.0
    for p in _images():
        img = read_image(p)
        a, b = ref.predict(img), ort.predict(img)
        worst = max(worst, float(np.abs(a.anomaly_map - b.anomaly_map).max()))
        assert abs(a.score - b.score) <= INT8_TOLERANCE
    assert 0 < worst <= INT8_TOLERANCE, worst        # int8 (not a float32 copy), and close
    # `semirest eval --runtime onnxruntime` scores the export on the whole test split, as torch does
    j = tmp_path / "eval.json"
    assert main(["eval", "--model", str(exp), "--runtime", "onnxruntime", "--data", str(PIPED.parent),
                 "--category", PIPED.name, "--json-out", str(j)]) == 0
    got = json.loads(j.read_text())
    ref_m = api.evaluate(model, PIPED.parent, PIPED.name, device="cpu").metrics
    assert got["runtime"] == "onnxruntime" and got["n_test"] == len(list((PIPED / "test").rglob("*.png")))
    for k in ("pixel_ap", "image_auroc"):
        assert abs(got["metrics"][k] - ref_m[k]) <= 0.01, (k, got["metrics"][k], ref_m[k])
    assert main(["eval", "--model", str(exp), "--runtime", "onnxruntime", "--data", str(PIPED.parent),
                 "--category", PIPED.name, "--protocol", "semi"]) == 2
    assert "protocol unsup only" in _error_line(capsys)


def test_int8_is_refused_where_it_was_not_measured(models, tmp_path):
    with pytest.raises(ExportError, match=r"patchcore\.pt: int8 quantisation is measured for SemiREST"):
        export_model(models / "patchcore.pt", tmp_path / "a", quantize="int8")
    with pytest.raises(ExportError, match="is for ONNX Runtime"):
        export_model(models / "semirest.pt", tmp_path / "b", fmt="openvino", quantize="int8")
    with pytest.raises(ExportError, match="choose one of none, int8"):
        export_model(models / "semirest.pt", tmp_path / "c", quantize="fp8")
    with pytest.raises(ExportError, match="distance alone runs no Swin"):
        export_model(_variant(models, math.inf), tmp_path / "d", quantize="int8")
    assert not any((tmp_path / d).exists() for d in "abcd")


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_exporting_a_file_that_is_not_a_model(tmp_path, capsys):
    bad = tmp_path / "notes.pt"
    bad.write_text("not a model")
    assert main(["export", "--model", str(bad), "--out", str(tmp_path / "x")]) == 2
    line = _error_line(capsys)
    assert str(bad) in line and "not a SemiREST model file" in line
    assert not (tmp_path / "x").exists()


def test_export_to_an_unwritable_out(models, tmp_path, capsys, monkeypatch):
    from write_helpers import make_read_only
    ro = tmp_path / "ro"
    ro.mkdir()
    make_read_only(ro, monkeypatch)
    try:
        rc = main(["export", "--model", str(models / "patchcore.pt"), "--out", str(ro / "onnx")])
    finally:
        ro.chmod(0o755)
    line = _error_line(capsys)
    assert rc == 2 and str(ro / "onnx") in line and ("read-only" in line or "not writable" in line)
    assert list(ro.iterdir()) == []
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert main(["export", "--model", str(models / "patchcore.pt"), "--out", str(afile)]) == 2
    line = _error_line(capsys)
    assert str(afile) in line and "is a file" in line
    assert afile.read_text() == "x"


def test_predict_with_onnxruntime_needs_an_export_folder(models, tmp_path, capsys):
    imgs = PIPED / "test" / "good"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "--model", str(empty), "--images", str(imgs), "--out", str(tmp_path / "o"),
                 "--runtime", "onnxruntime"]) == 2
    line = _error_line(capsys)
    assert str(empty / JSON_NAME) in line and "not an exported model" in line
    assert main(["predict", "--model", str(models / "patchcore.pt"), "--images", str(imgs),
                 "--out", str(tmp_path / "o"), "--runtime", "onnxruntime"]) == 2
    line = _error_line(capsys)
    assert str(models / "patchcore.pt") in line and "semirest export" in line


def test_openvino_runtime_on_an_onnx_only_export(models, tmp_path):
    exp = tmp_path / "onnx"
    export_model(models / "patchcore.pt", exp, check=False)
    with pytest.raises(Exception, match=f"{exp / JSON_NAME}: this export has no OpenVINO model"):
        ExportPredictor(exp, "openvino")


def test_an_export_whose_graph_is_missing_or_damaged(models, tmp_path):
    exp = tmp_path / "onnx"
    export_model(models / "patchcore.pt", exp, check=False)
    (exp / ONNX_NAME).write_bytes(b"\x00garbage")
    with pytest.raises(Exception, match=f"{exp / ONNX_NAME}: ONNX Runtime cannot load it"):
        ExportPredictor(exp)
    (exp / ONNX_NAME).unlink()
    with pytest.raises(Exception, match=f"{exp / ONNX_NAME}: missing"):
        ExportPredictor(exp)


def test_a_bad_image_size_is_explained(capsys, tmp_path):
    from core.deploy.export import parse_size
    with pytest.raises(ExportError, match="WIDTHxHEIGHT"):
        parse_size("640")
    with pytest.raises(ExportError, match="positive"):
        parse_size("0x10")


def test_bench_records_the_onnxruntime_time(models, tmp_path):
    from bench.job import onnx_timing
    from core.data.datasets import Sample
    samples = [Sample(p) for p in _images(1, 1)]
    got = onnx_timing(models / "patchcore.pt", samples, 1, tmp_path)
    assert got["ms"] > 0 and got["max_abs_map_diff"] <= TOL
    assert (tmp_path / "patchcore-onnx" / JSON_NAME).is_file()
