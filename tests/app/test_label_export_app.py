"""Export round trips through core.data.formats, run by the window's export job: export, re-import,
the same labels (for the kinds each format carries)."""
from __future__ import annotations

import numpy as np
import pytest

from app.project.exporting import export_project
from app.project.importer import import_folder
from app.main_window import MainWindow
from app.settings import AppSettings
from app.project.store import Store
from core.data.formats import FORMATS, import_labels
from core.data.labels import BlockCells, RotatedBox
from core.errors import Cancelled

from gen_images import make_folder, make_image
from qt_drive import wait_image

CARRIES = {"semirest": {"tag", "boxes", "mask", "blocks", "seconds"},
           "coco": {"tag", "boxes", "mask", "blocks", "seconds"},
           "labelme": {"tag", "boxes", "mask", "blocks", "seconds"},
           "dota": {"boxes"},
           "mvtec": {"mask"}}


@pytest.fixture
def labelled(tmp_path):
    """MVTec-like source folders; a project labelling them with every kind."""
    src = tmp_path / "src"
    make_folder(src / "test" / "scratch", 2, 64, 48)       # img_000: mask + tag, img_001: blocks
    make_image(src / "test" / "good" / "ok.png", 64, 48, seed=9)
    make_image(src / "extra" / "box.png", 64, 48, seed=8)  # boxes only: not a MVTec test image
    with Store.create(tmp_path / "proj") as s:
        import_folder(s, src, copy=False, split="test")
        by_name = {r.abs_path.relative_to(src).as_posix(): r.id for r in s.images()}
        a, b = by_name["test/scratch/img_000.png"], by_name["extra/box.png"]
        c, d = by_name["test/scratch/img_001.png"], by_name["test/good/ok.png"]
        mask = np.zeros((48, 64), np.uint8)
        mask[10:20, 5:30] = 1
        mask[30:33, 40:44] = 1
        s.save_mask(a, mask)
        s.save_tag(a, "defective")
        s.save_timing("v1", a, {"mask": 31.5, "tag": 1.0}, 0, 40)
        s.save_boxes(b, [RotatedBox(20, 15, 12, 6, 30), RotatedBox(45, 30, 8, 4, -60)])
        s.save_timing("v2", b, {"boxes": 5.25}, 0, 6)
        s.save_blocks(c, BlockCells(256, 8, [(3, 4), (3, 5), (10, 20)]))
        s.save_tag(d, "normal")
    return tmp_path / "proj", src


def compare(fmt, want, got):
    carries = CARRIES[fmt]
    if "tag" in carries:
        assert got.tag == want.tag
    if "boxes" in carries:
        assert len(got.boxes) == len(want.boxes)
        for g, w in zip(sorted(got.boxes, key=lambda b: b.cx), sorted(want.boxes, key=lambda b: b.cx)):
            assert np.allclose(sorted(map(tuple, g.corners())), sorted(map(tuple, w.corners())), atol=1e-3)
    if "mask" in carries:
        if fmt == "mvtec" and want.mask is None and want.blocks is not None:
            assert np.array_equal(got.mask, want.blocks.to_mask(64, 48))     # blocks painted to pixels
        elif want.mask is None:
            assert got.mask is None or not got.mask.any()
        else:
            assert np.array_equal(got.mask, want.mask)
    if "blocks" in carries:
        assert (got.blocks is None) == (want.blocks is None)
        if want.blocks is not None:
            assert sorted(got.blocks.cells) == sorted(want.blocks.cells)
            assert (got.blocks.image_size, got.blocks.block) == (256, 8)
    if "seconds" in carries:
        assert got.seconds == pytest.approx(want.seconds)


@pytest.mark.gui
def test_window_export_round_trips_every_format(qtbot, labelled, tmp_path):
    project, src = labelled
    w = MainWindow(project, AppSettings(tmp_path / "u.ini"))
    qtbot.addWidget(w)
    w.show()
    wait_image(qtbot, w)
    out = tmp_path / "exports"
    job = w.export_labels(list(FORMATS), out)
    with qtbot.waitSignal(job.finished, timeout=30000):
        pass
    with Store.open(project) as s:
        want = {lab.image.resolve(): lab for lab in s.labels_for_training()}
    assert len(want) == 4
    for fmt in FORMATS:
        root = src if fmt in ("mvtec", "dota") else None
        back = {lab.image.resolve(): lab for lab in import_labels(out / fmt, fmt, image_root=root)}
        for image, lab in want.items():
            carried = {"dota": bool(lab.boxes) or lab.tag == "normal",
                       "mvtec": lab.mask is not None or lab.blocks is not None or lab.tag == "normal"}
            if not carried.get(fmt, True):
                assert image not in back                       # DOTA: boxes; MVTec: masks only
                continue
            assert image in back, (fmt, image)
            compare(fmt, lab, back[image])
    skipped = dict(job.result["mvtec"].skipped)                # what a format cannot carry is said
    assert any("box" in why for why in skipped.values())
    w.close()


def test_export_cancel_leaves_nothing(labelled, tmp_path):
    project, _ = labelled
    with pytest.raises(Cancelled):
        export_project(project, ["coco", "labelme"], tmp_path / "out", progress=lambda d, t: d < 5)
    assert not any((tmp_path / "out").rglob("*.json"))


def test_export_one_split_only(labelled, tmp_path):
    project, _ = labelled
    with Store.open(project) as s:
        s.set_split([s.images()[0].id], "train")
    reports = export_project(project, ["semirest"], tmp_path / "out", split="train")
    assert len([p for p in reports["semirest"].files if p.suffix == ".json"]) == 1
