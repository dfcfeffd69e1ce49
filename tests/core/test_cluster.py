"""``semirest predict --ray`` (core/cluster.py): a local Ray scores real PIPED images with the same
outputs and scores.csv as the single-process run, and a rerun scores only the images whose outputs
are missing. Skipped without Ray (pip install .[cluster])."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

from core import api
from core.cli import main
from core.eval.anomaly_map import COLORMAPS
from tests.conftest import PIPED, tiny_config

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model on 6 real normals, 6 real test images, their single-process outputs, and a
    local Ray of 2 CPUs (started once: it takes seconds)."""
    if not (PIPED / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED}")
    root = tmp_path_factory.mktemp("cluster")
    torch.manual_seed(0)
    api.fit(sorted((PIPED / "train" / "good").glob("*.png"))[:6], root / "model.pt", tiny_config(), "cpu",
            resume=False)
    images = root / "images"
    images.mkdir()
    for p in sorted((PIPED / "test" / "good").glob("*.png"))[:2] + sorted((PIPED / "test" / "impurity").glob("*.png"))[:4]:
        (images / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    api.predict(root / "model.pt", images, root / "single", "cpu", maps="npy")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield root
    ray.shutdown()


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


JET_STEP = int(np.abs(np.diff(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], COLORMAPS["jet"])
                              .astype(int), axis=0)).max())


def _same_as_single(root, out):
    single, got = _rows(root / "single" / "scores.csv"), _rows(out / "scores.csv")
    assert got[0] == single[0] and len(got) == len(single) == 7
    for a, b in zip(got[1:], single[1:]):
        assert a[0] == b[0] and a[2:] == b[2:]          # same order, names, flags and files
        assert abs(float(a[1]) - float(b[1])) <= 1e-5
    for row in single[1:]:
        np.testing.assert_allclose(np.load(out / row[6]), np.load(root / "single" / row[6]), atol=1e-5)
        for name in row[4:6]:
            diff = np.abs(cv2.imread(str(out / name)).astype(int) - cv2.imread(str(root / "single" / name)))
            # maps equal to 1e-5 can still straddle one 8-bit level of the colour scale, and one
            # level of jet moves a channel by up to JET_STEP: only a few pixels, by one level
            assert diff.max() <= JET_STEP + 1 and (diff > 1).mean() < 0.01, name


def test_ray_predict_equals_the_single_process_run(setup, capsys):
    out = setup / "ray"
    assert main(["predict", "--model", str(setup / "model.pt"), "--images", str(setup / "images"),
                 "--out", str(out), "--maps", "npy", "--ray", "--progress-json"]) == 0
    _same_as_single(setup, out)
    text = capsys.readouterr().out
    assert text.count('"stage": "predict"') == 6                 # progress for every image


def test_ray_predict_resumes_only_the_missing_images(setup):
    out = setup / "resume"
    api_args = (setup / "model.pt", setup / "images", out)
    from core.cluster import DONE_DIR, predict_ray
    predict_ray(*api_args, maps="npy")
    markers = sorted((out / DONE_DIR).glob("*.json"))
    assert len(markers) == 6
    before = {m.name: m.stat().st_mtime_ns for m in markers}
    # one image lost its marker (killed between outputs and marker), another its heatmap
    markers[0].unlink()
    lost_heatmap = markers[3].stem + "_heatmap.png"
    (out / lost_heatmap).unlink()
    (out / "scores.csv").unlink()
    events = []
    predict_ray(*api_args, maps="npy", progress=lambda ev: events.append(ev))
    after = {m.name: m.stat().st_mtime_ns for m in (out / DONE_DIR).glob("*.json")}
    redone = {n for n in after if after[n] != before.get(n)}
    assert redone == {markers[0].name, markers[3].name}
    assert (out / lost_heatmap).is_file()
    assert sum(ev.stage == "predict" for ev in events) == 2
    _same_as_single(setup, out)


def test_without_ray_the_flag_says_how_to_install(setup, monkeypatch, capsys):
    import builtins
    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    rc = main(["predict", "--model", str(setup / "model.pt"), "--images", str(setup / "images"),
               "--out", str(setup / "none"), "--ray"])
    assert rc == 2
    assert "pip install .[cluster]" in capsys.readouterr().err


def test_an_unreadable_image_is_named_and_the_others_are_kept(setup, tmp_path):
    from core.cluster import DONE_DIR, predict_ray
    from core.errors import SemiRestError
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((setup / "images").glob("*.png"))[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SemiRestError, match="broken.png") as err:
        predict_ray(setup / "model.pt", folder, tmp_path / "out")
    assert "the same command resumes" in str(err.value)
    assert len(list((tmp_path / "out" / DONE_DIR).glob("*.json"))) == 2     # the readable two are done
    (folder / "broken.png").unlink()
    predict_ray(setup / "model.pt", folder, tmp_path / "out")
    assert len(_rows(tmp_path / "out" / "scores.csv")) == 3
