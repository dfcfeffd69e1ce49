"""Field checks for labels: one rule set for every reader (the per-image JSON, COCO, LabelMe) and
every writer (:meth:`core.data.labels.ImageLabel.validate`, which the app's store calls before it
stores anything).

Each check raises :class:`~core.errors.LabelError` naming ``where`` (the file, or the image) and
the field, e.g. ``a.json: field 'width' must be a positive integer, got '128px'``. ``field`` is a
path into the document ("width", "boxes[2].angle", "images[0].width").
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path

from ..errors import LabelError

Where = str | Path | None

TAGS = ("normal", "defective")
LABEL_KINDS = ("mask", "blocks", "boxes", "tag")
#: Keys of ``ImageLabel.seconds``: the label kinds, and "checked" (time spent judging an image and
#: giving it a verdict; app.labeling.timing.TIMING_KINDS, the store's timing table refuses other kinds).
CHECKED = "checked"
SECONDS_KINDS = (*LABEL_KINDS, CHECKED)
#: BlockCells grids are laid on a model input whose sides are multiples of 64 px
#: (geometry.model_input_size's default), so a block of at most 64 px always gives >= 1 row.
BLOCK_MULTIPLE = 64
#: Largest block-grid image size: the grid (image_size / block)^2 is allocated when painted.
MAX_BLOCK_IMAGE_SIZE = 16384


def is_number(v) -> bool:
    # numbers.Real, not (int, float): numpy scalars (float32 from OpenCV, int64 from arrays) are
    # valid; bool is an int to Python but never a coordinate or a size.
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def number(v, where: Where, field: str, *, minimum: float | None = None) -> float:
    """A finite real number (strings such as "30" are refused: JSON numbers are not quoted)."""
    if not is_number(v) or not math.isfinite(v):
        raise LabelError(where, f"field '{field}' must be a finite number, got {v!r}")
    if minimum is not None and v < minimum:
        raise LabelError(where, f"field '{field}' must be at least {minimum:g}, got {v!r}")
    return float(v)


def integer(v, where: Where, field: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number in [minimum, maximum] (8.0 is accepted: other tools write floats)."""
    if not (is_number(v) and math.isfinite(v) and float(v).is_integer()
            and v >= minimum and (maximum is None or v <= maximum)):
        if minimum == 1 and maximum is None:
            rule = "a positive integer"
        elif minimum == 0 and maximum is None:
            rule = "a non-negative integer"
        else:
            rule = f"an integer from {minimum} to {maximum}" if maximum is not None else \
                f"an integer of at least {minimum}"
        raise LabelError(where, f"field '{field}' must be {rule}, got {v!r}")
    return int(v)


def positive_int(v, where: Where, field: str) -> int:
    return integer(v, where, field, minimum=1)


def text(v, where: Where, field: str) -> str:
    """A non-empty string (a file name, a reference)."""
    if not isinstance(v, str) or not v:
        raise LabelError(where, f"field '{field}' must be a non-empty string, got {v!r}")
    return v


def mapping(v, where: Where, field: str) -> dict:
    if not isinstance(v, dict):
        raise LabelError(where, f"field '{field}' must be an object, got {v!r}")
    return v


def sequence(v, where: Where, field: str) -> list | tuple:
    if not isinstance(v, (list, tuple)):
        raise LabelError(where, f"field '{field}' must be a list, got {v!r}")
    return v


def tag(v, where: Where, field: str = "tag") -> str | None:
    if v is not None and v not in TAGS:
        raise LabelError(where, f"field '{field}' must be \"normal\", \"defective\" or null, got {v!r}")
    return v


def image_size(width, height, where: Where, prefix: str = "") -> tuple[int | None, int | None]:
    """Width and height: both positive integers, or both None (size not known yet)."""
    if width is None and height is None:
        return None, None
    if width is None or height is None:
        raise LabelError(where, f"fields '{prefix}width' and '{prefix}height' must both be given "
                                f"or both be null, got {width!r} and {height!r}")
    return positive_int(width, where, f"{prefix}width"), positive_int(height, where, f"{prefix}height")


def seconds(d, where: Where, field: str = "seconds") -> dict[str, float]:
    """Annotation seconds per kind: {kind: non-negative number}; None is no seconds."""
    if d is None:
        return {}
    mapping(d, where, field)
    out = {}
    for k, v in d.items():
        if k not in SECONDS_KINDS:
            raise LabelError(where, f"field '{field}' has an unknown label kind {k!r} "
                                    f"(expected one of {', '.join(SECONDS_KINDS)})")
        out[k] = number(v, where, f"{field}.{k}", minimum=0)
    return out


def estimated_seconds(estimated: dict, total: dict, where: Where,
                      field: str = "seconds_estimated") -> dict[str, float]:
    """The estimated part of the seconds per kind: each kind one of ``total``'s, at most its total
    (a small rounding slack: both are written rounded to ms)."""
    out = seconds(estimated, where, field)
    for k, v in out.items():
        if v > total.get(k, 0.0) + 1e-3:
            raise LabelError(where, f"field '{field}.{k}' is {v:g} s, more than the {total.get(k, 0.0):g} s "
                                    f"the label's 'seconds.{k}' says it took in all")
    return out


def block_grid(image_size_, block, where: Where, field: str = "blocks") -> tuple[int, int]:
    """(image_size, block) of a BlockCells grid."""
    s = integer(image_size_, where, f"{field}.image_size", minimum=BLOCK_MULTIPLE,
                maximum=MAX_BLOCK_IMAGE_SIZE)
    if s % BLOCK_MULTIPLE:
        raise LabelError(where, f"field '{field}.image_size' must be a multiple of {BLOCK_MULTIPLE}, "
                                f"got {image_size_!r}")
    return s, integer(block, where, f"{field}.block", minimum=1, maximum=BLOCK_MULTIPLE)


def cell(v, where: Where, field: str) -> tuple[int, int]:
    """One block cell: [row, column], non-negative integers."""
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise LabelError(where, f"field '{field}' must be a [row, column] pair, got {v!r}")
    return integer(v[0], where, f"{field}[0]"), integer(v[1], where, f"{field}[1]")
