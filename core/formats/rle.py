"""COCO run-length encoding of binary masks, bit-compatible with pycocotools (no dependency on it).

A mask of ``h`` x ``w`` pixels is read in column-major (Fortran) order, so pixel (x, y) is element
``x * h + y``. ``counts`` are the lengths of alternating runs, starting with a run of *background*
(0) pixels, which is 0 when the first pixel is foreground. The counts always sum to ``h * w``.

Compressed RLE (``{"size": [h, w], "counts": "<str>"}``) writes the counts as a string, as
pycocotools' ``rleToString`` does: each count (from the fourth on, the difference to the count two
places before it, i.e. to the previous run of the same value) is split into 5-bit groups, least
significant first, in two's complement; each group becomes one character ``chr(48 + g)``, with
bit 0x20 set on every group but the last. A value is complete when the remaining bits are all
copies of the last group's sign bit (0x10), so small negative differences take one character.

Uncompressed RLE (``"counts": [int, ...]``) is accepted by :func:`decode` as well.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class RLEError(ValueError):
    """A run-length encoding is malformed (bad character, wrong total length, negative run)."""


# ---------------------------------------------------------------------------------------------
# counts <-> mask
# ---------------------------------------------------------------------------------------------
def counts_from_indices(indices: np.ndarray, n: int) -> list[int]:
    """Run lengths of a length-``n`` 0/1 sequence whose ones are at the sorted ``indices``."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        return [int(n)]
    # A new foreground run starts wherever the index is not the previous index + 1.
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = idx[np.concatenate(([0], breaks))]
    ends = idx[np.concatenate((breaks - 1, [idx.size - 1]))] + 1       # exclusive
    gaps = starts - np.concatenate(([0], ends[:-1]))                   # background before each run
    runs = np.empty(2 * starts.size + 1, np.int64)
    runs[0:-1:2] = gaps
    runs[1::2] = ends - starts
    runs[-1] = n - ends[-1]
    out = runs.tolist()
    if out[-1] == 0:             # pycocotools ends on the last real run
        out.pop()
    return out


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts of a (h, w) mask (non-zero = foreground)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise RLEError(f"mask must be 2-D (h, w), got shape {m.shape}")
    return counts_from_indices(np.flatnonzero(m.ravel(order="F")), m.size)


def counts_to_mask(counts: Sequence[int], h: int, w: int) -> np.ndarray:
    """(h, w) bool mask from uncompressed counts; the counts must sum to ``h * w``."""
    c = np.asarray(list(counts), dtype=np.int64)
    if c.ndim != 1:
        raise RLEError("counts must be a flat list of run lengths")
    if (c < 0).any():
        raise RLEError(f"negative run length {int(c[c < 0][0])} in counts")
    total = int(c.sum())
    if total != h * w:
        raise RLEError(f"run lengths sum to {total} pixels but the mask is {w}x{h} = {h * w} pixels")
    values = np.zeros(c.size, bool)
    values[1::2] = True
    flat = np.repeat(values, c)
    return flat.reshape((w, h)).T.copy()      # column-major -> (h, w), C-contiguous


# ---------------------------------------------------------------------------------------------
# counts <-> compressed string
# ---------------------------------------------------------------------------------------------
def counts_to_string(counts: Sequence[int]) -> str:
    """pycocotools ``rleToString``: counts as a LEB128-like string of chars '0' (48) to 'o' (111)."""
    counts = [int(v) for v in counts]
    out: list[str] = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5                      # arithmetic shift, as C's on a signed long
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_counts(s: str | bytes) -> list[int]:
    """pycocotools ``rleFrString``: the inverse of :func:`counts_to_string`."""
    if isinstance(s, bytes):
        try:
            s = s.decode("ascii")
        except UnicodeDecodeError as exc:
            raise RLEError("compressed counts must be ASCII") from exc
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise RLEError(f"compressed counts end in the middle of a value (at character {p})")
            c = ord(s[p]) - 48
            if not 0 <= c <= 63:
                raise RLEError(f"invalid character {s[p]!r} at position {p} of the compressed counts "
                               f"(allowed: '0' to 'o')")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)       # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


# ---------------------------------------------------------------------------------------------
# RLE objects
# ---------------------------------------------------------------------------------------------
def encode(mask: np.ndarray) -> dict:
    """Compressed RLE ``{"size": [h, w], "counts": str}`` of a (h, w) mask, as pycocotools'
    ``mask.encode`` (with ``counts`` decoded from bytes to str for JSON)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise RLEError(f"mask must be 2-D (h, w), got shape {m.shape}")
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": counts_to_string(mask_to_counts(m))}


def encode_indices(indices: np.ndarray, h: int, w: int) -> dict:
    """Compressed RLE of a mask given by the sorted column-major indices of its pixels."""
    return {"size": [int(h), int(w)], "counts": counts_to_string(counts_from_indices(indices, h * w))}


def rle_counts(rle: dict) -> tuple[int, int, list[int]]:
    """(h, w, counts) of a compressed or uncompressed RLE dict, checked for shape and length."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise RLEError("RLE must be an object with \"size\" and \"counts\"")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise RLEError(f"RLE \"size\" must be [height, width] (non-negative integers), got {size!r}")
    h, w = int(size[0]), int(size[1])
    raw = rle["counts"]
    if isinstance(raw, (str, bytes)):
        counts = string_to_counts(raw)
    elif isinstance(raw, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            raise RLEError("uncompressed RLE counts must be integers")
        counts = [int(v) for v in raw]
    else:
        raise RLEError(f"RLE \"counts\" must be a string or a list, got {type(raw).__name__}")
    if any(v < 0 for v in counts):
        raise RLEError("RLE has a negative run length")
    total = sum(counts)
    if total != h * w:
        raise RLEError(f"run lengths sum to {total} pixels but \"size\" is {h}x{w} = {h * w} pixels")
    return h, w, counts


def decode(rle: dict) -> np.ndarray:
    """(h, w) bool mask of a compressed or uncompressed RLE dict."""
    h, w, counts = rle_counts(rle)
    return counts_to_mask(counts, h, w)


def paint(rle: dict, out_t: np.ndarray) -> None:
    """Set the RLE's foreground pixels in ``out_t``, a C-contiguous (w, h) bool array (the
    transposed mask, whose flat order is the RLE's column-major order). Costs O(runs), not
    O(h * w), so many small instances on a large image decode fast."""
    h, w, counts = rle_counts(rle)
    if out_t.shape != (w, h) or out_t.dtype != bool or not out_t.flags.c_contiguous:
        raise ValueError(f"out_t must be a C-contiguous bool array of shape {(w, h)}")
    flat = out_t.reshape(-1)
    ends = np.cumsum(np.asarray(counts, np.int64))
    starts = ends - np.asarray(counts, np.int64)
    for s, e in zip(starts[1::2].tolist(), ends[1::2].tolist()):
        flat[s:e] = True


def area(rle: dict) -> int:
    """Number of foreground pixels."""
    _, _, counts = rle_counts(rle)
    return int(sum(counts[1::2]))


def to_bbox(rle: dict) -> list[int]:
    """[x, y, w, h] of the foreground, as pycocotools' ``toBbox`` (all zeros when empty)."""
    m = decode(rle)
    ys, xs = np.nonzero(m)
    if xs.size == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
