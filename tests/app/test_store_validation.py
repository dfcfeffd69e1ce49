"""The store refuses, on the way in, labels that would block training later (a box wholly outside
the image, cells outside the grid, block=0, a mask of the wrong size): the core's own label rules
(ImageLabel.validate), a LabelError naming the image, and nothing stored."""
from types import SimpleNamespace

import numpy as np
import pytest

from app.labeling.controller import LabelingController
from app.project.store import Store, StoreError, file_sha1
from core.data.labels import BlockCells, RotatedBox
from core.errors import LabelError

from gen_images import make_image

W, H = 64, 48   # 256-px grid of 8-px blocks: input 256 x 192, 24 rows x 32 columns


@pytest.fixture
def project(tmp_path):
    store = Store.create(tmp_path / "proj")
    path = make_image(tmp_path / "src" / "a.png", seed=1)
    image_id = store.add_image(path, copied=False, width=W, height=H, split="train", sha1=file_sha1(path))
    # one valid label of every kind, which a refused write must leave as it is
    mask = np.zeros((H, W), np.uint8)
    mask[5:9, 7:12] = 1
    store.save_mask(image_id, mask)
    store.save_boxes(image_id, [RotatedBox(20, 10, 8, 4, 30)])
    store.save_blocks(image_id, BlockCells(256, 8, [(1, 2)]))
    store.save_tag(image_id, "defective")
    yield store, image_id
    store.close()


BAD = [
    ("save_boxes", [RotatedBox(500, 500, 4, 4, 0)], "lies wholly outside the 64x48 image"),
    ("save_boxes", [RotatedBox(-2, 10, 4, 4, 0)], "lies wholly outside the 64x48 image"),  # touches only
    ("save_boxes", [RotatedBox(float("nan"), 10, 4, 4, 0)], "has a non-finite value"),
    ("save_boxes", [RotatedBox(10, 10, 0, 4, 0)], "zero or negative size"),
    ("save_blocks", BlockCells(256, 8, [(24, 0)]), "block cell (24, 0) is outside the 24x32 grid"),
    ("save_blocks", BlockCells(256, 8, [(0, -1)]), "field 'blocks.cells[0][1]' must be a non-negative integer"),
    ("save_blocks", BlockCells(256, 0, [(0, 0)]), "field 'blocks.block' must be an integer from 1 to 64, got 0"),
    ("save_blocks", BlockCells(100, 8, [(0, 0)]), "field 'blocks.image_size' must be a multiple of 64"),
    ("save_mask", np.ones((10, 10), np.uint8), "mask is 10x10 px but the image is 64x48 px"),
    ("save_mask", np.ones((H, W, 3), np.uint8), "the mask must be a 2-D array"),
    ("save_tag", "broken", "field 'tag' must be \"normal\", \"defective\" or null, got 'broken'"),
]


@pytest.mark.parametrize("method, value, message", BAD, ids=[f"{m}-{msg[:30]}" for m, _, msg in BAD])
def test_invalid_label_is_refused_and_nothing_is_stored(project, method, value, message):
    store, a = project
    before = (store.label_counts(a), store.image_rev(a), store.label_record(a))
    with pytest.raises(LabelError) as exc:
        getattr(store, method)(a, value)
    assert exc.value.path == store.image(a).abs_path and message in exc.value.problem
    after = (store.label_counts(a), store.image_rev(a), store.label_record(a))
    assert after[:2] == before[:2]
    assert (after[2].boxes, after[2].blocks, after[2].tag, after[2].mask_png) == \
        (before[2].boxes, before[2].blocks, before[2].tag, before[2].mask_png)


def test_valid_edge_cases_are_still_stored(project):
    store, a = project
    store.save_boxes(a, [RotatedBox(62, 3, 14, 6, 30)])            # crosses the border: kept
    store.save_blocks(a, BlockCells(256, 8, [(23, 31)]))           # the last cell of the grid
    store.save_mask(a, np.zeros((H, W), bool))                      # all clear: deletes the row
    assert store.label_counts(a) == {"boxes": 1, "blocks": 1, "tag": 1}
    store.image_label(a).validate()                                 # and training accepts it


def test_unknown_image_is_a_store_error(project):
    store, _ = project
    with pytest.raises(StoreError, match="image 999 is not in the project"):
        store.save_boxes(999, [RotatedBox(5, 5, 2, 2, 0)])


def test_canvas_save_of_a_refused_label_says_why_and_queues_no_retry(project):
    """LabelingController._save: the refusal becomes a status message, not a traceback out of a
    Qt slot, and is not retried every second like a locked database."""
    store, a = project
    messages = []
    ctl = SimpleNamespace(store=store, _unsaved=set(), message=SimpleNamespace(emit=messages.append))
    doc = SimpleNamespace(image_id=a, boxes=[RotatedBox(500, 500, 4, 4, 0)], rev=store.image_rev(a))
    LabelingController._save(ctl, doc, "boxes")
    assert messages == [f"Not saved: box {doc.boxes[0].as_dict()} lies wholly outside the 64x48 image"]
    assert ctl._unsaved == set() and store.label_record(a).boxes == [RotatedBox(20, 10, 8, 4, 30)]
