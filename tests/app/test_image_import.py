"""Importing folders and MVTec datasets: bad files listed and skipped, copies, splits, cancel,
a responsive window during a long import."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QElapsedTimer, QTimer

from app.project.importer import import_files, import_folder, import_mvtec, scan_folder
from app.project.store import Store, decode_mask
from core.data.images import write_png

from gen_images import make_folder, make_image, synthetic_mvtec
from qt_drive import wait_image


def bad_and_good_folder(folder: Path) -> tuple[set[str], dict[str, str]]:
    """Good files (by name) and bad files (name -> words expected in the reason)."""
    folder.mkdir(parents=True)
    make_image(folder / "good.png")           # same content as a project image: still imported
    rgb16 = (np.random.default_rng(1).integers(0, 65535, (40, 50, 3))).astype(np.uint16)
    cv2.imwrite(str(folder / "sixteen_bit.png"), rgb16)
    rgba = np.dstack([np.full((30, 40, 3), 120, np.uint8), np.full((30, 40), 200, np.uint8)])
    cv2.imwrite(str(folder / "rgba.png"), rgba)
    write_png(folder / "gray.png", np.full((20, 30), 77, np.uint8), rgb=False)
    make_image(folder / "Prüfteil_äöß_缺陷.png", seed=5)
    good = {"good.png", "sixteen_bit.png", "rgba.png", "gray.png", "Prüfteil_äöß_缺陷.png"}
    data = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "corrupt.png").write_bytes(data[:16] + bytes(range(256)) * 4)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image at all", encoding="utf-8")
    (folder / "readme.txt").write_text("ignored: not an image suffix")
    bad = {"truncated.png": "truncated", "corrupt.png": "corrupt", "empty.png": "empty",
           "notes.png": "not a supported image"}
    return good, bad


def test_window_import_lists_bad_files_and_keeps_good_ones(qtbot, window, tmp_path):
    good, bad = bad_and_good_folder(tmp_path / "mixed")
    before = window.store.image_count()
    job = window.import_folder(tmp_path / "mixed", copy=True, split="test")
    with qtbot.waitSignal(job.finished, timeout=20000):
        pass
    report = job.result
    assert sorted(Path(p).name for p, _ in report.skipped) == sorted(bad)
    for path, reason in report.skipped:
        assert bad[Path(path).name] in reason, (path, reason)
    assert window.store.image_count() == before + len(good)
    rows = [r for r in window.store.images(split="test")]
    assert {r.name for r in rows} == good
    assert all(r.copied and not Path(r.path).is_absolute() and r.abs_path.is_file() for r in rows)
    sizes = {r.name: (r.width, r.height) for r in rows}
    assert sizes["sixteen_bit.png"] == (50, 40) and sizes["gray.png"] == (30, 20)
    dlg = window.skipped_dialog                      # the user sees the list with reasons
    assert {Path(f).name for f, _ in dlg.rows()} == set(bad)
    window.image_list.reload()
    assert window.image_list.model.rowCount() == before + len(good)
    # The non-ASCII image opens on the canvas.
    nid = next(r.id for r in rows if r.name.startswith("Prüfteil"))
    window.image_list.select(nid)
    wait_image(qtbot, window, nid)


def test_reimport_skips_what_is_there_and_reference_mode_keeps_absolute_paths(tmp_path):
    files = make_folder(tmp_path / "imgs", 4)
    with Store.create(tmp_path / "p") as store:
        r1 = import_folder(store, tmp_path / "imgs", copy=False, split="val")
        r2 = import_folder(store, tmp_path / "imgs", copy=False, split="val")
        assert len(r1.added) == 4 and not r2.added and len(r2.skipped) == 4
        assert all("already in the project" in why for _, why in r2.skipped)
        assert [r.path for r in store.images()] == [str(f.resolve()) for f in files]
        assert all(store.thumbnail(i) for i in r1.added)   # made from the import's own decode
        r3 = import_folder(store, tmp_path / "imgs", copy=True, split="val")
        assert not r3.added and all("already in the project" in why for _, why in r3.skipped)


def test_cancel_keeps_what_was_imported(tmp_path):
    files = make_folder(tmp_path / "imgs", 10)
    with Store.create(tmp_path / "p") as store:
        report = import_files(store, files, copy=False, split="train",
                              progress=lambda done, total: done < 4)
        assert report.cancelled and len(report.added) == 4 and store.image_count() == 4


def test_mvtec_import_brings_masks_tags_and_splits(tmp_path):
    cat = synthetic_mvtec(tmp_path)
    with Store.create(tmp_path / "p") as store:
        report = import_mvtec(store, cat, copy=True)
        assert len(report.added) == 7 and not report.skipped
        rows = store.images()
        assert [r.split for r in rows].count("train") == 3 and [r.split for r in rows].count("test") == 4
        defective = store.images(status="defective")
        assert len(defective) == 2
        mask = decode_mask(store.label_record(defective[1].id).mask_png)
        assert mask[6:13, 8:20].all() and mask.sum() == 7 * 12
        assert len(store.images(status="normal")) == 5
        assert all(r.path.startswith("images/widget/") for r in rows)


def test_inconsistent_mvtec_ground_truth_stops_before_importing(tmp_path):
    from core.errors import LabelError
    cat = synthetic_mvtec(tmp_path)
    (cat / "ground_truth" / "scratch" / "img_001_mask.png").unlink()
    with Store.create(tmp_path / "p") as store:
        with pytest.raises(LabelError, match="img_001_mask.png"):
            import_mvtec(store, cat, copy=True)
        assert store.image_count() == 0 and not (store.folder / "images").exists()


def test_mvtec_import_of_the_real_dataset(tmp_path, piped_category):
    with Store.create(tmp_path / "p") as store:
        report = import_mvtec(store, piped_category, copy=False)
        assert len(report.added) == 96 and not report.skipped
        assert len(store.images(split="train")) == 24
        assert len(store.images(status="defective")) == 48
        labels = store.labels_for_training(split="test")
        assert sum(lab.kind == "mask" for lab in labels) == 48
        assert all(lab.mask.shape == (128, 128) for lab in labels if lab.mask is not None)


def test_window_stays_responsive_during_a_long_import(qtbot, window, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    for i in range(400):
        write_png(folder / f"{i:04d}.png", img)
    ticks, worst, clock = [0], [0], QElapsedTimer()
    clock.start()

    def tick():
        worst[0] = max(worst[0], clock.restart())
        ticks[0] += 1

    timer = QTimer(interval=10, timeout=tick)
    timer.start()
    job = window.import_folder(folder, copy=False, split="train")
    with qtbot.waitSignal(job.finished, timeout=60000):
        pass
    timer.stop()
    assert len(job.result.added) == 400
    assert ticks[0] > 5 and worst[0] < 500, f"GUI thread stalled {worst[0]} ms"


def test_scan_skips_hidden_folders_and_the_project_itself(tmp_path):
    make_folder(tmp_path / "data" / "a", 2)
    make_folder(tmp_path / "data" / ".cache", 2)
    with Store.create(tmp_path / "data" / "proj") as store:
        make_image(store.folder / "images" / "x.png")
        files = scan_folder(tmp_path / "data", skip=store.folder)
    assert [f.parent.name for f in files] == ["a", "a"]


def test_a_window_never_waits_on_a_running_import(tmp_path):
    """The import holds the write lock only for short batch writes, never while decoding."""
    import threading
    files = make_folder(tmp_path / "imgs", 40)
    with Store.create(tmp_path / "p") as s:
        first = import_files(s, files[:1], copy=False, split="train").added[0]
    started = threading.Event()

    def slow(done, total):           # each file "decodes" slowly, like a 4000 x 4000 PNG
        started.set()
        time.sleep(0.02)

    def run():
        with Store.open(tmp_path / "p") as s:
            import_files(s, files[1:], copy=False, split="train", progress=slow)

    t = threading.Thread(target=run)
    t.start()
    started.wait(5)
    worst, writes = 0.0, 0
    begin = time.perf_counter()
    with Store.open(tmp_path / "p") as w:
        while t.is_alive():
            t0 = time.perf_counter()
            w.save_tag(first, "normal")
            worst = max(worst, time.perf_counter() - t0)
            writes += 1
            time.sleep(0.01)
    t.join()
    span = time.perf_counter() - begin
    # Relative to the import's own duration, so that a loaded machine (which slows both) cannot
    # fail it: an import that held the lock while decoding would make one write wait for most of
    # the import, and only one or two writes would get through.
    assert writes >= 5, f"only {writes} label writes got through a {span:.2f} s import"
    assert worst < 0.5 * span, f"a label write waited {worst:.2f} s of a {span:.2f} s import"


def test_imported_labels_get_estimated_seconds_by_geometry(tmp_path):
    from core.data.labelcost import PRIOR
    cat = synthetic_mvtec(tmp_path)
    with Store.create(tmp_path / "p") as store:
        import_mvtec(store, cat, copy=True)
        for r in store.images():
            lab = store.image_label(r.id)
            if r.status == "defective":      # the ground-truth masks: the model's estimate, flagged
                assert lab.seconds == {"mask": PRIOR.estimate(lab)["mask"]} and lab.seconds["mask"] > 6
                assert lab.seconds_estimated == lab.seconds
            else:                            # MVTec's good parts are tagged normal: no labelling cost
                assert lab.tag == "normal" and lab.seconds == {}
        assert {(kind, est) for _i, kind, est, _s, _v in store.timing_totals()} == {("mask", True)}


def test_import_keeps_a_files_seconds_and_calibrates_on_measured_ones(tmp_path):
    from core.data.labels import ImageLabel, RotatedBox
    files = make_folder(tmp_path / "imgs", 8)
    box = [RotatedBox(20, 20, 8, 8, 0)]
    with Store.create(tmp_path / "p") as store:
        ids = import_files(store, files[:5], copy=False, split="train").added
        for i in ids:                        # five boxes drawn here, each measured at 12 s (1 box)
            store.save_boxes(i, box)
            store.save_timing(f"v{i}", i, {"boxes": 12.0}, 0, 12)
        labels = {files[5].resolve(): ImageLabel(files[5], boxes=box + box),
                  files[6].resolve(): ImageLabel(files[6], boxes=box, seconds={"boxes": 3.0}),
                  files[7].resolve(): ImageLabel(files[7], tag="defective")}
        report = import_files(store, files[5:], copy=False, split="train", labels=labels)
        assert report.labelled == 3 and "calibrated on 5" in report.cost.describe()
        a, b, c = report.added
        # 12 s for one box is 2.4x the prior: two boxes get 2.4 x (1 + 2 x 4) s
        assert store.seconds_by_kind(a, estimated_only=True) == pytest.approx({"boxes": 2.4 * 9.0})
        assert store.seconds_by_kind(b, estimated_only=True) == {"boxes": 3.0}     # the file's own
        assert store.seconds_by_kind(c, estimated_only=True) == {"checked": 2.0}   # a verdict, prior
        assert store.seconds_by_kind(ids[0], estimated_only=True) == {}           # measured stays so
