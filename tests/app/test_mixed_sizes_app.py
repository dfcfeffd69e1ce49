"""Data of every shape in the window (issue 14, part 1): a project of grayscale images that all
differ in size and aspect ratio, a tiny model trained in it, every image scored; the viewer steps
through each one with its heatmap, thresholds and counts work, a folder of more sizes is
inspected, the report lists every image with an overlay at its own size, and boxes and blocks
drawn on a tall and a wide image land on that image's own grid and are saved."""
from __future__ import annotations

import csv
import math
import re

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from app.project.importer import import_files
from app.main_window import MainWindow
from app.project.store import Store
from app.training.selection import RunSpec, prepare_run, select_training_set
from app.viewer.scoring import score_images
from core.data.geometry import BlockGrid
from core.data.images import read_image, write_png
from core.data.labels import ImageLabel, boxes_from_mask, load_label_dir
from core.demo import surface
from core.deploy.modelfile import ModelBundle
from core.device import DeviceInfo
from core.eval.anomaly_map import eval_hw

from qt_drive import open_main_window, click, drag, fraction_point, key, line, wait_image, widget_point
from train_helpers import copy_project, tiny_yaml, train_in_project

pytestmark = pytest.mark.gui
CPU = [DeviceInfo("cpu", "Test CPU", None, None)]

# (width, height): tall, wide, square and near-square, like the public set that crashed
# (113x288 .. 599x244) at a tenth of its scale; every image its own size.
GOOD = [(57, 144), (150, 61), (128, 128), (96, 80), (160, 90), (66, 141), (101, 99), (144, 72)]
BOXED = [(71, 133), (123, 77)]          # train: a dark spot, labelled with boxes
MASKED = [(150, 64), (70, 130)]         # test: a dark spot, labelled with its mask
TEST_GOOD = [(88, 120), (64, 64)]       # test: tagged normal
INSPECT = [(200, 50), (45, 170), (99, 101), (130, 70)]


def gray(rng, w: int, h: int, spot: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A grayscale surface of w x h px (2-D uint8) and the mask of its dark spot (if any)."""
    img = cv2.cvtColor(cv2.resize(surface(rng), (w, h)), cv2.COLOR_RGB2GRAY)
    mask = np.zeros((h, w), bool)
    if spot:
        cx, cy, r = w // 2, h // 2, max(4, min(w, h) // 8)
        cv2.circle(img, (cx, cy), r, 15, -1)
        mask[cy - r:cy + r + 1, cx - r:cx + r + 1] = True
    return img, mask


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The project (built, trained and scored once) and each image's (width, height) by id."""
    base = tmp_path_factory.mktemp("mixed_app")
    src = base / "src"
    rng = np.random.default_rng(14)
    files, splits, labels = [], [], {}
    for group, sizes, split in (("good", GOOD, "train"), ("boxed", BOXED, "train"),
                                ("masked", MASKED, "test"), ("normal", TEST_GOOD, "test")):
        for i, (w, h) in enumerate(sizes):
            img, mask = gray(rng, w, h, spot=group in ("boxed", "masked"))
            p = src / f"{group}_{w}x{h}.png"
            write_png(p, img, rgb=False)              # a real single-channel PNG
            files.append(p)
            splits.append(split)
            if group == "boxed":
                labels[p.resolve()] = ImageLabel(p, boxes=boxes_from_mask(mask), seconds={"boxes": 5.0})
            elif group == "masked":
                labels[p.resolve()] = ImageLabel(p, mask=mask)
            elif group == "normal":
                labels[p.resolve()] = ImageLabel(p, tag="normal")
    folder = base / "proj"
    with Store.create(folder) as s:
        rep = import_files(s, files, copy=False, split=splits, labels=labels)
        assert len(rep.added) == len(files), rep.skipped
    model_id = train_in_project(folder, tiny_yaml(base / "tiny.yaml"))
    with Store.open(folder) as s:
        rows = s.images()
        sizes = {r.id: (r.width, r.height) for r in rows}
        assert score_images(folder, model_id, list(sizes), "cpu")["scored"] == len(files)
    assert sorted(sizes.values()) == sorted(GOOD + BOXED + MASKED + TEST_GOOD)
    return folder, model_id, sizes


def open_window(qtbot, folder, tmp_path) -> MainWindow:
    return open_main_window(qtbot, folder, tmp_path, CPU)


@pytest.fixture
def window(qtbot, mixed, tmp_path):
    folder = copy_project(mixed[0], tmp_path / "proj")
    w = open_window(qtbot, folder, tmp_path)
    yield w
    w.close()


def model_config(window, model_id):
    return ModelBundle.load(window.store.runs.model(model_id).path).config


def check_heat_fits(qtbot, window, image_id: int, w: int, h: int, cfg) -> float:
    """The shown image is w x h, its heatmap (smoothed and block view) has its aspect ratio and
    is drawn over its whole extent; returns the score the panel shows."""
    c, panel = window.canvas, window.docks.review_panel
    wait_image(qtbot, window, image_id)
    qtbot.waitUntil(lambda: c.heat is not None)
    assert (c.document.width, c.document.height) == (w, h)
    assert (c.image.width, c.image.height) == (w, h)
    heat = c.heat
    assert heat.smooth
    assert (heat.image.height(), heat.image.width()) == eval_hw(w, h, cfg.output.eval_size)
    # Pixel threshold 0: every map pixel is over it, so the outline is the map's border, which
    # must run along the image's own border (half a map pixel in), whatever its shape.
    r = heat.contours.boundingRect()
    half_x, half_y = 0.5 * w / heat.image.width(), 0.5 * h / heat.image.height()
    assert heat.over_fraction == 1.0
    assert (r.left(), r.top(), r.right(), r.bottom()) == pytest.approx((half_x, half_y, w - half_x, h - half_y),
                                                                       abs=1e-6)
    text = panel.image_info.text()
    m = re.search(r"Score <b>([-0-9.naif]+)</b>", text)
    assert m, text
    score = float(m.group(1))
    assert math.isfinite(score) and score >= 0.0     # fused scores (core/learning/fusion.py) may pass 1
    key(qtbot, window, Qt.Key.Key_V)                      # block view: one cell per model block
    grid = BlockGrid.for_image(w, h, cfg.features.image_size, 8, cfg.features.size_multiple)
    block = window.store.runs.prediction(window.docks.review.model.id, image_id)[1]
    assert not c.heat.smooth
    assert block.shape == (grid.rows, grid.cols) == (c.heat.image.height(), c.heat.image.width())
    assert np.isfinite(block).all()
    key(qtbot, window, Qt.Key.Key_V)
    assert c.heat.smooth
    return score


def test_viewer_steps_through_every_size(qtbot, window, mixed):
    folder, model_id, sizes = mixed
    review, panel, lst = window.docks.review, window.docks.review_panel, window.image_list
    assert review.model.id == model_id and set(review.scores) == set(sizes)
    assert all(math.isfinite(s) for s in review.scores.values())
    cfg = model_config(window, model_id)
    panel.pixel_thr.spin.setValue(0.0)
    lst.select_row(0)
    seen: dict[int, float] = {}
    for _ in range(len(sizes)):
        image_id = lst.current_id()
        seen[image_id] = check_heat_fits(qtbot, window, image_id, *sizes[image_id], cfg)
        assert seen[image_id] == pytest.approx(review.scores[image_id], abs=5e-4)
        key(qtbot, window, Qt.Key.Key_D)                  # next image
    assert set(seen) == set(sizes)

    # The thresholds: the calibrated ones show as they are, and any score can be the threshold,
    # also past 1 (a map fusing the neighbour distance, core/learning/fusion.py, is not a probability).
    m = review.model
    assert panel.image_thr.value() == pytest.approx(m.image_threshold, abs=5e-4)
    assert panel.pixel_thr.value() == pytest.approx(m.pixel_threshold, abs=5e-4)
    panel.pixel_thr.spin.setValue(m.calibration["pixel_threshold"])
    assert review.model.pixel_threshold == pytest.approx(m.calibration["pixel_threshold"], abs=5e-4)
    scores = sorted(review.scores.values())
    top = scores[-1]
    for thr in (round((scores[6] + scores[7]) / 2, 3), math.floor(top * 1000) / 1000):
        panel.image_thr.spin.setValue(thr)
        assert panel.histogram.threshold == pytest.approx(thr) == review.model.image_threshold
        flagged = sum(s >= thr for s in scores)
        assert flagged >= 1
        assert review.flagged_count() == flagged and f"<b>{flagged} of {len(sizes)}</b>" in panel.counts.text()
        lst.score_filter.setCurrentIndex(lst.score_filter.findData("flagged"))
        assert sorted(lst.visible_ids()) == sorted(i for i, s in review.scores.items() if s >= thr)
    # Histogram: every score counted once, finite; the line's right end is past the top score.
    counts = panel.histogram.counts()
    assert counts.sum() == len(sizes)
    assert all(np.isfinite(v).all() for v in panel.histogram.scores.values())
    hist = panel.histogram
    click(qtbot, hist, QPoint(hist.width() - 2, hist.height() // 2))
    assert hist.threshold >= top and panel.image_thr.value() == pytest.approx(hist.threshold)
    assert review.flagged_count() == sum(s >= hist.threshold for s in scores)
    panel.image_thr.slider.setValue(0)
    assert f"<b>{len(sizes)} of {len(sizes)}</b>" in panel.counts.text()
    assert lst.model.rowCount() == len(sizes)


def test_inspect_a_folder_of_mixed_sizes_and_report_every_image(qtbot, window, mixed, tmp_path):
    review, panel, lst = window.docks.review, window.docks.review_panel, window.image_list
    parts = tmp_path / "new_parts"
    rng = np.random.default_rng(7)
    for i, (w, h) in enumerate(INSPECT):
        write_png(parts / f"part_{w}x{h}.png", gray(rng, w, h, spot=i % 2 == 1)[0], rgb=False)
    with qtbot.waitSignal(review.jobEnded, timeout=120_000) as ended:
        review.inspect_folder(parts)
    assert ended.args == ["inspect", "finished"], panel.job_label.text()
    assert lst.split_filter.currentData() == "inspect" and lst.model.rowCount() == len(INSPECT)
    cfg = model_config(window, review.model.id)
    panel.pixel_thr.spin.setValue(0.0)
    with Store.open(window.store.folder) as s:
        new = {r.id: (r.width, r.height) for r in s.images("inspect")}
    assert sorted(new.values()) == sorted(INSPECT)
    for row in range(len(INSPECT)):
        lst.select_row(row)
        image_id = lst.current_id()
        check_heat_fits(qtbot, window, image_id, *new[image_id], cfg)

    # The report of every image in the project: one row each, an overlay at the image's own size.
    lst.split_filter.setCurrentIndex(lst.split_filter.findData(None))
    all_sizes = {**mixed[2], **new}
    assert lst.model.rowCount() == len(all_sizes)
    with qtbot.waitSignal(review.jobEnded, timeout=120_000) as ended:
        review.export(tmp_path / "report")
    assert ended.args == ["export", "finished"], panel.job_label.text()
    rows = list(csv.DictReader(open(tmp_path / "report" / f"report_model{review.model.id}.csv")))
    with Store.open(window.store.folder) as s:
        by_path = {str(r.abs_path): (r.width, r.height) for r in s.images()}
    assert sorted(r["path"] for r in rows) == sorted(by_path)
    for r in rows:
        assert math.isfinite(float(r["score"])) and 0.0 <= float(r["over_pixel_threshold"]) <= 1.0
        w, h = by_path[r["path"]]
        assert read_image(tmp_path / "report" / r["overlay"]).shape[:2] == (h, w)


@pytest.mark.parametrize("size", [(57, 144), (150, 61)], ids=["tall", "wide"])
def test_box_and_blocks_on_a_tall_and_a_wide_image(qtbot, window, mixed, size, tmp_path):
    w, h = size
    sizes = mixed[2]
    image_id = next(i for i, s in sizes.items() if s == size)
    window.image_list.select(image_id)
    wait_image(qtbot, window, image_id)
    c = window.canvas
    key(qtbot, window, Qt.Key.Key_R)
    drag(qtbot, c, line(fraction_point(c, 0.2, 0.3), fraction_point(c, 0.7, 0.6)))
    with Store.open(window.store.folder) as s:
        (box,) = s.label_record(image_id).boxes
    assert (box.cx, box.cy, box.w, box.h) == pytest.approx((0.45 * w, 0.45 * h, 0.5 * w, 0.3 * h), abs=1.0)

    key(qtbot, window, Qt.Key.Key_K)
    grid = c.document.grid
    ps = window.store.settings()
    assert grid == BlockGrid.for_image(w, h, ps.image_size, ps.block)
    # the grid tiles the image exactly: its last cell ends on the image's far corner
    assert grid.block_rect(grid.rows - 1, grid.cols - 1)[2:] == pytest.approx((w, h))
    assert grid.block_at(w - 0.5, h - 0.5) == (grid.rows - 1, grid.cols - 1)

    def centre(r, col):
        x0, y0, x1, y1 = grid.block_rect(r, col)
        return widget_point(c, (x0 + x1) / 2, (y0 + y1) / 2)

    click(qtbot, c, centre(0, 0))
    click(qtbot, c, centre(grid.rows - 1, grid.cols - 1))
    drag(qtbot, c, line(centre(grid.rows // 2, 0), centre(grid.rows // 2, grid.cols - 1), 4))
    want = sorted({(0, 0), (grid.rows - 1, grid.cols - 1)} | {(grid.rows // 2, k) for k in range(grid.cols)})
    with Store.open(window.store.folder) as s:
        rec = s.label_record(image_id)
    assert sorted(rec.blocks.cells) == want
    mask = rec.blocks.to_mask(w, h)
    assert mask.shape == (h, w) and mask[0, 0] and mask[h - 1, w - 1] and mask[round(h / 2), :].any()

    # What training is given: the label files of this run hold the box and the cells, and the
    # core reads them back against the image's own size.
    with Store.open(window.store.folder) as s:
        ts = select_training_set(s, "all")
        run_dir = tmp_path / "run"
        prepare_run(run_dir, RunSpec(supervision="all"), ts)
    labels = {p.name: lab for p, lab in load_label_dir(run_dir / "labels").items()}
    name = next(n for n in labels if f"{w}x{h}" in n)
    lab = labels[name]
    assert len(lab.boxes) == 1 and sorted(lab.blocks.cells) == want
    assert lab.blocks.to_mask(w, h).shape == (h, w)


def test_threshold_range_follows_scores_past_one(qtbot):
    """Without training: a fused model's scores and thresholds past 1 keep their values in the
    panel, each score gets its own bin, and widening the range emits nothing."""
    from app.viewer.histogram import axis_top
    from app.viewer.panel import ReviewPanel
    assert axis_top(0.2, 0.9) == 1.0 and axis_top(2.2183, 1.52) == pytest.approx(2.3)
    assert axis_top(float("nan"), float("inf"), 1.05) == pytest.approx(1.1)
    panel = ReviewPanel()
    qtbot.addWidget(panel)
    panel.set_model_loaded(True)
    emitted = []
    panel.imageThresholdChanged.connect(emitted.append)
    panel.pixelThresholdChanged.connect(emitted.append)
    panel.set_top(2.3)
    panel.set_thresholds(1.2, 1.52)
    assert (panel.image_thr.value(), panel.pixel_thr.value(), panel.histogram.threshold) == (1.2, 1.52, 1.2)
    assert panel.image_thr.slider.value() == 1200 and panel.pixel_thr.spin.value() == pytest.approx(1.52)
    panel.set_top(3.0)
    assert emitted == [] and panel.pixel_thr.value() == 1.52 and panel.image_thr.slider.value() == 1200
    panel.histogram.set_scores({"unlabelled": [0.5, 2.2, 2.9]})
    assert (panel.histogram.counts().sum(0) > 0).sum() == 3
    panel.image_thr.slider.setValue(2500)                 # the user drags past 1
    assert emitted == [2.5] and panel.histogram.threshold == 2.5
