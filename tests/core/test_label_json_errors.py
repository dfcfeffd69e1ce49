"""Bad per-image label JSON (semirest.labels/1): every field is checked when the file is read, and
the error names the JSON file, the field and the problem, instead of a raw ValueError,
ZeroDivisionError or TypeError surfacing later inside training."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.config import preset
from core.data.images import write_mask, write_png
from core.data.labels import BlockCells, ImageLabel, RotatedBox, load_label, load_label_dir, save_label
from core.errors import ImageReadError, LabelError
from core.methods import semirest

W, H = 24, 16


@pytest.fixture
def good(tmp_path):
    """A valid label file with every kind (image 24x16), as the app writes it; returns its dict."""
    img = tmp_path / "a.png"
    write_png(img, np.full((H, W, 3), 100, np.uint8))
    mask = np.zeros((H, W), bool)
    mask[2:5, 3:9] = True
    save_label(ImageLabel(img, W, H, tag="defective", boxes=[RotatedBox(5.5, 6, 4, 2, 30)], mask=mask,
                          blocks=BlockCells(64, 8, [(0, 1)]), seconds={"boxes": 4.8, "checked": 1.0}),
               tmp_path / "a.json")
    return json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))


def _set(path: str, value):
    """An edit putting ``value`` at ``path`` ("blocks.block", "boxes.0.angle"); DELETE removes it."""
    def edit(d):
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in parents:
            d = d[k]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value
    return edit


DELETE = object()

# (edit, the message's field and problem). Each row fails differently without the read checks.
BAD = [
    (_set("width", "128px"), "field 'width' must be a positive integer, got '128px'"),   # ValueError
    (_set("width", -24), "field 'width' must be a positive integer, got -24"),
    (_set("height", 0), "field 'height' must be a positive integer, got 0"),
    (_set("height", 15.5), "field 'height' must be a positive integer, got 15.5"),
    (_set("width", True), "field 'width' must be a positive integer, got True"),
    (_set("height", None), "fields 'width' and 'height' must both be given or both be null"),
    (_set("blocks.block", 0), "field 'blocks.block' must be an integer from 1 to 64, got 0"),  # ZeroDivisionError
    (_set("blocks.block", "8"), "field 'blocks.block' must be an integer from 1 to 64, got '8'"),
    (_set("blocks.image_size", 100), "field 'blocks.image_size' must be a multiple of 64, got 100"),
    (_set("blocks.image_size", 10 ** 12), "field 'blocks.image_size' must be an integer from 64 to 16384"),
    (_set("blocks", "all"), "field 'blocks' must be an object, got 'all'"),
    (_set("blocks.block", DELETE), "field 'blocks' has no 'block'"),
    (_set("blocks.cells", "abc"), "field 'blocks.cells' must be a list, got 'abc'"),
    (_set("blocks.cells", [[1]]), "field 'blocks.cells[0]' must be a [row, column] pair, got [1]"),
    (_set("blocks.cells", [[0, 1], [-1, 0]]), "field 'blocks.cells[1][0]' must be a non-negative integer, got -1"),
    (_set("blocks.cells", [[99, 0]]), "block cell (99, 0) is outside the 8x8 grid of the 24x16 image"),
    (_set("seconds", {"boxes": "abc"}), "field 'seconds.boxes' must be a finite number, got 'abc'"),  # ValueError
    (_set("seconds", [1]), "field 'seconds' must be an object, got [1]"),                     # AttributeError
    (_set("seconds", {"boxes": -2}), "field 'seconds.boxes' must be at least 0, got -2"),
    (_set("seconds", {"paint": 3}), "field 'seconds' has an unknown label kind 'paint' (expected one of "
                                    "mask, blocks, boxes, tag, checked)"),
    (_set("image", 5), "field 'image' must be a non-empty string, got 5"),                   # TypeError
    (_set("image", DELETE), "has no \"image\" entry"),
    (_set("image", "gone.png"), "labels an image that does not exist"),
    (_set("tag", "broken"), "field 'tag' must be \"normal\", \"defective\" or null, got 'broken'"),
    (_set("boxes", "abc"), "field 'boxes' must be a list, got 'abc'"),
    (_set("boxes.0", 5), "field 'boxes[0]' must be an object, got 5"),
    (_set("boxes.0.w", DELETE), "field 'boxes[0]' has no 'w'"),
    (_set("boxes.0.cx", math.nan), "field 'boxes[0].cx' must be a finite number, got nan"),
    (_set("boxes.0.angle", "30"), "field 'boxes[0].angle' must be a finite number, got '30'"),
    (_set("boxes.0.angle", 400), "box angle 400.0 is out of range [-180, 180] degrees"),
    (_set("boxes.0.w", -3), "has zero or negative size"),
    (_set("boxes.0.cx", 500), "lies wholly outside the 24x16 image"),
    (_set("boxes.0", {"cx": -2, "cy": 6, "w": 4, "h": 2}), "lies wholly outside"),  # touches the border only
    (_set("mask", 5), "field 'mask' must be a non-empty string, got 5"),
    (_set("format", "semirest.labels/0"), "not a SemiREST label file"),
]


@pytest.mark.parametrize("edit, message", BAD, ids=[m[:48] for _, m in BAD])
def test_bad_field_names_file_field_and_problem(tmp_path, good, edit, message):
    edit(good)
    path = tmp_path / "a.json"
    path.write_text(json.dumps(good), encoding="utf-8")
    with pytest.raises(LabelError) as exc:
        load_label(path)
    assert exc.value.path == path
    assert str(exc.value) == f"{path}: {exc.value.problem}" and message in exc.value.problem


def test_the_good_file_loads(tmp_path, good):
    """The fixture itself is valid: every failure above comes from its one edit."""
    lab = load_label(tmp_path / "a.json")
    assert lab.kind == "mask" and lab.seconds == {"boxes": 4.8, "checked": 1.0}


def test_not_an_object_and_null_lists(tmp_path, good):
    path = tmp_path / "a.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(LabelError, match="not a SemiREST label file"):
        load_label(path)
    # null for the optional parts means "none" (older files write it), not an error
    good.update(boxes=None, blocks=None, seconds=None, mask=None, width=None, height=None)
    path.write_text(json.dumps(good), encoding="utf-8")
    lab = load_label(path)
    assert (lab.boxes, lab.blocks, lab.seconds, lab.mask, lab.kind) == ([], None, {}, None, "tag")


def test_mask_file_of_the_wrong_size_names_the_mask(tmp_path, good):
    write_mask(tmp_path / "a_mask.png", np.zeros((10, 10), bool))
    with pytest.raises(ImageReadError, match="mask is 10x10 px but its image is 24x16 px") as exc:
        load_label(tmp_path / "a.json")
    assert exc.value.path == tmp_path / "a_mask.png"


def test_a_folder_of_labels_names_the_bad_one(tmp_path, good):
    """What `semirest train --labels DIR` reads: the bad file among good ones is named."""
    good["blocks"]["block"] = 0
    (tmp_path / "b.json").write_text(json.dumps(good), encoding="utf-8")
    with pytest.raises(LabelError, match="b.json: field 'blocks.block'") as exc:
        load_label_dir(tmp_path)
    assert exc.value.path == tmp_path / "b.json"


@pytest.mark.parametrize("blocks, message", [
    (BlockCells(64, 0, [(0, 0)]), "field 'blocks.block' must be an integer from 1 to 64, got 0"),
    (BlockCells(64, 8, [(9, 0)]), "block cell (9, 0) is outside the 8x8 grid of the 24x16 image"),
])
def test_training_names_the_image_of_a_bad_in_memory_label(tmp_path, blocks, message):
    """Labels handed to the training API (not read from JSON) are checked the same way, and the
    error names the image (was: ZeroDivisionError, or a LabelError naming no file)."""
    img = tmp_path / "x.png"
    write_png(img, np.full((H, W, 3), 100, np.uint8))
    with pytest.raises(LabelError) as exc:
        semirest.labelled_items([ImageLabel(img, W, H, blocks=blocks)], preset("cpu"))
    assert exc.value.path == img and message in exc.value.problem
