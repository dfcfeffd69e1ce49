"""Image and mask reading: canonical uint8 RGB / bool forms and errors naming the file."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

import core.data.images as images_mod
from core.data.images import list_images, read_image, read_mask
from core.errors import ImageReadError


def _write(path, arr, ext=".png"):
    """Encode ``arr`` (OpenCV channel order) with OpenCV and write the bytes (any path)."""
    ok, buf = cv2.imencode(ext, arr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _png(arr, color_type, bit_depth=8):
    """A minimal PNG writer, for layouts OpenCV does not write (gray + alpha)."""
    h, w = arr.shape[:2]

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    dt = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + np.ascontiguousarray(arr[y]).astype(dt).tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------
# Canonical form
# ---------------------------------------------------------------------------------------------
def test_rgb_order(tmp_path):
    bgr = np.zeros((9, 10, 3), np.uint8)
    bgr[...] = (10, 20, 30)                       # OpenCV stores B, G, R
    img = read_image(_write(tmp_path / "c.png", bgr))
    assert img.dtype == np.uint8 and img.shape == (9, 10, 3)
    assert img[0, 0].tolist() == [30, 20, 10]     # returned as R, G, B


def test_16_bit_png_scaled_to_8_bit(tmp_path):
    # value v -> round(v / 257): 65535 -> 255, 25700 = 100 * 257 -> 100, 385 / 257 = 1.498 -> 1,
    # 386 / 257 = 1.502 -> 2, 128 / 257 = 0.498 -> 0
    vals = np.array([[65535, 25700, 385, 386, 128, 0, 257, 32896]], np.uint16)
    arr = np.repeat(vals, 8, axis=0)
    arr = np.pad(arr, ((0, 0), (0, 2)), mode="edge")          # 8 x 10
    img = read_image(_write(tmp_path / "g16.png", arr))
    assert img.dtype == np.uint8 and img.shape == (8, 10, 3)
    assert img[0, :8, 0].tolist() == [255, 100, 1, 2, 0, 0, 1, 128]
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_16_bit_colour_png(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint16)
    bgr[...] = (0, 25700, 65535)
    img = read_image(_write(tmp_path / "c16.png", bgr))
    assert img[3, 3].tolist() == [255, 100, 0]


def test_rgba_alpha_dropped(tmp_path):
    bgra = np.zeros((8, 9, 4), np.uint8)
    bgra[...] = (10, 20, 30, 0)                   # fully transparent: colours kept, not blackened
    img = read_image(_write(tmp_path / "a.png", bgra))
    assert img.shape == (8, 9, 3) and img[0, 0].tolist() == [30, 20, 10]


def test_grayscale_replicated(tmp_path):
    g = np.arange(80, dtype=np.uint8).reshape(8, 10)
    img = read_image(_write(tmp_path / "g.png", g))
    assert img.shape == (8, 10, 3)
    for ch in range(3):
        assert np.array_equal(img[..., ch], g)


def test_gray_alpha_png(tmp_path):
    # PNG colour type 4 (gray + alpha), 8 and 16 bits.
    a = np.zeros((8, 8, 2), np.uint8)
    a[..., 0], a[..., 1] = 77, 0
    p = tmp_path / "ga.png"
    p.write_bytes(_png(a, 4))
    assert read_image(p)[2, 2].tolist() == [77, 77, 77]
    a16 = np.zeros((8, 8, 2), np.uint16)
    a16[..., 0], a16[..., 1] = 25700, 65535
    p.write_bytes(_png(a16, 4, 16))
    assert read_image(p)[2, 2].tolist() == [100, 100, 100]


def test_two_channel_array_uses_first_channel(tmp_path, monkeypatch):
    # OpenCV hands gray + alpha PNGs over as 4 channels; a decoder that gives 2 channels (gray, alpha)
    # must still produce the gray replicated.
    p = _write(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    two = np.zeros((8, 8, 2), np.uint8)
    two[..., 0], two[..., 1] = 200, 9
    monkeypatch.setattr(images_mod.cv2, "imdecode", lambda buf, flags: two.copy())
    assert read_image(p)[0, 0].tolist() == [200, 200, 200]
    assert read_mask(p).all()                       # mask: channel 0 (200 > 0)


def test_float_tiff(tmp_path):
    a = np.zeros((8, 8), np.float32)
    a[0, :4] = (0.0, 0.5, 1.0, 0.25)              # [0, 1] data: * 255, rounded: 0, 128, 255, 64
    ok, buf = cv2.imencode(".tiff", a)
    if not ok:
        pytest.skip("this OpenCV does not write float TIFF")
    p = tmp_path / "f.tiff"
    p.write_bytes(buf.tobytes())
    img = read_image(p)
    assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
    assert img[0, :4, 0].tolist() == [0, 128, 255, 64]
    # Data beyond 255 is stretched min..max: 0 -> 0, 500 -> 127.5 -> 128, 1000 -> 255.
    b = np.zeros((8, 8), np.float32)
    b[0, :3] = (0.0, 500.0, 1000.0)
    p.write_bytes(cv2.imencode(".tiff", b)[1].tobytes())
    assert read_image(p)[0, :3, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("dtype,vals,expected", [
    # Signed data is stretched min..max (regression: a cast wrapped -100 round to 156, brighter than
    # 100). int16 -100..200 (range 300): 0 -> 100/300*255 = 85.0 -> 85, 100 -> 170, 200 -> 255.
    (np.int16, [-100, 0, 100, 200], [0, 85, 170, 255]),
    # int8 -5..100 (range 105): 0 -> 5/105*255 = 12.1 -> 12, 5 -> 24.3 -> 24.
    (np.int8, [-5, 0, 5, 100], [0, 12, 24, 255]),
    # Non-negative integers above 255 are scaled by the maximum: 35000/70000*255 = 127.5 -> 128.
    (np.int32, [0, 70000, 35000, 1], [0, 255, 128, 0]),
    # Non-negative integers up to 255 are kept as they are.
    (np.int16, [0, 7, 200, 255], [0, 7, 200, 255]),
])
def test_integer_tiff(tmp_path, dtype, vals, expected):
    a = np.zeros((8, 8), dtype)
    a[0, :4] = vals
    ok, buf = cv2.imencode(".tiff", a)
    if not ok:
        pytest.skip(f"this OpenCV does not write {np.dtype(dtype).name} TIFF")
    p = tmp_path / "i.tiff"
    p.write_bytes(buf.tobytes())
    assert read_image(p)[0, :4, 0].tolist() == expected


def test_non_ascii_path(tmp_path):
    folder = tmp_path / "données"
    folder.mkdir()
    p = folder / "ñandú 画像.png"
    _write(p, np.full((8, 12, 3), 50, np.uint8))
    img = read_image(p)
    assert img.shape == (8, 12, 3) and (img == 50).all()
    assert list_images(folder) == [p]
    m = np.zeros((8, 12), np.uint8)
    m[1, 2] = 255
    _write(folder / "máscara.png", m)
    assert read_mask(folder / "máscara.png").sum() == 1


def test_list_images(tmp_path):
    for name in ("b.PNG", "a.jpg", ".hidden.png", "notes.txt", "c.tiff"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tiff"]
    assert list_images(tmp_path / "missing") == []


# ---------------------------------------------------------------------------------------------
# Errors: each names the file and says what is wrong
# ---------------------------------------------------------------------------------------------
def _error(path, reader=read_image, **kw):
    with pytest.raises(ImageReadError) as ei:
        reader(path, **kw)
    msg = str(ei.value)
    assert path.name in msg, msg
    assert ei.value.path == path
    return msg


def test_missing_file(tmp_path):
    assert "no such file" in _error(tmp_path / "gone.png")


def test_folder(tmp_path):
    d = tmp_path / "dir.png"
    d.mkdir()
    assert "is a folder" in _error(d)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    assert "empty" in _error(p)


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = buf.tobytes()
    p = tmp_path / "cut.png"
    p.write_bytes(data[:len(data) // 2])
    msg = _error(p)
    assert "truncated" in msg and "PNG" in msg


def test_corrupt_bytes_with_png_suffix(tmp_path):
    p = tmp_path / "noise.png"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    assert "not a supported image" in _error(p)
    p2 = tmp_path / "text.png"
    p2.write_text("hello, I am not a picture", encoding="utf-8")
    assert "not a supported image" in _error(p2)


def test_too_small_image(tmp_path):
    p = _write(tmp_path / "tiny.png", np.zeros((4, 20, 3), np.uint8))
    msg = _error(p)
    assert "too small" in msg and "20x4" in msg
    read_image(_write(tmp_path / "ok.png", np.zeros((8, 8, 3), np.uint8)))   # 8 x 8 is enough


def test_read_mask(tmp_path):
    m = np.zeros((6, 9), np.uint8)
    m[1, 2] = 255
    m[4, 7] = 1                                   # any non-zero pixel is defect
    mask = read_mask(_write(tmp_path / "m.png", m))
    assert mask.dtype == bool and mask.shape == (6, 9)
    assert mask.sum() == 2 and mask[1, 2] and mask[4, 7]
    # A colour mask: defect where any of B, G, R is non-zero; alpha ignored.
    c = np.zeros((6, 9, 4), np.uint8)
    c[..., 3] = 255
    c[0, 0, 2] = 255
    assert read_mask(_write(tmp_path / "c.png", c)).sum() == 1
    assert read_mask(tmp_path / "m.png", expected_hw=(6, 9)).sum() == 2


def test_read_mask_wrong_size_names_mask(tmp_path):
    p = _write(tmp_path / "000_mask.png", np.zeros((6, 9), np.uint8))
    msg = _error(p, read_mask, expected_hw=(10, 12))
    assert "mask is 9x6 px but its image is 12x10 px" in msg


def test_read_mask_errors(tmp_path):
    assert "no such file" in _error(tmp_path / "none_mask.png", read_mask)
    p = tmp_path / "bad_mask.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    assert "corrupt or truncated PNG" in _error(p, read_mask)


def _mask_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "core.data.images" and r.levelname == "WARNING"]


def test_non_binary_mask_warns_once_naming_file_and_count(tmp_path, caplog):
    arr = np.zeros((16, 16), np.uint8)
    arr[2:6, 2:6], arr[8:12, 8:12] = 128, 255          # 3 values: 0, 128, 255
    p = _write(tmp_path / "graded.png", arr)
    with caplog.at_level("WARNING", logger="core.data.images"):
        mask = read_mask(p)
        read_mask(p)                                    # read again (each evaluation): no repeat
    assert np.array_equal(mask, arr > 0)                # still non-zero = defect
    assert _mask_warnings(caplog) == [
        f"{p}: the mask has 3 distinct values, not 2 (a JPEG-saved or anti-aliased mask?); "
        f"every non-zero pixel is taken as defect"]


def test_jpeg_mask_warns(tmp_path, caplog):
    arr = np.zeros((32, 32), np.uint8)
    arr[8:20, 5:25] = 255
    p = _write(tmp_path / "m.jpg", arr, ".jpg")          # ringing round the edges: extra values
    with caplog.at_level("WARNING", logger="core.data.images"):
        read_mask(p)
    assert len(_mask_warnings(caplog)) == 1 and "m.jpg: the mask has" in _mask_warnings(caplog)[0]


@pytest.mark.parametrize("name, arr", [
    ("binary.png", np.where(np.eye(16, dtype=bool), 255, 0).astype(np.uint8)),
    ("ones.png", np.eye(16, dtype=np.uint8)),                                   # 0/1 masks
    ("empty.png", np.zeros((16, 16), np.uint8)),                                # normal image
    ("red.png", np.dstack([np.zeros((16, 16))] * 2 + [np.eye(16) * 255]).astype(np.uint8)),  # BGR red
    ("deep.png", np.where(np.eye(16, dtype=bool), 65535, 0).astype(np.uint16)),  # 16-bit
])
def test_binary_masks_do_not_warn(tmp_path, caplog, name, arr):
    with caplog.at_level("WARNING", logger="core.data.images"):
        read_mask(_write(tmp_path / name, arr))
    assert _mask_warnings(caplog) == []
