"""RotatedBox.validate accepts numpy scalars (regression: they were reported as non-finite)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.data.labels import RotatedBox
from core.errors import LabelError


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_numpy_scalar_boxes_validate(dtype):
    vals = np.array([10, 12, 4, 2, 30], dtype=dtype)
    box = RotatedBox(*vals).validate("x.png")
    assert box.as_dict() == {"cx": 10.0, "cy": 12.0, "w": 4.0, "h": 2.0, "angle": 30.0}


@pytest.mark.parametrize("bad", [np.float32("nan"), math.inf, "3"])
def test_non_finite_or_non_numbers_still_rejected(bad):
    with pytest.raises(LabelError, match="non-finite value"):
        RotatedBox(bad, 1.0, 2.0, 2.0, 0.0).validate("x.png")
