"""The method registry (core/methods/__init__.py) and the detector interface (core/methods/detector.py)."""
import subprocess
import sys

import pytest

from core.errors import ConfigError
from core.methods import BY_NAME, METHODS, REGISTRY, USES_LABELS, detector_class
from core.methods.detector import Detector


def test_every_registered_method_resolves_to_a_detector_of_that_name():
    assert len(BY_NAME) == len(REGISTRY)                        # names are unique
    for m in REGISTRY:
        cls = detector_class(m.name)
        assert issubclass(cls, Detector) and cls.name == m.name
        assert cls.fit is not Detector.fit and cls.group_maps is not Detector.group_maps
        assert METHODS[m.name] == m.summary and USES_LABELS[m.name] == m.uses_labels
        assert m.uses_labels or m.labels_note     # a method that refuses labels says why


def test_unknown_method_is_a_config_error_listing_the_choices():
    with pytest.raises(ConfigError, match="unknown method 'nope'.*patchcore"):
        detector_class("nope")


def test_colouring_a_map_loads_no_torch():
    """The viewer colours arrays through core.eval.anomaly_map, which must stay torch-free."""
    code = ("import sys, numpy as np\n"
            "from app.viewer.maps import colorize_rgba, smoothed_map\n"
            "m = smoothed_map(np.random.rand(8, 8).astype('float32'), 64, 64)\n"
            "rgba = colorize_rgba(m, 1.0, 'jet', 0.5)\n"
            "assert rgba.shape == m.shape + (4,) and rgba[..., 3].max() > 0, rgba.shape\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
