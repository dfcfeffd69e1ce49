"""Block labels (Eq. 14 from masks, Eq. 15 from rotated boxes), box rasterisation, boxes from masks,
and the per-image JSON label."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.data.geometry import BlockGrid
from core.data.images import write_png
from core.errors import ImageReadError, LabelError
from core.data.labels import (BLOCK_ANOMALOUS, BLOCK_IGNORE, BLOCK_NORMAL, BLOCK_UNKNOWN, BlockCells,
                              ImageLabel, RotatedBox, block_labels_from_boxes, block_labels_from_mask,
                              box_coverage, boxes_from_mask, load_label, mask_coverage, rasterize_boxes,
                              save_label)

A, I, N, U = BLOCK_ANOMALOUS, BLOCK_IGNORE, BLOCK_NORMAL, BLOCK_UNKNOWN


def _fill(mask, y0, x0, count, width=8):
    """Mark ``count`` pixels row by row inside an 8-wide block starting at (y0, x0)."""
    for k in range(count):
        mask[y0 + k // width, x0 + k % width] = True


# ---------------------------------------------------------------------------------------------
# Eq. 14
# ---------------------------------------------------------------------------------------------
def test_eq14_hand_masks_scale_one():
    # 64 x 64 image at image_size 64: input = image, 8 x 8 blocks of 64 px. eps+ 0.25, eps- 0.08.
    g = BlockGrid.for_image(64, 64, 64)
    assert (g.rows, g.cols, g.block_w, g.block_h) == (8, 8, 8.0, 8.0)
    m = np.zeros((64, 64), bool)
    m[0:8, 0:8] = True             # (0, 0): 64/64 = 100%      -> anomalous
    _fill(m, 0, 8, 19)             # (0, 1): 19/64 = 29.7%     -> anomalous (> 25%)
    _fill(m, 0, 16, 13)            # (0, 2): 13/64 = 20.3%     -> ignored (8% .. 25%)
    _fill(m, 0, 24, 3)             # (0, 3):  3/64 =  4.7%     -> normal (< 8%)
    _fill(m, 8, 0, 16)             # (1, 0): 16/64 = 25% exactly -> ignored (needs > eps+)
    _fill(m, 8, 8, 5)              # (1, 1):  5/64 =  7.8%     -> normal
    _fill(m, 8, 16, 6)             # (1, 2):  6/64 =  9.4%     -> ignored
    cov = mask_coverage(m, g)
    assert cov[0, :4].tolist() == pytest.approx([1, 19 / 64, 13 / 64, 3 / 64])
    assert cov[1, :3].tolist() == pytest.approx([16 / 64, 5 / 64, 6 / 64])
    lab = block_labels_from_mask(m, g, 0.25, 0.08)
    assert lab.dtype == np.int8
    assert lab[0, :4].tolist() == [A, A, I, N]
    assert lab[1, :3].tolist() == [I, N, I]
    rest = np.ones((8, 8), bool)
    rest[0, :4] = rest[1, :3] = False
    assert (lab[rest] == N).all()
    # eps+ 50% (synthetic anomalies): the 29.7% block is now only ignored.
    assert block_labels_from_mask(m, g, 0.5, 0.08)[0, :2].tolist() == [A, I]


def test_eq14_eps_minus_boundary_is_ignored():
    g = BlockGrid.for_image(64, 64, 64)
    m = np.zeros((64, 64), bool)
    _fill(m, 0, 0, 8)              # 8/64 = 12.5% with eps- = 0.125: not < eps- -> ignored
    assert block_labels_from_mask(m, g, 0.25, 0.125)[0, 0] == I
    assert block_labels_from_mask(m, g, 0.25, 0.13)[0, 0] == N


def test_eq14_non_square_with_scale_factor():
    # 320 x 120 at image_size 128: scale 0.4 -> 128 x 48, height rounded up to 64. Input 128 x 64,
    # grid 8 rows x 16 cols; one block = 8 * 320/128 = 20 px wide, 8 * 120/64 = 15 px tall
    # (different scale factors 2.5 and 1.875) = 300 original pixels.
    g = BlockGrid.for_image(320, 120, 128)
    assert (g.input_width, g.input_height, g.rows, g.cols) == (128, 64, 8, 16)
    assert (g.block_w, g.block_h) == (20.0, 15.0)
    m = np.zeros((120, 320), bool)
    m[0:15, 0:20] = True           # (0, 0): whole block                    -> 100% anomalous
    m[30:36, 60:75] = True         # (2, 3): 6 rows x 15 px = 90/300 = 30%  -> anomalous
    m[30:33, 80:100] = True        # (2, 4): 3 x 20 = 60/300 = 20%          -> ignored
    m[30:31, 100:115] = True       # (2, 5): 1 x 15 = 15/300 = 5%           -> normal
    m[105:120, 300:320] = True     # (7, 15): the last block, whole         -> anomalous
    cov = mask_coverage(m, g)
    assert cov[2, 3:6].tolist() == pytest.approx([0.3, 0.2, 0.05], abs=1e-6)
    lab = block_labels_from_mask(m, g, 0.25, 0.08)
    assert lab[0, 0] == A and lab[7, 15] == A
    assert lab[2, 3:6].tolist() == [A, I, N]
    assert (lab == A).sum() == 3 and (lab == I).sum() == 1


def test_eq14_upscaled_small_image():
    # 40 x 40 image at image_size 64: scaled up by 1.6, a block is 5 x 5 = 25 original pixels.
    g = BlockGrid.for_image(40, 40, 64)
    assert (g.rows, g.block_w) == (8, 5.0)
    m = np.zeros((40, 40), bool)
    m[0:5, 0:2] = True             # (0, 0): 10/25 = 40%  -> anomalous
    m[0:5, 5] = True               # (0, 1):  5/25 = 20%  -> ignored
    m[2, 12] = True                # (0, 2):  1/25 =  4%  -> normal
    cov = mask_coverage(m, g)
    assert cov[0, :3].tolist() == pytest.approx([0.4, 0.2, 0.04], abs=1e-6)
    assert cov.sum() == pytest.approx(0.64, abs=1e-6)          # nothing leaks to other blocks
    assert block_labels_from_mask(m, g, 0.25, 0.08)[0, :3].tolist() == [A, I, N]


def test_eq14_mask_of_wrong_size():
    g = BlockGrid.for_image(64, 32, 64)
    with pytest.raises(ValueError, match="mask is 32x64, image is 64x32"):
        mask_coverage(np.zeros((64, 32), bool), g)


# ---------------------------------------------------------------------------------------------
# Eq. 15
# ---------------------------------------------------------------------------------------------
def _diamond(cx, cy, half_diagonal):
    """A square turned 45 degrees: |x - cx| + |y - cy| <= half_diagonal."""
    side = half_diagonal * math.sqrt(2)
    return RotatedBox(cx, cy, side, side, 45.0)


def test_box_coverage_rotated_square_over_block_corners():
    # 64 x 64 image, 8-px blocks. Diamond |x-8| + |y-8| <= 12 around the corner shared by blocks
    # (0,0), (0,1), (1,0), (1,1); it crosses the top and left image borders (vertices (-4, 8), (8, -4)).
    # Block (0,0) = [0,8]^2: inside iff x + y >= 4; the cut-off triangle is 4*4/2 = 8 -> 56/64 = 0.875.
    # Same for the other three by symmetry.
    # Block (0,2) = [16,24]x[0,8]: inside iff y >= x - 12, i.e. int_16^20 (20 - x) dx = 8 -> 0.125;
    # likewise (1,2) (x + y <= 28), (2,0), (2,1). Block (2,2): x + y >= 32 > 28 -> 0.
    g = BlockGrid.for_image(64, 64, 64)
    cov = box_coverage([_diamond(8, 8, 12)], g)
    expected = np.zeros((8, 8))
    expected[:2, :2] = 0.875
    expected[0, 2] = expected[1, 2] = expected[2, 0] = expected[2, 1] = 0.125
    np.testing.assert_allclose(cov, expected, atol=1e-9)
    lab = block_labels_from_boxes([_diamond(8, 8, 12)], g, 0.5)
    assert lab.dtype == np.int8
    assert (lab[:2, :2] == U).all() and (lab == U).sum() == 4 and (lab[lab != U] == N).all()
    assert (block_labels_from_boxes([_diamond(8, 8, 12)], g, 0.1) == U).sum() == 8    # 0.125 > v
    assert (block_labels_from_boxes([_diamond(8, 8, 12)], g, 0.9) == U).sum() == 0    # 0.875 < v


def test_box_coverage_exact_quarter_at_corner():
    # Diamond of half-diagonal 8 around (8, 8): each of the four blocks gets a right triangle with
    # legs 8: 32/64 = 0.5. v = 0.5 needs strictly more -> normal; v = 0.49 -> unknown.
    g = BlockGrid.for_image(64, 64, 64)
    cov = box_coverage([_diamond(8, 8, 8)], g)
    np.testing.assert_allclose(cov[:2, :2], 0.5, atol=1e-9)
    assert cov.sum() == pytest.approx(2.0)
    assert (block_labels_from_boxes([_diamond(8, 8, 8)], g, 0.49)[:2, :2] == U).all()


def test_box_crossing_bottom_right_border_and_outside():
    g = BlockGrid.for_image(64, 64, 64)
    # Axis-aligned 8 x 8 box centred on the bottom-right corner: only [60,64]^2 is in the image,
    # 16/64 = 0.25 of block (7,7); nothing wraps round to the other side.
    cov = box_coverage([RotatedBox(64, 64, 8, 8, 0)], g)
    assert cov[7, 7] == pytest.approx(0.25) and cov.sum() == pytest.approx(0.25)
    assert box_coverage([RotatedBox(100, 100, 8, 8, 0)], g).sum() == 0
    assert box_coverage([], g).sum() == 0
    # Two overlapping boxes count their union once: [0,8]x[0,8] and [4,12]x[0,8] -> block (0,0)
    # fully, block (0,1) half.
    cov = box_coverage([RotatedBox(4, 4, 8, 8, 0), RotatedBox(8, 4, 8, 8, 0)], g)
    assert cov[0, :3].tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_box_coverage_with_scale_factor():
    # 320 x 120 image at 128: blocks are 20 x 15 px. Box x in [8, 32], y in [0, 15]:
    # block (0,0) gets 12/20 = 0.6, block (0,1) 12/20 = 0.6.
    g = BlockGrid.for_image(320, 120, 128)
    cov = box_coverage([RotatedBox(20, 7.5, 24, 15, 0)], g)
    assert cov[0, :3].tolist() == pytest.approx([0.6, 0.6, 0.0])
    assert cov.sum() == pytest.approx(1.2)
    # The same box turned 90 degrees is 15 wide and 24 tall: x in [12.5, 27.5], y in [-4.5, 19.5]
    # -> (0,0): 7.5 x 15 = 112.5/300 = 0.375; (0,1): same; (1,0) and (1,1): 7.5 x 4.5 / 300 = 0.1125.
    cov = box_coverage([RotatedBox(20, 7.5, 24, 15, 90)], g)
    np.testing.assert_allclose(cov[:2, :2], [[0.375, 0.375], [0.1125, 0.1125]], atol=1e-9)
    assert cov.sum() == pytest.approx(0.975)


# ---------------------------------------------------------------------------------------------
# Rasterising boxes, boxes from masks
# ---------------------------------------------------------------------------------------------
def test_rasterize_axis_aligned_box():
    # cx=4, cy=4, w=4, h=2: x in [2, 6], y in [3, 5]. Pixel centres x+0.5 inside: x = 2..5; y = 3, 4.
    m = rasterize_boxes([RotatedBox(4, 4, 4, 2, 0)], 10, 8)
    assert m.shape == (8, 10)
    expected = np.zeros((8, 10), bool)
    expected[3:5, 2:6] = True
    assert np.array_equal(m, expected)


def test_rasterize_diamond_and_border():
    # Diamond |x-8| + |y-8| < 2.5: pixel-centre offsets (+-0.5, +-0.5) (sum 1) and (+-0.5, +-1.5),
    # (+-1.5, +-0.5) (sum 2) are inside; (+-1.5, +-1.5) and (+-0.5, +-2.5) (sum 3) are not: 12 pixels.
    m = rasterize_boxes([_diamond(8, 8, 2.5)], 16, 16)
    assert m.sum() == 12
    assert m[7, 7] and m[6, 7] and m[8, 6] and not m[6, 6] and not m[5, 7]
    # A box hanging over the left edge: only x >= 0 is drawn, nothing at the right edge.
    m = rasterize_boxes([RotatedBox(0, 4, 6, 2, 0)], 10, 8)     # x in [-3, 3], y in [3, 5]
    assert m.sum() == 6 and m[3:5, 0:3].all() and not m[:, 3:].any()


def test_boxes_from_mask_rectangle_and_components():
    m = np.zeros((10, 12), bool)
    m[3:5, 2:6] = True             # pixels x 2..5, y 3..4 = squares [2,6] x [3,5]
    m[8, 10] = True                # a separate one-pixel component [10,11] x [8,9]
    boxes = boxes_from_mask(m)
    assert len(boxes) == 2
    areas = sorted(b.polygon().area for b in boxes)
    assert areas == pytest.approx([1.0, 8.0], abs=1e-3)
    big = max(boxes, key=lambda b: b.polygon().area)
    assert (big.cx, big.cy) == pytest.approx((4.0, 4.0), abs=1e-3)
    assert big.polygon().bounds == pytest.approx((2, 3, 6, 5), abs=1e-3)
    assert np.array_equal(rasterize_boxes(boxes, 12, 10), m)


def test_boxes_from_mask_diagonal_is_rotated():
    # Pixels (i, i), i = 0..4: the smallest rectangle around their unit squares runs along the
    # diagonal: length |(0,0)-(5,5)| = 5 sqrt2, width 2 * (1/sqrt2) = sqrt2 -> area 10 (the
    # axis-aligned box would be 25).
    m = np.eye(5, dtype=bool)
    (b,) = boxes_from_mask(m)
    assert b.polygon().area == pytest.approx(10.0, abs=1e-2)
    assert abs(abs(b.angle) % 90 - 45) < 1e-3
    assert rasterize_boxes([b], 5, 5)[m].all()


# ---------------------------------------------------------------------------------------------
# ImageLabel.block_targets and the JSON file
# ---------------------------------------------------------------------------------------------
def test_block_cells_on_a_different_grid():
    # Cell (1, 2) drawn on a 64-px grid of a 64 x 64 image covers pixels x 16..23, y 8..15. The
    # model's grid at image_size 128 has 4-px blocks (in original pixels): rows 2-3, cols 4-5.
    lab = ImageLabel(image="x.png", width=64, height=64, blocks=BlockCells(64, 8, [(1, 2)]))
    g = BlockGrid.for_image(64, 64, 128)
    t = lab.block_targets(g, 0.25, 0.08, 0.5)
    assert t.shape == (16, 16)
    assert (t[2:4, 4:6] == A).all() and (t == A).sum() == 4 and (t[t != A] == N).all()


def test_block_targets_tags_and_size_check():
    g = BlockGrid.for_image(64, 32, 64)
    assert (ImageLabel("x.png", 64, 32, tag="defective").block_targets(g, .25, .08, .5) == U).all()
    assert (ImageLabel("x.png", 64, 32, tag="normal").block_targets(g, .25, .08, .5) == N).all()
    assert (ImageLabel("x.png", 64, 32).block_targets(g, .25, .08, .5) == N).all()
    with pytest.raises(LabelError, match="label is for a 32x32 image"):
        ImageLabel("x.png", 32, 32, tag="normal").block_targets(g, .25, .08, .5)


def test_save_and_load_label(tmp_path):
    img = tmp_path / "000.png"
    write_png(img, np.zeros((16, 24, 3), np.uint8))
    mask = np.zeros((16, 24), bool)
    mask[2:5, 3:9] = True
    lab = ImageLabel(img, 24, 16, tag="defective", boxes=[RotatedBox(5.5, 6, 4, 2, 30)], mask=mask,
                     blocks=BlockCells(64, 8, [(0, 1)]), seconds={"boxes": 4.81234})
    path = save_label(lab, tmp_path / "000.json")
    d = json.loads(path.read_text(encoding="utf-8"))
    assert d["format"] == "semirest.labels/1" and d["image"] == "000.png" and d["mask"] == "000_mask.png"
    assert d["seconds"] == {"boxes": 4.812}
    assert (tmp_path / "000_mask.png").is_file()
    back = load_label(path)
    assert back.image == img and (back.width, back.height, back.tag) == (24, 16, "defective")
    assert np.array_equal(back.mask, mask) and back.boxes == lab.boxes
    assert back.blocks.cells == [(0, 1)] and back.kind == "mask"


def test_load_label_errors_name_the_file(tmp_path):
    with pytest.raises(LabelError, match="no such label file") as ei:
        load_label(tmp_path / "gone.json")
    assert "gone.json" in str(ei.value)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(LabelError, match="not a SemiREST label file") as ei:
        load_label(bad)
    assert "bad.json" in str(ei.value)
    # A mask of the wrong size names the mask file.
    write_png(tmp_path / "a.png", np.zeros((16, 24, 3), np.uint8))
    write_png(tmp_path / "a_mask.png", np.zeros((10, 10), np.uint8), rgb=False)
    (tmp_path / "a.json").write_text(json.dumps(
        {"format": "semirest.labels/1", "image": "a.png", "width": 24, "height": 16, "mask": "a_mask.png"}),
        encoding="utf-8")
    with pytest.raises(ImageReadError, match="mask is 10x10 px but its image is 24x16 px") as ei:
        load_label(tmp_path / "a.json")
    assert "a_mask.png" in str(ei.value)
