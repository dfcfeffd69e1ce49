"""The CLI end to end on a small generated dataset, the worker's JSON protocol, resuming, and bad
input: every error names the file and the problem and exits with status 2."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from core import api
from core.cli import main
from core.deploy.modelfile import ModelBundle
from core.errors import Cancelled
from core.methods import semirest
from write_helpers import make_read_only

TINY = {
    "preset": "cpu",
    "features": {"image_size": 128},
    "swin": {"embed_dim": 32, "num_heads": 2, "depth": 2, "mu": 16, "step": 8},
    "train": {"steps": 20, "val_every": 10, "checkpoint_every": 10, "warmup_steps": 5},
    "synthesis": {"per_normal": 1.0},
}


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


@pytest.fixture(scope="module")
def model(demo_data, tiny_yaml, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "model.pt"
    assert main(["train", "--data", str(demo_data), "--out", str(out), "--config", str(tiny_yaml),
                 "--device", "cpu"]) == 0
    return out


def test_train_writes_model_and_reports_backbone(model, capsys):
    assert model.is_file() and model.stat().st_size > 10_000
    assert main(["info", "--model", str(model)]) == 0
    out = capsys.readouterr().out
    assert "backbone tf_efficientnet_lite0" in out


def test_progress_json_protocol(demo_data, tiny_yaml, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["train", "--data", str(demo_data), "--out", str(out), "--config", str(tiny_yaml),
                 "--device", "cpu", "--progress-json"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert all(ln["event"] in ("progress", "result") for ln in lines)
    stages = [ln["stage"] for ln in lines if ln["event"] == "progress"]
    for stage in ("features", "coreset", "synthesis", "neighbours", "train"):
        assert stage in stages
    train = [ln for ln in lines if ln["event"] == "progress" and ln["stage"] == "train"]
    assert train[-1]["done"] == train[-1]["total"] == 20
    assert "loss" in train[-1]["metrics"] and "eta_s" in train[1]["metrics"]   # the rate needs two events
    result = lines[-1]
    assert result["event"] == "result" and result["backbone"] == "tf_efficientnet_lite0"
    assert 0 <= result["validation"]["val_pixel_ap"] <= 1


def _odd_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.integers(100, 200, (97, 173, 3)).astype(np.uint8)
    files = {
        "gray.png": base[..., 0],
        "rgba.png": np.dstack([base, np.full(base.shape[:2], 128, np.uint8)]),
        "sixteen.png": base.astype(np.uint16) * 257,
        "odd size.png": base[:61, :150],
        "ñandú 画像.png": base,
    }
    sizes = {}
    for name, arr in files.items():
        ok, buf = cv2.imencode(".png", arr)
        assert ok
        (folder / name).write_bytes(buf.tobytes())
        sizes[name] = (arr.shape[0], arr.shape[1])
    return sizes


def test_predict_any_image_kind_and_size(model, tmp_path, capsys):
    sizes = _odd_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model), "--images", str(tmp_path / "in"), "--out", str(out),
                 "--device", "cpu"]) == 0
    for name, (h, w) in sizes.items():
        stem = Path(name).stem
        heat = cv2.imdecode(np.fromfile(out / f"{stem}_heatmap.png", np.uint8), cv2.IMREAD_COLOR)
        over = cv2.imdecode(np.fromfile(out / f"{stem}_overlay.png", np.uint8), cv2.IMREAD_COLOR)
        assert heat.shape[:2] == (h, w) and over.shape[:2] == (h, w)
    rows = (out / "scores.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("image,score,flagged")
    assert len(rows) == 1 + len(sizes)
    scores = [float(r.split(",")[1]) for r in rows[1:]]
    assert all(np.isfinite(v) and v >= 0.0 for v in scores)
    # probabilities unless validation fused in the NN distance (core/learning/fusion.py), which is not one
    if ModelBundle.load(model).calibration.get("fusion", {}).get("weight", 0.0) == 0.0:
        assert all(v <= 1.0 for v in scores)


def test_predict_in_bfloat16_and_its_errors(model, demo_data, tmp_path, capsys):
    """--precision bfloat16 scores like float32 (close scores, same outputs); float16 on the CPU
    and a precision with an export are refused with the reason, before anything is written."""
    imgs = str(demo_data / "test" / "defect")
    outs = {}
    for prec in ("float32", "bfloat16"):
        outs[prec] = tmp_path / prec
        assert main(["predict", "--model", str(model), "--images", imgs, "--out", str(outs[prec]),
                     "--device", "cpu", "--precision", prec]) == 0
    rows = {p: (o / "scores.csv").read_text(encoding="utf-8").splitlines()[1:] for p, o in outs.items()}
    assert [r.split(",")[0] for r in rows["float32"]] == [r.split(",")[0] for r in rows["bfloat16"]]
    diffs = [abs(float(a.split(",")[1]) - float(b.split(",")[1]))
             for a, b in zip(rows["float32"], rows["bfloat16"])]
    assert max(diffs) <= 0.05
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--images", imgs, "--out", str(tmp_path / "f16"),
                 "--device", "cpu", "--precision", "float16"]) == 2
    assert "float16 runs on a CUDA device only" in capsys.readouterr().err
    assert not (tmp_path / "f16" / "scores.csv").exists()
    assert main(["predict", "--model", str(model), "--images", imgs, "--out", str(tmp_path / "x"),
                 "--runtime", "onnxruntime", "--precision", "bfloat16"]) == 2
    assert "applies to the torch runtime" in capsys.readouterr().err


def test_predict_and_eval_with_contrast_refine_the_maps_and_keep_the_scores(model, demo_data, tmp_path, capsys):
    """--contrast BETA refines the maps of any model by pixel contrast (decision 0028): the scores
    stay the model's, the raw maps change; a negative beta, an export and --ray are refused."""
    imgs = str(demo_data / "test" / "defect")
    outs = {}
    for beta in ("0", "0.3"):
        outs[beta] = tmp_path / f"c{beta}"
        assert main(["predict", "--model", str(model), "--images", imgs, "--out", str(outs[beta]),
                     "--device", "cpu", "--maps", "npy", "--contrast", beta]) == 0
    rows = {b: (o / "scores.csv").read_text(encoding="utf-8").splitlines()[1:] for b, o in outs.items()}
    assert rows["0"] == rows["0.3"]
    stems = sorted(p.name for p in outs["0"].glob("*.npy"))
    assert stems and stems == sorted(p.name for p in outs["0.3"].glob("*.npy"))
    assert any(not np.allclose(np.load(outs["0"] / n), np.load(outs["0.3"] / n)) for n in stems)
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--images", imgs, "--out", str(tmp_path / "neg"),
                 "--device", "cpu", "--contrast", "-1"]) == 2
    assert "output.contrast" in capsys.readouterr().err
    assert main(["predict", "--model", str(model), "--images", imgs, "--out", str(tmp_path / "x"),
                 "--runtime", "onnxruntime", "--contrast", "0.2"]) == 2
    assert "--contrast applies to the torch runtime" in capsys.readouterr().err
    assert main(["predict", "--model", str(model), "--images", imgs, "--out", str(tmp_path / "r"),
                 "--ray", "--contrast", "0.2"]) == 2
    assert "--contrast" in capsys.readouterr().err
    js = {}
    for beta in ("0", "0.3"):
        js[beta] = tmp_path / f"e{beta}.json"
        assert main(["eval", "--model", str(model), "--data", str(demo_data), "--device", "cpu",
                     "--contrast", beta, "--json-out", str(js[beta])]) == 0
    m0, m1 = (json.loads(js[b].read_text())["metrics"] for b in ("0", "0.3"))
    assert m0["image_auroc"] == m1["image_auroc"] and m0["pixel_ap"] != m1["pixel_ap"]


def test_train_precision_flag_sets_the_config_and_is_refused_where_it_means_nothing(demo_data, tiny_yaml,
                                                                                    tmp_path, capsys):
    from core.cli import _config, build_parser
    args = build_parser().parse_args(["train", "--data", str(demo_data), "--out", "m.pt", "--config",
                                      str(tiny_yaml), "--precision", "bfloat16"])
    assert _config(args).train.precision == "bfloat16"
    # eval's --precision is the inference one: it does not change how a protocol trains
    args = build_parser().parse_args(["eval", "--data", str(demo_data), "--precision", "bfloat16"])
    assert _config(args).train.precision == "auto"
    rc = main(["train", "--data", str(demo_data), "--out", str(tmp_path / "pc.pt"), "--method", "patchcore",
               "--precision", "bfloat16", "--device", "cpu"])
    assert rc == 2 and "PatchCore has no network" in capsys.readouterr().err
    assert not (tmp_path / "pc.pt").exists()


def test_eval_prints_table_and_json(model, demo_data, capsys, tmp_path):
    js = tmp_path / "r.json"
    assert main(["eval", "--model", str(model), "--data", str(demo_data), "--device", "cpu",
                 "--json-out", str(js)]) == 0
    out = capsys.readouterr().out
    assert "pixel AP" in out and "PRO (FPR<=0.3)" in out and "image AUROC" in out
    printed = json.loads(out.strip().splitlines()[-1])
    saved = json.loads(js.read_text())
    assert set(printed) == {"pixel_ap", "pro", "pixel_auroc", "image_auroc"}
    assert saved["metrics"] == printed and saved["n_test"] == 7


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def _copy(demo_data: Path, dst: Path) -> Path:
    shutil.copytree(demo_data, dst)
    return dst


def _train_fails(data: Path, tiny_yaml, tmp_path, capsys) -> str:
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "m.pt"), "--config", str(tiny_yaml),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not (tmp_path / "m.pt").exists()
    return err


def test_corrupt_training_image_is_named(demo_data, tiny_yaml, tmp_path, capsys):
    data = _copy(demo_data, tmp_path / "d")
    (data / "train" / "good" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    err = _train_fails(data, tiny_yaml, tmp_path, capsys)
    assert "003.png" in err and "corrupt" in err


def test_truncated_png_is_named(demo_data, tiny_yaml, tmp_path, capsys):
    data = _copy(demo_data, tmp_path / "d")
    p = data / "train" / "good" / "005.png"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    err = _train_fails(data, tiny_yaml, tmp_path, capsys)
    assert "005.png" in err and "truncated" in err


def test_empty_train_folder_is_named(demo_data, tiny_yaml, tmp_path, capsys):
    data = _copy(demo_data, tmp_path / "d")
    for p in (data / "train" / "good").iterdir():
        p.unlink()
    err = _train_fails(data, tiny_yaml, tmp_path, capsys)
    assert "train/good" in err.replace("\\", "/") and "no images" in err


def test_mask_of_wrong_size_is_named(model, demo_data, tmp_path, capsys):
    data = _copy(demo_data, tmp_path / "d")
    mask = data / "ground_truth" / "defect" / "002_mask.png"
    ok, buf = cv2.imencode(".png", np.zeros((50, 60), np.uint8))
    mask.write_bytes(buf.tobytes())
    rc = main(["eval", "--model", str(model), "--data", str(data), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "002_mask.png" in err and "60x50" in err


def test_missing_model_file_is_named(tmp_path, capsys):
    rc = main(["predict", "--model", str(tmp_path / "nope.pt"), "--images", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 2 and "nope.pt" in capsys.readouterr().err


def test_non_ascii_paths_train(demo_data, tiny_yaml, tmp_path):
    data = _copy(demo_data, tmp_path / "données ñ 数据")
    out = tmp_path / "modèle é.pt"
    assert main(["train", "--data", str(data), "--out", str(out), "--config", str(tiny_yaml), "--device", "cpu"]) == 0
    assert out.is_file()


def test_bad_device_is_explained(demo_data, tiny_yaml, tmp_path, capsys):
    rc = main(["train", "--data", str(demo_data), "--out", str(tmp_path / "m.pt"), "--config", str(tiny_yaml),
               "--device", "cuda:7"])
    err = capsys.readouterr().err
    assert rc == 2 and "cuda:7" in err


# ---------------------------------------------------------------------------------------------
# cancel and resume
# ---------------------------------------------------------------------------------------------
def test_cancel_keeps_checkpoint_and_resume_continues(demo_data, tmp_path):
    from core.config import Config
    from core.data.datasets import load_mvtec
    cfg = Config.from_dict(TINY_FULL())
    normals = load_mvtec(demo_data).train
    out = tmp_path / "m.pt"

    def stop_at_12(ev):
        if ev.stage == "train" and ev.done >= 12:
            return False
    with pytest.raises(Cancelled):
        api.fit(normals, out, cfg, "cpu", progress=stop_at_12)
    ckpt = out.with_name(out.name + ".ckpt")
    assert ckpt.exists() and not out.exists()
    assert not list(tmp_path.glob("*.tmp"))

    events = []
    bundle = api.fit(normals, out, cfg, "cpu", progress=events.append)
    assert out.exists() and not ckpt.exists()
    assert any(e.stage == "log" and "resumed" in e.message and "step 10" in e.message for e in events)
    first_train = next(e for e in events if e.stage == "train")
    assert first_train.done == 11          # continued after the step-10 checkpoint
    assert [h["step"] for h in bundle.validation["history"]] == [10, 20]


def test_checkpoint_of_another_run_is_not_resumed(demo_data, tmp_path):
    from core.config import Config
    from core.data.datasets import load_mvtec
    cfg = Config.from_dict(TINY_FULL())
    normals = load_mvtec(demo_data).train
    out = tmp_path / "m.pt"
    with pytest.raises(Cancelled):
        api.fit(normals, out, cfg, "cpu", progress=lambda e: not (e.stage == "train" and e.done >= 12))
    events = []
    other = cfg.updated({"train": {"seed": 5}})
    api.fit(normals, out, other, "cpu", progress=events.append)
    assert any("belongs to another run" in e.message for e in events if e.stage == "log")
    assert next(e for e in events if e.stage == "train").done == 1


def TINY_FULL() -> dict:
    from core.config import preset
    return preset("cpu").updated({k: v for k, v in TINY.items() if k != "preset"}).to_dict()


def test_train_with_mvtec_masks_as_labels(demo_data, tiny_yaml, tmp_path, capsys):
    """`--labels CATEGORY --labels-format mvtec`: the test images' masks become block labels."""
    out = tmp_path / "sup.pt"
    assert main(["train", "--data", str(demo_data), "--out", str(out), "--config", str(tiny_yaml),
                 "--device", "cpu", "--labels", str(demo_data), "--labels-format", "mvtec"]) == 0
    from core.deploy.modelfile import ModelBundle
    b = ModelBundle.load(out)
    # 4 defective test images with masks; the 3 good test images come as normal tags
    assert b.training["labels"] == {"mask": 4, "tag": 3}
    assert "labels: 7 images" in capsys.readouterr().err


def test_eval_with_an_odd_sized_test_image(model, demo_data, tmp_path, capsys):
    """Real sets hold the odd image one pixel short (PIPED PA_BTN01_RL has a 128 x 127 one)."""
    data = _copy(demo_data, tmp_path / "d")
    img = data / "test" / "defect" / "001.png"
    mask = data / "ground_truth" / "defect" / "001_mask.png"
    for p in (img, mask):
        a = cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_UNCHANGED)
        ok, buf = cv2.imencode(".png", a[:, :127])
        p.write_bytes(buf.tobytes())
    assert main(["eval", "--model", str(model), "--data", str(data), "--device", "cpu"]) == 0
    assert "pixel AP" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# write faults: found before the work where possible, always one line, no temp file left
# ---------------------------------------------------------------------------------------------
def _one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    return last


def test_train_out_on_a_read_only_place_fails_before_training(demo_data, tiny_yaml, tmp_path, capsys,
                                                              monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    make_read_only(ro, monkeypatch)
    monkeypatch.setattr(semirest, "read_images", lambda *a: pytest.fail("training started"))
    try:
        rc = main(["train", "--data", str(demo_data), "--out", str(ro / "m.pt"), "--config", str(tiny_yaml),
                   "--device", "cpu"])
    finally:
        ro.chmod(0o755)
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and f"cannot write {ro}: {ro} is " in line
    assert "read-only" in line or "not writable" in line
    assert list(ro.iterdir()) == []


def test_predict_out_on_a_read_only_place_fails_before_scoring(model, demo_data, tmp_path, capsys,
                                                               monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    make_read_only(ro, monkeypatch)
    monkeypatch.setattr(api, "Predictor", lambda *a, **k: pytest.fail("scoring started"))
    try:
        rc = main(["predict", "--model", str(model), "--images", str(demo_data / "test" / "good"),
                   "--out", str(ro / "out"), "--device", "cpu"])
    finally:
        ro.chmod(0o755)
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and f"{ro} is " in line and str(ro / "out") in line
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_during_training_is_one_line_and_leaves_no_temp(demo_data, tiny_yaml, tmp_path, capsys,
                                                                  monkeypatch):
    """The disk fills while training: torch's real write error on a full device (/dev/full)."""
    import torch
    real = torch.save

    def save_to_full_disk(obj, f, *a, **k):
        with open("/dev/full", "wb") as full:
            real(obj, full, *a, **k)

    monkeypatch.setattr(torch, "save", save_to_full_disk)
    out = tmp_path / "m.pt"
    rc = main(["train", "--data", str(demo_data), "--out", str(out), "--config", str(tiny_yaml), "--device", "cpu"])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and f"no space left on {tmp_path}" in line and "m.pt" in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes, not always UTF-8")
def test_predict_a_file_name_that_is_not_utf8(model, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    ok, buf = cv2.imencode(".png", np.random.default_rng(1).integers(90, 160, (70, 90, 3)).astype(np.uint8))
    names = [os.fsdecode(b"bad\xff.png"), os.fsdecode(b"bad\xfe.png"), "good.png"]   # Latin-1 names
    for n in names:
        (src / n).write_bytes(buf.tobytes())
    assert main(["predict", "--model", str(model), "--images", str(src), "--out", str(out), "--device", "cpu",
                 "--progress-json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert len(result["scores"]) == 3
    rows = (out / "scores.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(rows) == 3
    assert [r.split(",")[0].rsplit("/", 1)[-1] for r in rows] == ["bad\\xfe.png", "bad\\xff.png", "good.png"]
    assert set(result["scores"]) == {str(src / n) for n in ["bad\\xfe.png", "bad\\xff.png", "good.png"]}
    assert [r.split(",")[4] for r in rows] == ["bad_xfe_heatmap.png", "bad_xff_heatmap.png", "good_heatmap.png"]
    assert all((out / r.split(",")[4]).is_file() for r in rows)
    for f in os.listdir(out):
        f.encode("utf-8")                                      # every output name is valid text


# ---------------------------------------------------------------------------------------------
# the preset: cpu unless one is named; said before the work
# ---------------------------------------------------------------------------------------------
def test_config_file_without_preset_runs_the_cpu_preset(tmp_path):
    from core.cli import _config, build_parser
    from core.config import DEFAULT_PRESET, load_config, preset
    tweaks = tmp_path / "tweaks.yaml"
    tweaks.write_text("synthesis:\n  per_normal: 2.0\n")
    args = build_parser().parse_args(["train", "--data", "d", "--out", "m.pt", "--config", str(tweaks)])
    cfg = _config(args)
    assert DEFAULT_PRESET == "cpu" and cfg.preset == "cpu" and cfg.synthesis.per_normal == 2.0
    assert cfg.train.steps == preset("cpu").train.steps and cfg.features.image_size == 256
    assert load_config(tweaks).preset == "cpu" and load_config().preset == "cpu"
    assert load_config(tweaks, preset_name="paper").preset == "paper"


def test_preset_and_plan_are_said_before_the_heavy_work(demo_data, tmp_path):
    from core.config import Config
    from core.data.datasets import load_mvtec
    events = []

    def until_first_work(ev):
        events.append(ev)
        return ev.stage == "log"            # stop at the first unit of real work
    with pytest.raises(Cancelled):
        api.fit(load_mvtec(demo_data).train, tmp_path / "m.pt", Config.from_dict(TINY_FULL()), "cpu",
                progress=until_first_work)
    logs = [e.message for e in events if e.stage == "log"]
    plan = next(m for m in logs if m.startswith("preset cpu:"))
    assert "20 training steps" in plan and "128 px" in plan and "device cpu" in plan
    assert "roughly" in plan and "s per step" in plan and "estimate from this run's own first steps follows" in plan


def test_eval_protocol_trains_the_start_then_the_labelled_model_and_reuses_them(demo_data, tiny_yaml, tmp_path):
    """`semirest eval --protocol` and the benchmark share api.run_protocol: the labelled images
    leave the test set, semi starts from an unsupervised model trained first, and a second call
    evaluates the models it finds instead of training again."""
    from core.data.datasets import load_mvtec
    init, semi, report = tmp_path / "unsup.pt", tmp_path / "semi.pt", tmp_path / "r.json"
    argv = ["eval", "--data", str(demo_data), "--protocol", "semi", "--n-anomalous", "2", "--seed", "1",
            "--init", str(init), "--model", str(semi), "--config", str(tiny_yaml), "--device", "cpu",
            "--json-out", str(report)]
    assert main(argv) == 0
    assert init.is_file() and semi.is_file()
    first = json.loads(report.read_text())
    assert len(first["moved"]) == 2 and first["n_test"] == len(load_mvtec(demo_data, None).test) - 2
    stamp = semi.stat().st_mtime_ns
    assert main(argv) == 0
    assert semi.stat().st_mtime_ns == stamp                         # found, not trained again
    assert json.loads(report.read_text())["metrics"] == first["metrics"]
    assert main(["eval", "--data", str(demo_data), "--protocol", "blocks", "--n-anomalous", "2",
                 "--model", str(tmp_path / "blocks.pt"), "--config", str(tiny_yaml), "--device", "cpu"]) == 0
