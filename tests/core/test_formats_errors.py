"""Skipped-label reports, cancellation, and bad input for core.data.formats."""
from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.data.formats import FORMATS, ExportReport, export_labels, import_labels, rle
from core.data.images import read_mask, write_mask
from core.data.labels import BlockCells, ImageLabel
from core.errors import Cancelled, LabelError
from formats_helpers import H, W, make_image, multi_component_mask, sample_labels


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# Skipped
# ---------------------------------------------------------------------------------------------
def test_mvtec_skips_boxes_and_tags_without_faking_masks(tmp_path):
    labels = sample_labels(tmp_path / "images")
    report = export_labels(labels, "mvtec", tmp_path / "out")
    assert isinstance(report, ExportReport)
    skipped = {p.name: reason for p, reason in report.skipped}
    # boxes + "defective" tag: nothing MVTec can carry, no mask file made from the boxes
    assert set(skipped) == {"boxes.png", "mixed.png"}
    assert "5 rotated boxes" in skipped["boxes.png"] and "'defective'" in skipped["boxes.png"]
    assert "not made up from boxes" in skipped["boxes.png"]
    assert skipped["mixed.png"] == ("the pixel mask was exported as the MVTec mask: 1 rotated box "
                                    "not exported; a mask is not made up from boxes")
    names = sorted(p.name for p in report.files)
    # mask, painted blocks and the mask of "mixed"; normal and the empty mask get no file
    assert names == ["blocks_mask.png", "mask_mask.png", "mixed_mask.png"]
    assert all(p.parent.name == "defect" for p in report.files)
    assert not (tmp_path / "out" / "ground_truth" / "defect" / "boxes_mask.png").exists()


def test_mvtec_mask_wins_over_blocks_and_says_so(tmp_path):
    img = make_image(tmp_path / "a.png")
    lab = ImageLabel(img, W, H, mask=multi_component_mask(), blocks=BlockCells(256, 8, [(1, 1)]))
    report = export_labels([lab], "mvtec", tmp_path / "out")
    (path,) = report.files
    assert np.array_equal(read_mask(path), multi_component_mask())
    ((image, reason),) = report.skipped
    assert image == img and "block labels (1 cells)" in reason


def test_dota_skips_everything_but_boxes(tmp_path):
    labels = sample_labels(tmp_path / "images")
    report = export_labels(labels, "dota", tmp_path / "out")
    skipped = {}
    for p, reason in report.skipped:
        skipped.setdefault(p.name, []).append(reason)
    assert set(skipped) == {"mask.png", "boxes.png", "blocks.png", "mixed.png", "emptymask.png"}
    assert "pixel mask" in skipped["mask.png"][0]
    assert "image tag 'defective'" in skipped["boxes.png"][0]
    assert "block labels" in skipped["blocks.png"][0]
    assert "pixel mask" in skipped["mixed.png"][0]            # its box is still written
    assert (tmp_path / "out" / "mixed.txt").read_text().count("\n") == 1
    assert not (tmp_path / "out" / "mask.txt").exists()      # an empty file would mean "no defect"


@pytest.mark.parametrize("fmt", ["semirest", "coco", "labelme"])
def test_lossless_formats_skip_nothing(tmp_path, fmt):
    assert export_labels(sample_labels(tmp_path / "i"), fmt, tmp_path / "o").skipped == []


# ---------------------------------------------------------------------------------------------
# Progress and cancellation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_progress_called_per_image(tmp_path, fmt):
    labels = sample_labels(tmp_path / "images")
    calls = []
    export_labels(labels, fmt, tmp_path / "out", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i + 1, len(labels)) for i in range(len(labels))]


@pytest.mark.parametrize("fmt", FORMATS)
def test_cancel_leaves_no_partial_output(tmp_path, fmt):
    labels = sample_labels(tmp_path / "images")
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "mask.json"
    keep.write_text("earlier export")                    # a file a previous export left
    calls = []

    def progress(done, total):
        calls.append(done)
        return done < 3                                  # cancel after the third image

    with pytest.raises(Cancelled) as exc:
        export_labels(labels, fmt, out, progress=progress)
    assert calls == [1, 2, 3]
    assert "cancelled" in str(exc.value)
    assert all_files(out) == [keep] and keep.read_text() == "earlier export"
    # nothing left beside the images either
    assert sorted(p.name for p in all_files(tmp_path / "images")) == sorted(
        lab.image.name for lab in labels)


def test_cancel_then_full_export_works(tmp_path):
    labels = sample_labels(tmp_path / "images")
    with pytest.raises(Cancelled):
        export_labels(labels, "labelme", tmp_path / "out", progress=lambda d, t: False)
    assert all_files(tmp_path / "out") == []
    report = export_labels(labels, "labelme", tmp_path / "out", progress=lambda d, t: True)
    assert len(report.files) == len(labels)


def test_error_midway_writes_nothing(tmp_path):
    labels = sample_labels(tmp_path / "images")
    labels.insert(3, ImageLabel(tmp_path / "images" / "missing.png", W, H, tag="normal"))
    with pytest.raises(LabelError) as exc:
        export_labels(labels, "semirest", tmp_path / "out")
    assert "missing.png" in str(exc.value) and "does not exist" in str(exc.value)
    assert all_files(tmp_path / "out") == []


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
def test_unknown_format():
    with pytest.raises(ValueError, match="unknown label format 'yolo'"):
        export_labels([], "yolo", "/nonexistent")
    with pytest.raises(ValueError, match="mvtec, coco, dota, labelme, semirest"):
        import_labels("/nonexistent", "pascal")


@pytest.mark.parametrize("fmt, name", [("coco", "annotations.json"), ("labelme", "a.json"),
                                       ("semirest", "a.json")])
def test_invalid_json_names_file(tmp_path, fmt, name):
    bad = tmp_path / name
    bad.write_text('{"images": [', encoding="utf-8")
    with pytest.raises(LabelError) as exc:
        import_labels(tmp_path, fmt)
    assert exc.value.path == bad and "not valid JSON" in str(exc.value)


def _coco_export(tmp_path) -> tuple[Path, dict]:
    export_labels(sample_labels(tmp_path / "images"), "coco", tmp_path / "coco")
    path = tmp_path / "coco" / "annotations.json"
    return path, json.loads(path.read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["images"][0].pop("width"), "images[0] has no \"width\""),
    (lambda d: d.pop("images"), "not a COCO file"),
    (lambda d: d["images"][1].update(id=d["images"][0]["id"]), "used twice"),
    (lambda d: d["annotations"][0].update(image_id=999), "image id 999, which is not in"),
    (lambda d: d["images"][0].update(file_name="gone.png"), "labels an image that does not exist: gone.png"),
    (lambda d: d["images"][0].update(semirest_tag="broken"), "field 'semirest_tag' must be"),
    # field types and ranges: a LabelError naming the file and field, not a raw exception
    (lambda d: d["images"][0].update(width="64px"), "field 'images[0].width' must be a positive integer"),
    (lambda d: d["images"][0].update(semirest_seconds={"boxes": "abc"}),
     "field 'semirest_seconds.boxes' must be a finite number, got 'abc'"),
    (lambda d: d["images"][0].update(semirest_seconds=[1]), "field 'semirest_seconds' must be an object"),
    (lambda d: d["images"][2].update(semirest_blocks={"image_size": 256, "block": 0, "cells": []}),
     "field 'semirest_blocks.block' must be an integer from 1 to 64, got 0"),
    (lambda d: d["annotations"][0].update(image_id=[1]), "image id [1], which is not in"),
    (lambda d: d["annotations"][0].update(segmentation="abc"), "\"segmentation\" must be an RLE object"),
    (lambda d: d["annotations"][-1].update(segmentation=None, rbox=None, bbox=[1, 2, math.nan, 4]),
     "\"bbox\" must be [x, y, w, h], got [1, 2, nan, 4]"),
    (lambda d: d["annotations"][-1].update(rbox=[1, 2, 3, 4, math.inf]), "\"rbox\" must be [cx, cy, w, h, angle]"),
])
def test_coco_bad_fields(tmp_path, edit, message):
    path, doc = _coco_export(tmp_path)
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(LabelError) as exc:
        import_labels(path, "coco")
    assert exc.value.path == path and message in str(exc.value)


def test_coco_wrong_rle_length(tmp_path):
    path, doc = _coco_export(tmp_path)
    ann = next(a for a in doc["annotations"] if isinstance(a["segmentation"], dict))
    counts = rle.string_to_counts(ann["segmentation"]["counts"])
    counts[-1] += 5
    ann["segmentation"]["counts"] = rle.counts_to_string(counts)
    path.write_text(json.dumps(doc))
    with pytest.raises(LabelError) as exc:
        import_labels(path, "coco")
    assert exc.value.path == path
    assert f"annotation {ann['id']}" in str(exc.value) and f"sum to {W * H + 5} pixels" in str(exc.value)


def test_coco_rle_size_mismatch(tmp_path):
    path, doc = _coco_export(tmp_path)
    ann = next(a for a in doc["annotations"] if isinstance(a["segmentation"], dict))
    ann["segmentation"] = rle.encode(np.ones((H, W + 1), bool))
    path.write_text(json.dumps(doc))
    with pytest.raises(LabelError, match=f"RLE mask is {W + 1}x{H} px but image .* is {W}x{H} px"):
        import_labels(path, "coco")


def test_coco_bad_rle_character(tmp_path):
    path, doc = _coco_export(tmp_path)
    ann = next(a for a in doc["annotations"] if isinstance(a["segmentation"], dict))
    ann["segmentation"]["counts"] = "1 2"
    path.write_text(json.dumps(doc))
    with pytest.raises(LabelError, match="invalid character ' '"):
        import_labels(path, "coco")


def test_labelme_errors(tmp_path):
    make_image(tmp_path / "img.png")
    path = tmp_path / "img.json"

    def check(doc, message):
        path.write_text(json.dumps(doc))
        with pytest.raises(LabelError) as exc:
            import_labels(path, "labelme")
        assert exc.value.path == path and message in str(exc.value), str(exc.value)

    base = {"version": "5.3.1", "flags": {}, "imagePath": "img.png", "imageData": None,
            "imageHeight": H, "imageWidth": W}
    check({**base}, "not a LabelMe file")
    check({**base, "shapes": [], "imagePath": "nothere.png"}, "labels an image that does not exist")
    check({**base, "shapes": [], "imagePath": None}, "has no \"imagePath\"")
    check({**base, "shapes": [{"label": "x", "points": [[1, 1], [5, 5]], "shape_type": "line"}]},
          "shape_type 'line' has no area")
    check({**base, "shapes": [{"label": "x", "points": [[1, 1], [5, 5]], "shape_type": "mask",
                               "mask": "not base64!"}]}, "not valid base64")
    ok, png = cv2.imencode(".png", np.ones((4, 4), np.uint8))
    b64 = base64.b64encode(png.tobytes()).decode()
    check({**base, "shapes": [{"label": "x", "points": [[1, 1], [5, 5]], "shape_type": "mask",
                               "mask": b64}]}, "the mask is 4x4 px but its points span 5x5 px")
    check({**base, "shapes": [{"label": "x", "points": [[W - 2, 1], [W + 1, 4]], "shape_type": "mask",
                               "mask": b64}]}, f"does not fit in the {W}x{H} image")
    check({**base, "shapes": [], "flags": {"normal": True, "defective": True}}, "both set")
    check({**base, "shapes": [{"label": "x", "points": [[1, 1], [1, 5]], "shape_type": "rectangle"}]},
          "zero size")
    check({**base, "shapes": [], "imageWidth": "64px"}, "field 'imageWidth' must be a positive integer")
    check({**base, "shapes": [], "semirest_seconds": {"boxes": "abc"}},
          "field 'semirest_seconds.boxes' must be a finite number")
    check({**base, "shapes": [], "semirest_blocks": {"image_size": 256, "block": 0, "cells": []}},
          "field 'semirest_blocks.block' must be an integer from 1 to 64")


def test_mvtec_mask_size_mismatch_names_mask(tmp_path):
    cat = tmp_path / "cat"
    make_image(cat / "test" / "crack" / "000.png")
    bad = cat / "ground_truth" / "crack" / "000_mask.png"
    bad.parent.mkdir(parents=True)
    write_mask(bad, np.ones((H, W - 1), bool))
    with pytest.raises(LabelError) as exc:
        import_labels(cat, "mvtec")
    assert exc.value.path == bad
    assert f"mask is {W - 1}x{H} px but its image" in str(exc.value)


def test_mvtec_missing_and_orphan_masks(tmp_path):
    cat = tmp_path / "cat"
    make_image(cat / "test" / "crack" / "000.png")
    with pytest.raises(LabelError, match="ground-truth mask is missing") as exc:
        import_labels(cat, "mvtec")
    assert exc.value.path == cat / "ground_truth" / "crack" / "000_mask.png"
    write_mask(cat / "ground_truth" / "crack" / "000_mask.png", np.ones((H, W), bool))
    orphan = cat / "ground_truth" / "crack" / "001_mask.png"
    write_mask(orphan, np.ones((H, W), bool))
    with pytest.raises(LabelError, match="for an image that does not exist") as exc:
        import_labels(cat, "mvtec")
    assert exc.value.path == orphan
    (cat / "ground_truth" / "crack" / "001_mask.png").unlink()
    (lab,) = import_labels(cat, "mvtec")
    assert lab.mask.all()
    with pytest.raises(LabelError, match="no test/ sub-folder"):
        import_labels(tmp_path, "mvtec")


def test_mvtec_corrupt_mask_is_label_error(tmp_path):
    cat = tmp_path / "cat"
    make_image(cat / "test" / "crack" / "000.png")
    bad = cat / "ground_truth" / "crack" / "000_mask.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(LabelError) as exc:
        import_labels(cat, "mvtec")
    assert exc.value.path == bad and "corrupt" in str(exc.value)


def test_dota_errors(tmp_path):
    make_image(tmp_path / "a.png")
    txt = tmp_path / "a.txt"
    for content, message in [
        ("1 2 3 4 5 6 7\n", "line 1: expected 'x1 y1"),
        ("1 1 5 1 5 x 1 5 defect 0\n", "line 1: the first eight fields must be numbers"),
        ("\n1 1 5 1 9 1 13 1 defect 0\n", "line 2: the points"),          # collinear
        ("1 1 5 1 5 5 1 5 defect 7\n", "difficult must be 0 or 1"),
        ("500 500 510 500 510 510 500 510 defect 0\n", "wholly outside"),
    ]:
        txt.write_text(content)
        with pytest.raises(LabelError) as exc:
            import_labels(tmp_path, "dota")
        assert exc.value.path == txt and message in str(exc.value), str(exc.value)
    txt.rename(tmp_path / "b.txt")
    (tmp_path / "b.txt").write_text("1 1 5 1 5 5 1 5 defect 0\n")
    with pytest.raises(LabelError, match="no image named b.*"):
        import_labels(tmp_path, "dota")


def test_dota_ambiguous_image(tmp_path):
    make_image(tmp_path / "imgs" / "x" / "a.png")
    make_image(tmp_path / "imgs" / "y" / "a.png")
    (tmp_path / "lbl").mkdir()
    (tmp_path / "lbl" / "a.txt").write_text("1 1 5 1 5 5 1 5 defect 0\n")
    with pytest.raises(LabelError, match="several images are named 'a'"):
        import_labels(tmp_path / "lbl", "dota", image_root=tmp_path / "imgs")


def test_semirest_missing_image_and_image_root(tmp_path):
    labels = sample_labels(tmp_path / "images")
    export_labels(labels[:2], "semirest", tmp_path / "out")
    moved = tmp_path / "moved"
    (tmp_path / "images").rename(moved)
    with pytest.raises(LabelError, match="labels an image that does not exist"):
        import_labels(tmp_path / "out", "semirest")
    back = import_labels(tmp_path / "out", "semirest", image_root=moved)
    assert sorted(l.image for l in back) == sorted(moved / l.image.name for l in labels[:2])
    assert np.array_equal(next(l for l in back if l.image.name == "mask.png").mask,
                          multi_component_mask())


def test_export_label_errors(tmp_path):
    img = make_image(tmp_path / "a.png")
    with pytest.raises(LabelError, match="does not exist") as exc:
        export_labels([ImageLabel(tmp_path / "nope.png", W, H, tag="normal")], "coco", tmp_path / "o")
    assert exc.value.path == tmp_path / "nope.png"
    with pytest.raises(LabelError, match="labelled twice"):
        export_labels([ImageLabel(img, W, H, tag="normal")] * 2, "labelme", tmp_path / "o")
    with pytest.raises(LabelError, match="mask is 3x3 px but the image is"):
        export_labels([ImageLabel(img, W, H, mask=np.ones((3, 3), bool))], "coco", tmp_path / "o")
    with pytest.raises(LabelError, match="outside the"):
        export_labels([ImageLabel(img, W, H, blocks=BlockCells(256, 8, [(99, 0)]))], "mvtec",
                      tmp_path / "o")
    # 000.png and 000.jpg in one folder would both become 000.json
    a = make_image(tmp_path / "same" / "000.png")
    b = tmp_path / "same" / "000.jpg"
    b.write_bytes(a.read_bytes())
    with pytest.raises(LabelError, match="same file name"):
        export_labels([ImageLabel(a, W, H, tag="normal"), ImageLabel(b, W, H, tag="normal")],
                      "labelme", tmp_path / "o")
    assert all_files(tmp_path / "o") == []


def test_coco_absolute_file_name_found_under_image_root(tmp_path):
    labels = sample_labels(tmp_path / "images")[:2]
    export_labels(labels, "coco", tmp_path / "coco")
    path = tmp_path / "coco" / "annotations.json"
    doc = json.loads(path.read_text())
    for im in doc["images"]:
        im["file_name"] = "/elsewhere/on/another/machine/" + im["file_name"]
    path.write_text(json.dumps(doc))
    with pytest.raises(LabelError, match="does not exist: /elsewhere"):
        import_labels(path, "coco")
    back = import_labels(path, "coco", image_root=tmp_path / "images")
    assert [l.image for l in back] == [l.image for l in labels]
