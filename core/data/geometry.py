"""Where the model looks: input size and the block grid.

Spec component 1: the longest side is resized to ``image_size`` and the other side keeps the
aspect ratio, rounded up to a multiple of ``multiple`` (64) so feature maps tile into windows. The
image is stretched to that size (the rounding changes the aspect ratio by under one ``multiple``).

One block = one token = ``block`` x ``block`` pixels of the *model input* (8 for stride-8
features). On the original image a block is a rectangle of ``block * W / W_in`` by
``block * H / H_in`` pixels, which is what the labelling canvas draws and toggles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def model_input_size(width: int, height: int, image_size: int, multiple: int = 64) -> tuple[int, int]:
    """(W_in, H_in) of the model input for an image of ``width`` x ``height`` pixels."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if image_size % multiple:
        raise ValueError(f"image_size {image_size} must be a multiple of {multiple}")
    scale = image_size / max(width, height)
    w_in = max(multiple, int(math.ceil(width * scale / multiple - 1e-9)) * multiple)
    h_in = max(multiple, int(math.ceil(height * scale / multiple - 1e-9)) * multiple)
    return min(w_in, image_size), min(h_in, image_size)


@dataclass(frozen=True)
class BlockGrid:
    """The block grid of one image: ``rows`` x ``cols`` blocks over a ``width`` x ``height`` image."""

    width: int          # original image width (px)
    height: int         # original image height (px)
    input_width: int    # model input width (px)
    input_height: int   # model input height (px)
    block: int          # block size at the model input (px)

    @classmethod
    def at_input_size(cls, img: np.ndarray, block: int = 8) -> "BlockGrid":
        """The grid of an image already at the model input size (input size == image size)."""
        h, w = img.shape[:2]
        return cls(w, h, w, h, block)

    @classmethod
    def for_image(cls, width: int, height: int, image_size: int, block: int = 8,
                  multiple: int = 64) -> "BlockGrid":
        w_in, h_in = model_input_size(width, height, image_size, multiple)
        return cls(width, height, w_in, h_in, block)

    @property
    def rows(self) -> int:
        return self.input_height // self.block

    @property
    def cols(self) -> int:
        return self.input_width // self.block

    @property
    def block_w(self) -> float:
        """Block width in original-image pixels."""
        return self.block * self.width / self.input_width

    @property
    def block_h(self) -> float:
        return self.block * self.height / self.input_height

    def block_rect(self, row: int, col: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of a block in original-image pixel coordinates."""
        return (col * self.block_w, row * self.block_h, (col + 1) * self.block_w, (row + 1) * self.block_h)

    def block_at(self, x: float, y: float) -> tuple[int, int] | None:
        """(row, col) of the block under original-image point (x, y), or None outside."""
        if not (0 <= x < self.width and 0 <= y < self.height):
            return None
        return int(y // self.block_h), int(x // self.block_w)

    def blocks_to_mask(self, blocks: np.ndarray) -> np.ndarray:
        """Paint a (rows, cols) bool block map onto a (height, width) bool pixel mask."""
        blocks = np.asarray(blocks, bool)
        if blocks.shape != (self.rows, self.cols):
            raise ValueError(f"block map is {blocks.shape}, grid is {(self.rows, self.cols)}")
        ys = np.minimum((np.arange(self.height) + 0.5) / self.block_h, self.rows - 1).astype(int)
        xs = np.minimum((np.arange(self.width) + 0.5) / self.block_w, self.cols - 1).astype(int)
        return blocks[ys[:, None], xs[None, :]]
