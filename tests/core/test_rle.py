"""COCO RLE codec (core/data/formats/rle.py) against hand-worked examples, random round trips and
pycocotools' own encoder and decoder."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as cocomask

from core.data.formats import rle


def test_3x3_hand_worked():
    # mask (rows):          column-major (Fortran) order reads column by column:
    #   0 1 0                 col 0: 0 1 0   col 1: 1 1 0   col 2: 0 0 1
    #   1 1 0               -> 0 1 0 1 1 0 0 0 1
    #   0 0 1               runs: one 0, one 1, one 0, two 1s, three 0s, one 1
    # counts = [1, 1, 1, 2, 3, 1]   (starts with the background run)
    # string: the first three counts as themselves, then each minus the count two before it:
    #   1 -> '1'(48+1), 1 -> '1', 1 -> '1', 2-1=1 -> '1', 3-1=2 -> '2',
    #   1-2=-1 -> 5-bit group -1 & 31 = 31, rest of the value is -1 and bit 0x10 is set, so one
    #   character: 48+31 = 79 = 'O'
    mask = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
    assert rle.mask_to_counts(mask) == [1, 1, 1, 2, 3, 1]
    enc = rle.encode(mask)
    assert enc == {"size": [3, 3], "counts": "11112O"}
    assert np.array_equal(rle.decode(enc), mask)
    assert rle.area(enc) == 4                  # runs of ones: 1 + 2 + 1
    assert rle.to_bbox(enc) == [0, 0, 3, 3]


def test_first_pixel_foreground_starts_with_zero_run():
    # 2x2, all ones except bottom-right: Fortran order 1 1 1 0 -> counts [0, 3, 1]
    # string: '0', '3', then i=2 is not delta-coded: '1'
    mask = np.array([[1, 1], [1, 0]], bool)
    assert rle.mask_to_counts(mask) == [0, 3, 1]
    assert rle.encode(mask)["counts"] == "031"


def test_multi_character_values():
    # 1024 = 0b1_00000_00000: groups (low first) 0, 0, 1 ->
    #   0 with continuation bit 0x20 -> 48+32 = 'P', again 'P', then 1 -> '1'
    assert rle.counts_to_string([0, 1024]) == "0PP1"
    assert rle.string_to_counts("0PP1") == [0, 1024]
    # 1x100 mask, only the last pixel set: counts [99, 1]
    # 99 = 0b11_00011: groups 3 (+0x20 -> 48+35 = 'S') and 3 -> '3'; then 1 -> '1'
    mask = np.zeros((1, 100), bool)
    mask[0, 99] = True
    assert rle.mask_to_counts(mask) == [99, 1]
    assert rle.encode(mask)["counts"] == "S31"


def test_negative_delta_two_characters():
    # counts [5, 1, 200, 1, 100]: i=3: 1-1 = 0 -> '0'; i=4: 100-200 = -100.
    # -100 & 31 = 28 and -100 >> 5 = -4 (not -1), so continue: 28|32 = 60 -> 'l';
    # -4 & 31 = 28, -4 >> 5 = -1 and 28 has the sign bit 0x10, so stop: 48+28 = 'L'.
    # 200 = 0b110_01000: groups 8 (+0x20 -> 48+40 = 'X') and 6 -> '6'.
    s = rle.counts_to_string([5, 1, 200, 1, 100])
    assert s == "51X60lL"
    assert rle.string_to_counts(s) == [5, 1, 200, 1, 100]


def test_empty_and_full_masks():
    assert rle.mask_to_counts(np.zeros((4, 5), bool)) == [20]
    assert rle.mask_to_counts(np.ones((4, 5), bool)) == [0, 20]
    # 20 = 0b10100 has the sign bit 0x10 set in its only group, so a second (0) group must follow
    # to keep it positive: 20|0x20 -> 48+52 = 'd', then '0'.
    assert rle.encode(np.ones((4, 5), bool))["counts"] == "0d0"
    assert not rle.decode(rle.encode(np.zeros((4, 5), bool))).any()
    assert rle.to_bbox(rle.encode(np.zeros((4, 5), bool))) == [0, 0, 0, 0]


def test_fortran_order_not_c_order():
    # A single pixel at (x=2, y=0) of a 3-high, 4-wide mask is element 2*3+0 = 6 in column-major
    # order (it would be element 2 in row-major order).
    mask = np.zeros((3, 4), bool)
    mask[0, 2] = True
    assert rle.mask_to_counts(mask) == [6, 1, 5]
    assert rle.to_bbox(rle.encode(mask)) == [2, 0, 1, 1]


@pytest.mark.parametrize("seed", range(5))
def test_random_round_trips(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        density = rng.choice([0.0, 0.02, 0.3, 0.7, 0.98, 1.0])
        mask = rng.random((h, w)) < density
        enc = rle.encode(mask)
        assert enc["size"] == [h, w]
        assert isinstance(enc["counts"], str)
        assert all(48 <= ord(c) <= 111 for c in enc["counts"])
        back = rle.decode(enc)
        assert back.dtype == bool and np.array_equal(back, mask)
        counts = rle.mask_to_counts(mask)
        assert sum(counts) == h * w
        assert rle.string_to_counts(enc["counts"]) == counts
        # uncompressed RLE decodes to the same mask
        assert np.array_equal(rle.decode({"size": [h, w], "counts": counts}), mask)
        assert rle.area(enc) == int(mask.sum())


def test_large_counts_round_trip():
    rng = np.random.default_rng(7)
    counts = [int(v) for v in rng.integers(0, 2_000_000, 50)]
    counts[0] = 0
    assert rle.string_to_counts(rle.counts_to_string(counts)) == counts


def test_bytes_counts_accepted():
    mask = np.eye(5, dtype=bool)
    enc = rle.encode(mask)
    assert np.array_equal(rle.decode({"size": [5, 5], "counts": enc["counts"].encode()}), mask)


@pytest.mark.parametrize("bad, message", [
    ({"size": [3, 3], "counts": "11112"}, "sum to 8 pixels"),          # [1, 1, 1, 2, 3]
    ({"size": [3, 3], "counts": [1, 1, 1, 2, 3, 2]}, "sum to 10 pixels"),
    ({"size": [3, 3], "counts": "11~12O"}, "invalid character '~'"),
    ({"size": [3, 3], "counts": "1P"}, "end in the middle of a value"),
    ({"size": [3], "counts": "9"}, "\"size\" must be [height, width]"),
    ({"counts": "9"}, "\"size\" and \"counts\""),
    ({"size": [3, 3], "counts": [4, -1, 6]}, "negative run length"),
])
def test_malformed_rle_rejected(bad, message):
    with pytest.raises(rle.RLEError) as exc:
        rle.decode(bad)
    assert message in str(exc.value)


def test_paint_ors_into_transposed_buffer():
    rng = np.random.default_rng(3)
    a = rng.random((7, 11)) < 0.3
    b = rng.random((7, 11)) < 0.3
    buf = np.zeros((11, 7), bool)
    rle.paint(rle.encode(a), buf)
    rle.paint(rle.encode(b), buf)
    assert np.array_equal(buf.T, a | b)
    with pytest.raises(ValueError):
        rle.paint(rle.encode(a), np.zeros((7, 11), bool))     # not transposed
    with pytest.raises(rle.RLEError, match="sum to"):
        rle.paint({"size": [7, 11], "counts": [3, 4]}, buf)


def _random_masks(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        density = rng.choice([0.0, 0.02, 0.3, 0.7, 0.98, 1.0])
        yield rng.random((h, w)) < density


# pycocotools' decode under NumPy 2: "__array__ implementation doesn't accept a copy keyword"
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_pycocotools(seed):
    """What we write is pycocotools' encoding, whichever way the mask is given; what we read of
    pycocotools' strings (the checked reader, area, box) is what pycocotools reads."""
    for mask in _random_masks(100 + seed):
        h, w = mask.shape
        theirs = cocomask.encode(np.asfortranarray(mask.astype(np.uint8)))
        s = theirs["counts"].decode("ascii")
        assert rle.encode(mask) == {"size": [h, w], "counts": s}
        assert rle.encode(mask.astype(np.uint8) * 255)["counts"] == s      # non-zero = foreground
        assert rle.encode_indices(np.flatnonzero(mask.ravel(order="F")), h, w)["counts"] == s
        assert rle.counts_to_string(rle.mask_to_counts(mask)) == s
        assert rle.string_to_counts(s) == rle.mask_to_counts(mask)
        back = rle.decode({"size": [h, w], "counts": s})
        assert np.array_equal(back, cocomask.decode(theirs).astype(bool))
        assert rle.area({"size": [h, w], "counts": s}) == int(cocomask.area(theirs)) == int(mask.sum())
        assert rle.to_bbox({"size": [h, w], "counts": s}) == [int(v) for v in cocomask.toBbox(theirs)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_too_short_rle_refused_although_pycocotools_pads_it():
    # pycocotools decodes "11112" (8 of 9 pixels) as if a background pixel followed, and its merge
    # never returns on such an RLE: the checked reader refuses it first.
    theirs = cocomask.decode({"size": [3, 3], "counts": b"11112"})
    assert theirs.shape == (3, 3)
    with pytest.raises(rle.RLEError, match="sum to 8 pixels"):
        rle.area({"size": [3, 3], "counts": "11112"})
