"""Model input size and the block grid (method.md component 1)."""
from __future__ import annotations

import numpy as np
import pytest

from core.data.geometry import BlockGrid, model_input_size


@pytest.mark.parametrize("w,h,size,expected", [
    (1000, 500, 512, (512, 256)),    # scale 0.512: 512 x 256 (already a multiple of 64)
    (1000, 300, 512, (512, 192)),    # 300 * 0.512 = 153.6 -> rounded up to 3 * 64 = 192
    (300, 1000, 512, (192, 512)),    # portrait: the same, transposed
    (700, 700, 512, (512, 512)),     # square
    (100, 100, 256, (256, 256)),     # small images are scaled up
    (100, 90, 256, (256, 256)),      # 90 * 2.56 = 230.4 -> 4 * 64 = 256 (never above image_size)
    (4000, 10, 512, (512, 64)),      # 10 * 0.128 = 1.28 -> at least one multiple: 64
    (640, 384, 512, (512, 320)),     # 384 * 0.8 = 307.2 -> 5 * 64 = 320
    (1024, 320, 512, (512, 192)),    # 320 * 0.5 = 160 -> 3 * 64 = 192 (rounded up, not down to 128)
    (512, 128, 512, (512, 128)),     # exact multiples stay
])
def test_model_input_size(w, h, size, expected):
    assert model_input_size(w, h, size) == expected


def test_model_input_size_other_multiple_and_errors():
    assert model_input_size(1000, 300, 512, multiple=32) == (512, 160)   # 153.6 -> 5 * 32
    with pytest.raises(ValueError, match="multiple of 64"):
        model_input_size(100, 100, 500)
    with pytest.raises(ValueError, match="positive"):
        model_input_size(0, 100, 512)


def test_block_grid_geometry():
    # 1000 x 300 at 512: input 512 x 192, 8-px blocks: 24 rows x 64 cols.
    # One block on the original image: 8 * 1000/512 = 15.625 px wide, 8 * 300/192 = 12.5 px tall.
    g = BlockGrid.for_image(1000, 300, 512)
    assert (g.input_width, g.input_height, g.rows, g.cols) == (512, 192, 24, 64)
    assert (g.block_w, g.block_h) == (15.625, 12.5)
    assert g.block_rect(1, 2) == (31.25, 12.5, 46.875, 25.0)
    assert g.block_rect(23, 63) == (984.375, 287.5, 1000.0, 300.0)     # the last block ends at the edge
    assert g.block_at(31.25, 12.5) == (1, 2)       # a block's own top-left corner
    assert g.block_at(31.2, 12.4) == (0, 1)        # just before it
    assert g.block_at(999.9, 299.9) == (23, 63)
    assert g.block_at(1000, 0) is None and g.block_at(0, 300) is None and g.block_at(-0.1, 5) is None


def test_blocks_to_mask():
    g = BlockGrid.for_image(1000, 300, 512)
    blocks = np.zeros((24, 64), bool)
    blocks[1, 2] = True
    m = g.blocks_to_mask(blocks)
    assert m.shape == (300, 1000)
    # Pixel (x, y) belongs to the block under its centre: x + 0.5 in [31.25, 46.875) -> x = 31..46
    # (16 px), y + 0.5 in [12.5, 25) -> y = 12..24 (13 px): 208 pixels.
    ys, xs = np.nonzero(m)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (12, 24, 31, 46)
    assert m.sum() == 16 * 13
    full = g.blocks_to_mask(np.ones((24, 64), bool))
    assert full.all()
    with pytest.raises(ValueError, match="grid is"):
        g.blocks_to_mask(np.zeros((64, 24), bool))


def test_blocks_to_mask_integer_scale():
    # 32 x 16 image at 64 (multiple 32): scale 2 -> 64 x 32, grid 4 rows x 8 cols, blocks 4 x 4 px.
    g = BlockGrid.for_image(32, 16, 64, multiple=32)
    assert (g.input_width, g.input_height, g.rows, g.cols, g.block_w, g.block_h) == (64, 32, 4, 8, 4.0, 4.0)
    blocks = np.zeros((4, 8), bool)
    blocks[3, 7] = True
    m = g.blocks_to_mask(blocks)
    expected = np.zeros((16, 32), bool)
    expected[12:16, 28:32] = True
    assert np.array_equal(m, expected)
