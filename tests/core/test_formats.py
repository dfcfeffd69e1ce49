"""Label export -> import round trips and the files each format writes."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from shapely.geometry import Polygon

from core.data.formats import FORMATS, export_labels, import_labels, rle
from core.data.images import list_images, read_mask
from core.data.labels import BlockCells, ImageLabel, RotatedBox
from formats_helpers import (H, W, assert_boxes_equal, by_image, make_image, multi_component_mask,
                             sample_labels)

REAL_CATEGORY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "piped" / "PA_BDP01_TL"


def painted(label: ImageLabel) -> np.ndarray:
    return label.blocks.to_mask(label.width, label.height)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["semirest", "coco", "labelme"])
def test_full_formats_round_trip_every_label_kind(tmp_path, fmt):
    labels = sample_labels(tmp_path / "images")
    report = export_labels(labels, fmt, tmp_path / "out")
    assert report.skipped == []
    assert report.files and all(p.is_file() for p in report.files)
    back = by_image(import_labels(tmp_path / "out", fmt))
    assert len(back) == len(labels)
    for want in labels:
        got = back[want.image.resolve()]
        assert (got.width, got.height) == (W, H)
        assert got.tag == want.tag
        assert got.seconds == pytest.approx(want.seconds)
        assert_boxes_equal(got.boxes, want.boxes)
        if want.mask is None:
            assert got.mask is None
        else:
            assert got.mask is not None and got.mask.dtype == bool
            assert np.array_equal(got.mask, want.mask)
        if want.blocks is None:
            assert got.blocks is None
        else:
            assert got.blocks is not None
            assert (got.blocks.image_size, got.blocks.block) == (want.blocks.image_size, want.blocks.block)
            assert sorted(got.blocks.cells) == sorted(want.blocks.cells)
        assert got.kind == want.kind


def test_dota_round_trip_boxes_and_normal(tmp_path):
    labels = sample_labels(tmp_path / "images")
    export_labels(labels, "dota", tmp_path / "dota")
    back = by_image(import_labels(tmp_path / "dota", "dota", image_root=tmp_path / "images"))
    want = {lab.image.resolve(): lab for lab in labels}
    # boxes (2 images) and the "normal" tag (as an empty file) come back; mask-only images do not
    assert set(back) == {want[k].image.resolve() for k in want
                         if want[k].boxes or want[k].tag == "normal"}
    for key, got in back.items():
        assert_boxes_equal(got.boxes, want[key].boxes)
        assert got.mask is None and got.blocks is None and got.seconds == {}
        assert got.tag == ("normal" if not want[key].boxes else None)
        assert (got.width, got.height) == (W, H)


def test_dota_angles_are_equivalent_not_raw(tmp_path):
    """90 degrees comes back as some equivalent (w, h, angle): the polygon is what must match."""
    img = make_image(tmp_path / "a.png")
    box = RotatedBox(30, 20, 10, 4, 90)
    export_labels([ImageLabel(img, W, H, boxes=[box])], "dota", tmp_path / "d")
    (got,) = import_labels(tmp_path / "d", "dota", image_root=tmp_path)
    assert_boxes_equal(got.boxes, [box])
    assert_boxes_equal(got.boxes, [RotatedBox(30, 20, 4, 10, 0)])   # the same rectangle


def test_dota_far_from_origin_stays_within_tolerance(tmp_path):
    # float32 minAreaRect at x ~ 5000 px would be ~5e-4 px off; fitting about the centroid is not.
    img = make_image(tmp_path / "wide.png", w=5200, h=16)
    box = RotatedBox(5123.37, 8.21, 11.3, 3.7, 37.5)
    export_labels([ImageLabel(img, 5200, 16, boxes=[box])], "dota", tmp_path / "d")
    (got,) = import_labels(tmp_path / "d", "dota", image_root=tmp_path)
    assert_boxes_equal(got.boxes, [box], tol=1e-4)


def _mvtec_category(root: Path) -> tuple[list[ImageLabel], Path]:
    cat = root / "bottle"
    m1 = multi_component_mask()
    m2 = np.zeros((H, W), bool)
    m2[5:9, 30:40] = True
    crack0 = make_image(cat / "test" / "crack" / "000.png")
    crack1 = make_image(cat / "test" / "crack" / "001.png")
    hole0 = make_image(cat / "test" / "hole" / "000.png")        # same stem, other type
    good0 = make_image(cat / "test" / "good" / "000.png")
    make_image(cat / "train" / "good" / "000.png")
    labels = [ImageLabel(crack0, W, H, mask=m1), ImageLabel(crack1, W, H, mask=m2),
              ImageLabel(hole0, W, H, blocks=BlockCells(256, 8, [(4, 4), (4, 5)])),
              ImageLabel(good0, W, H, tag="normal")]
    return labels, cat


def test_mvtec_round_trip_into_category(tmp_path):
    labels, cat = _mvtec_category(tmp_path)
    report = export_labels(labels, "mvtec", cat)
    rel = sorted(p.relative_to(cat).as_posix() for p in report.files)
    assert rel == ["ground_truth/crack/000_mask.png", "ground_truth/crack/001_mask.png",
                   "ground_truth/hole/000_mask.png"]
    assert report.skipped == []
    png = cv2.imread(str(cat / "ground_truth/crack/000_mask.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and set(np.unique(png)) == {0, 255}
    back = by_image(import_labels(cat, "mvtec"))
    assert len(back) == 4                         # test images only, train/good is not a label
    for want in labels:
        got = back[want.image.resolve()]
        if want.tag == "normal":
            assert got.tag == "normal" and got.mask is None
        else:
            expected = want.mask if want.mask is not None else painted(want)
            assert np.array_equal(got.mask, expected)
            assert got.tag is None and not got.boxes


def test_mvtec_export_elsewhere_import_with_image_root(tmp_path):
    labels, cat = _mvtec_category(tmp_path)
    export_labels(labels, "mvtec", tmp_path / "gt_only")
    assert not (cat / "ground_truth").exists()
    back = by_image(import_labels(tmp_path / "gt_only", "mvtec", image_root=cat))
    assert np.array_equal(back[labels[0].image.resolve()].mask, labels[0].mask)


def test_subfolders_keep_equal_stems_apart(tmp_path):
    labels, cat = _mvtec_category(tmp_path)
    report = export_labels(labels, "labelme", tmp_path / "lm")
    rel = sorted(p.relative_to(tmp_path / "lm").as_posix() for p in report.files)
    assert rel == ["crack/000.json", "crack/001.json", "good/000.json", "hole/000.json"]
    back = by_image(import_labels(tmp_path / "lm", "labelme"))
    assert set(back) == {lab.image.resolve() for lab in labels}
    dota = export_labels([labels[2]], "dota", tmp_path / "d")      # no boxes: skipped, no file
    assert dota.files == [] and len(dota.skipped) == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_ascii_paths(tmp_path, fmt):
    root = tmp_path / "Prüfteile_検査 é"
    labels, cat = _mvtec_category(root)
    labels[0] = boxed = ImageLabel(labels[0].image, W, H, mask=labels[0].mask,
                                   boxes=[RotatedBox(20, 20, 6, 3, 30)])
    out = cat if fmt == "mvtec" else root / "éxport_出力"
    export_labels(labels, fmt, out)
    back = by_image(import_labels(out, fmt, image_root=cat / "test" if fmt == "dota" else None))
    got = back[boxed.image.resolve()]
    if fmt == "mvtec":
        assert got.boxes == []
    else:
        assert_boxes_equal(got.boxes, boxed.boxes)
    if fmt == "dota":
        assert got.mask is None
    else:
        assert np.array_equal(got.mask, boxed.mask)


# ---------------------------------------------------------------------------------------------
# What the files look like
# ---------------------------------------------------------------------------------------------
def test_coco_file_structure(tmp_path):
    labels = sample_labels(tmp_path / "images")
    export_labels(labels, "coco", tmp_path / "coco")
    doc = json.loads((tmp_path / "coco" / "annotations.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in doc["categories"]] == ["defect"]
    images = {im["file_name"]: im for im in doc["images"]}
    assert set(images) == {p.image.name for p in labels}          # relative to the image folder
    assert doc["info"]["semirest_image_root"] == str((tmp_path / "images").resolve())
    assert images["boxes.png"]["semirest_tag"] == "defective"
    assert images["boxes.png"]["semirest_seconds"] == {"boxes": 4.8, "tag": 0.75}
    assert images["mask.png"]["width"] == W and images["mask.png"]["height"] == H

    anns_by_image: dict[int, list[dict]] = {}
    for a in doc["annotations"]:
        assert a["iscrowd"] == 0
        anns_by_image.setdefault(a["image_id"], []).append(a)
    ids = [a["id"] for a in doc["annotations"]]
    assert len(ids) == len(set(ids))

    # one annotation per 8-connected component: the 5 blobs of the mask make 4 components
    mask_anns = anns_by_image[images["mask.png"]["id"]]
    assert len(mask_anns) == 4
    union = np.zeros((H, W), bool)
    for a in mask_anns:
        seg = a["segmentation"]
        assert isinstance(seg["counts"], str) and seg["size"] == [H, W]
        m = rle.decode(seg)
        assert cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] == 2
        ys, xs = np.nonzero(m)
        assert a["area"] == m.sum()
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        union |= m
    assert np.array_equal(union, multi_component_mask())

    box_anns = anns_by_image[images["boxes.png"]["id"]]
    assert len(box_anns) == 5
    crossing = next(a for a in box_anns if a["rbox"][:2] == [62, 3])
    assert len(crossing["segmentation"]) == 1 and len(crossing["segmentation"][0]) == 8
    x, y, bw, bh = crossing["bbox"]
    assert x >= 0 and y == 0 and x + bw == pytest.approx(W)       # clipped to the image
    assert crossing["area"] < 14 * 6                              # only the part inside
    axis = next(a for a in box_anns if a["rbox"] == [20.25, 10.5, 8, 4, 0])
    assert axis["bbox"] == pytest.approx([16.25, 8.5, 8, 4])
    assert axis["area"] == pytest.approx(32)

    assert images["emptymask.png"]["semirest_has_mask"] is True
    assert anns_by_image.get(images["emptymask.png"]["id"]) is None


def test_coco_single_pixel_rle_hand_worked(tmp_path):
    # 8x8 image, defect pixel at x=2, y=1 -> column-major index 2*8+1 = 17 -> counts [17, 1, 46].
    # 17 = 0b10001: its group has the sign bit 0x10, so 17|0x20 -> 48+49 = 'a', then '0';
    # 1 -> '1'; 46 = 0b1_01110 (third count: not delta coded): 14|0x20 -> 48+46 = '^', then 1 -> '1'.
    img = make_image(tmp_path / "px.png", w=8, h=8)
    m = np.zeros((8, 8), bool)
    m[1, 2] = True
    export_labels([ImageLabel(img, 8, 8, mask=m)], "coco", tmp_path / "c")
    doc = json.loads((tmp_path / "c" / "annotations.json").read_text())
    (ann,) = doc["annotations"]
    assert ann["segmentation"] == {"size": [8, 8], "counts": "a01^1"}
    assert ann["bbox"] == [2, 1, 1, 1] and ann["area"] == 1


def test_labelme_file_structure(tmp_path):
    labels = sample_labels(tmp_path / "images")
    export_labels(labels, "labelme", tmp_path / "lm")
    d = json.loads((tmp_path / "lm" / "mask.json").read_text(encoding="utf-8"))
    assert d["version"].startswith("5.") and d["imageData"] is None
    assert (d["imageWidth"], d["imageHeight"]) == (W, H)
    assert ((tmp_path / "lm") / d["imagePath"]).resolve() == labels[0].image.resolve()
    assert d["flags"] == {"normal": False, "defective": False}
    assert all(s["shape_type"] == "mask" and s["label"] == "defect" for s in d["shapes"])
    assert len(d["shapes"]) == 4
    union = np.zeros((H, W), bool)
    for s in d["shapes"]:
        (x1, y1), (x2, y2) = s["points"]
        crop = cv2.imdecode(np.frombuffer(base64.b64decode(s["mask"]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert crop.shape == (y2 - y1 + 1, x2 - x1 + 1)            # inclusive bounding box
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
        union[y1:y2 + 1, x1:x2 + 1] |= crop > 0
    assert np.array_equal(union, multi_component_mask())

    b = json.loads((tmp_path / "lm" / "boxes.json").read_text(encoding="utf-8"))
    assert b["flags"] == {"normal": False, "defective": True}
    assert b["semirest_seconds"] == {"boxes": 4.8, "tag": 0.75}
    polys = [s for s in b["shapes"] if s["shape_type"] == "polygon"]
    assert len(polys) == 5
    for s, box in zip(polys, labels[1].boxes):
        assert s["rbox"] == [box.cx, box.cy, box.w, box.h, box.angle]
        assert np.allclose(s["points"], box.corners())
        assert isinstance(s["flags"], dict) and all(isinstance(v, bool) for v in s["flags"].values())
    n = json.loads((tmp_path / "lm" / "normal.json").read_text(encoding="utf-8"))
    assert n["flags"] == {"normal": True, "defective": False} and n["shapes"] == []


def test_dota_file_structure(tmp_path):
    labels = sample_labels(tmp_path / "images")
    report = export_labels(labels, "dota", tmp_path / "d")
    assert sorted(p.name for p in report.files) == ["boxes.txt", "mixed.txt", "normal.txt"]
    assert (tmp_path / "d" / "normal.txt").read_text() == ""
    lines = (tmp_path / "d" / "boxes.txt").read_text().splitlines()
    assert len(lines) == 5
    for line, box in zip(lines, labels[1].boxes):
        f = line.split()
        assert len(f) == 10 and f[8] == "defect" and f[9] == "0"
        pts = np.array([float(v) for v in f[:8]]).reshape(4, 2)
        assert np.allclose(pts, box.corners(), atol=1e-6)
        x, y = pts[:, 0], pts[:, 1]
        # shoelace sum > 0 with y pointing down = clockwise on screen
        assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0


def test_dota_category_is_mvtec_defect_type(tmp_path):
    labels, cat = _mvtec_category(tmp_path)
    lab = ImageLabel(labels[0].image, W, H, boxes=[RotatedBox(10, 10, 4, 4, 0)])
    export_labels([lab], "dota", tmp_path / "d")
    assert (tmp_path / "d" / "000.txt").read_text().split()[8] == "crack"


def test_dota_import_foreign_file(tmp_path):
    make_image(tmp_path / "split" / "images" / "P0001.png")
    txt = tmp_path / "split" / "labelTxt" / "P0001.txt"
    txt.parent.mkdir(parents=True)
    # header lines of DOTA v1.0, an axis-aligned rectangle, and a general quadrilateral
    txt.write_text("imagesource:GoogleEarth\ngsd:0.146\n"
                   "10 5 30 5 30 15 10 15 scratch 0\n"
                   "40 10 50 12 48 20 41 19 dent 1\n\n")
    (lab,) = import_labels(txt.parent, "dota")                    # images found in ../images
    assert lab.image == tmp_path / "split" / "images" / "P0001.png"
    assert_boxes_equal(lab.boxes[:1], [RotatedBox(20, 10, 20, 10, 0)])
    quad = np.array([[40, 10], [50, 12], [48, 20], [41, 19]], float)
    fitted = lab.boxes[1].polygon()
    assert fitted.buffer(1e-3).contains(Polygon(quad))            # encloses the quadrilateral
    assert fitted.area <= Polygon(quad).minimum_rotated_rectangle.area + 1e-3


def test_labelme_import_foreign_shapes(tmp_path):
    img = make_image(tmp_path / "img.png", w=20, h=16)
    tiny = np.zeros((2, 3), np.uint8)
    tiny[0, 0] = tiny[1, 2] = 1                                  # LabelMe writes 0/1 masks
    ok, png = cv2.imencode(".png", tiny)
    doc = {
        "version": "5.4.1", "flags": {}, "imagePath": "img.png", "imageData": None,
        "imageHeight": 16, "imageWidth": 20,
        "shapes": [
            # a pentagon that is a square [2, 6] x [2, 6] with an extra point on one edge
            {"label": "scratch", "points": [[2, 2], [4, 2], [6, 2], [6, 6], [2, 6]],
             "shape_type": "polygon", "flags": {}, "group_id": None},
            {"label": "dent", "points": [[15, 9], [11, 3]], "shape_type": "rectangle"},
            {"label": "hole", "points": [[15.5, 12.5], [17.5, 12.5]], "shape_type": "circle"},
            {"label": "ai", "points": [[10, 13], [12, 14]], "shape_type": "mask",
             "mask": base64.b64encode(png.tobytes()).decode()},
        ],
    }
    (tmp_path / "img.json").write_text(json.dumps(doc))
    (lab,) = import_labels(tmp_path / "img.json", "labelme")
    assert lab.image == img and lab.tag is None
    assert_boxes_equal(lab.boxes, [RotatedBox(13, 6, 4, 6, 0)])
    expected = np.zeros((16, 20), bool)
    expected[2:6, 2:6] = True                                    # pixel centres 2.5 .. 5.5
    yy, xx = np.mgrid[0:16, 0:20]
    expected |= (xx + 0.5 - 15.5) ** 2 + (yy + 0.5 - 12.5) ** 2 <= 4
    expected[13, 10] = expected[14, 12] = True
    assert np.array_equal(lab.mask, expected)


def test_labelme_edited_polygon_overrides_stale_rbox(tmp_path):
    img = make_image(tmp_path / "images" / "a.png")
    box = RotatedBox(30, 20, 10, 6, 30)
    export_labels([ImageLabel(img, W, H, boxes=[box])], "labelme", tmp_path / "lm")
    path = tmp_path / "lm" / "a.json"
    d = json.loads(path.read_text())
    moved = RotatedBox(32, 20, 10, 6, 30)                        # "dragged" 2 px in LabelMe
    d["shapes"][0]["points"] = moved.corners().tolist()
    path.write_text(json.dumps(d))
    (lab,) = import_labels(path, "labelme")
    assert_boxes_equal(lab.boxes, [moved])
    d["shapes"][0]["points"][0] = [25, 12]                       # no longer a rectangle
    path.write_text(json.dumps(d))
    (lab,) = import_labels(path, "labelme")
    assert lab.boxes == [] and lab.mask is not None and lab.mask.sum() > 20


def test_coco_import_foreign_annotations(tmp_path):
    make_image(tmp_path / "imgs" / "x.png", w=10, h=8)
    m = np.zeros((8, 10), bool)
    m[2:4, 3:7] = True
    doc = {"images": [{"id": 7, "file_name": "x.png", "width": 10, "height": 8}],
           "categories": [{"id": 1, "name": "scratch"}],
           "annotations": [
               {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 1,      # uncompressed RLE
                "segmentation": {"size": [8, 10], "counts": rle.mask_to_counts(m)}},
               {"id": 2, "image_id": 7, "category_id": 1,                    # rectangle polygon
                "segmentation": [[1, 5, 4, 5, 4, 7, 1, 7]]},
               {"id": 3, "image_id": 7, "category_id": 1, "bbox": [6, 5, 2, 2]},
           ]}
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    (lab,) = import_labels(tmp_path / "coco.json", "coco", image_root=tmp_path / "imgs")
    assert np.array_equal(lab.mask, m)
    assert_boxes_equal(lab.boxes, [RotatedBox(2.5, 6, 3, 2, 0), RotatedBox(7, 6, 2, 2, 0)])
    assert lab.tag is None and lab.seconds == {}


# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def real_category():
    if not (REAL_CATEGORY / "test").is_dir() or not (REAL_CATEGORY / "ground_truth").is_dir():
        pytest.skip(f"real MVTec-layout data not found at {REAL_CATEGORY} (shared data folder absent)")
    return REAL_CATEGORY


def test_real_category_import_and_round_trips(real_category, tmp_path):
    labels = import_labels(real_category, "mvtec")
    n_test = sum(len(list_images(d)) for d in (real_category / "test").iterdir() if d.is_dir())
    assert len(labels) == n_test
    defect_dirs = [d for d in (real_category / "test").iterdir() if d.is_dir() and d.name != "good"]
    first = sorted(list_images(defect_dirs[0]))[0]
    gt = read_mask(real_category / "ground_truth" / defect_dirs[0].name / f"{first.stem}_mask.png")
    lab = by_image(labels)[first.resolve()]
    assert gt.any() and np.array_equal(lab.mask, gt)
    assert all(l.tag == "normal" for l in labels if l.image.parent.name == "good")

    defective = [l for l in labels if l.mask is not None]
    for fmt in ("semirest", "coco", "labelme"):
        export_labels(defective[:6], fmt, tmp_path / fmt)
        back = by_image(import_labels(tmp_path / fmt, fmt))
        for want in defective[:6]:
            assert np.array_equal(back[want.image.resolve()].mask, want.mask), (fmt, want.image)
    export_labels(labels, "mvtec", tmp_path / "mvtec")
    back = by_image(import_labels(tmp_path / "mvtec", "mvtec", image_root=real_category))
    for want in labels:
        got = back[want.image.resolve()]
        assert got.tag == want.tag
        assert (got.mask is None) == (want.mask is None)
        if want.mask is not None:
            assert np.array_equal(got.mask, want.mask)
