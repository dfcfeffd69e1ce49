"""Loading a file that is not a good SemiREST model: one plain sentence naming the file and why,
never a KeyError, never PyTorch's advice to load with weights_only=False (running the file's code)."""
from __future__ import annotations

import json
import math
import pickle
import zipfile

import numpy as np
import pytest
import torch

from core.config import preset
from core.deploy.modelfile import FORMAT, ModelBundle
from core.errors import InputError


class Evil:
    """Unpickling this would create a file: what a malicious model file could do instead."""

    marker = None

    def __reduce__(self):
        return open, (str(Evil.marker), "w")


class Plain:
    pass


def _good() -> dict:
    return ModelBundle(preset("cpu"), "tf_efficientnet_lite0", 8,
                       {"features": torch.zeros(2, 8), "owner": torch.zeros(2, dtype=torch.int32)},
                       {"w": torch.ones(3)}, 1.0).to_dict()


def _tagged(**changes) -> dict:
    d = _good()
    for k, v in changes.items():
        if v is _DROP:
            del d[k]
        else:
            d[k] = v
    return d


_DROP = object()


def _save(obj):
    return lambda p: torch.save(obj, p)


def _truncated(p):
    torch.save(_good(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _zip_not_torch(p):
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")


NOT_MODEL = "not a SemiREST model file"
CASES = [
    ("random bytes", lambda p: p.write_bytes(np.random.default_rng(0).bytes(1000)),
     f"{NOT_MODEL} (it is not a PyTorch zip archive)"),
    ("empty file", lambda p: p.write_bytes(b""), f"{NOT_MODEL} (the file is empty)"),
    ("text", lambda p: p.write_text("model: yes\n"), f"{NOT_MODEL} (it is not a PyTorch zip archive)"),
    ("plain pickle", lambda p: p.write_bytes(pickle.dumps({"w": [1, 2]})),
     f"{NOT_MODEL} (it is not a PyTorch zip archive)"),
    ("plain state dict", _save({"layer.weight": torch.zeros(3)}),
     f"{NOT_MODEL} (it has no format tag: a plain PyTorch state dict or checkpoint?)"),
    ("a list", _save([torch.zeros(2)]), f"{NOT_MODEL} (it holds a list, not a SemiREST model)"),
    ("pickled class", _save({"format": FORMAT, "x": Plain()}),
     "Plain), which SemiREST never loads since loading them could run code)"),
    ("pickled code", lambda p: torch.save({"format": FORMAT, "x": Evil()}, p),   # open is io.open
     f"{NOT_MODEL} (it holds Python objects ("),
    ("truncated model", _truncated, f"{NOT_MODEL} (PyTorch cannot read it, damaged or truncated?"),
    ("zip, not torch", _zip_not_torch, f"{NOT_MODEL} (PyTorch cannot read it, damaged or truncated?"),
    ("other format tag", _save(_tagged(format="semirest.labels/1")),
     f"{NOT_MODEL} (its format tag is 'semirest.labels/1', expected '{FORMAT}')"),
    ("newer version", _save(_tagged(format="semirest.model/2")),
     f"written by a newer SemiREST Studio (model format semirest.model/2; this version reads {FORMAT}): "
     f"update SemiREST Studio to open it"),
    ("missing config", _save(_tagged(config=_DROP)), "SemiREST model file is incomplete: missing 'config'"),
    ("tag only", _save({"format": FORMAT}),
     "SemiREST model file is incomplete: missing 'config', 'backbone', 'feature_dim', 'bank', 'swin', "
     "'residual_scale'"),
    ("config a list", _save(_tagged(config=[1])),
     "SemiREST model file is invalid: 'config' must be a dictionary of settings, got [1]"),
    ("backbone a number", _save(_tagged(backbone=5)),
     "SemiREST model file is invalid: 'backbone' must be a backbone name, got 5"),
    ("feature_dim text", _save(_tagged(feature_dim="abc")),
     "SemiREST model file is invalid: 'feature_dim' must be a positive integer, got 'abc'"),
    ("bank empty", _save(_tagged(bank={})), "SemiREST model file is invalid: 'bank' must be a memory bank"),
    ("bank owner mismatch", _save(_tagged(bank={"features": torch.zeros(2, 8), "owner": torch.zeros(3)})),
     "'bank' must be a memory bank"),
    ("swin not tensors", _save(_tagged(swin={"w": 5})),
     "SemiREST model file is invalid: 'swin' must be a dictionary of weight tensors"),
    ("residual_scale nan", _save(_tagged(residual_scale=math.nan)),
     "SemiREST model file is invalid: 'residual_scale' must be a finite number, got nan"),
    ("training a list", _save(_tagged(training=[1])),
     "SemiREST model file is invalid: 'training' must be a dictionary, got [1]"),
]


@pytest.mark.parametrize("make, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_model_file_is_named_with_a_plain_reason(tmp_path, make, message):
    path = tmp_path / "m.pt"
    Evil.marker = tmp_path / "pwned"
    make(path)
    with pytest.raises(InputError) as exc:
        ModelBundle.load(path)
    err = exc.value
    assert err.path == path and str(err) == f"{path}: {err.problem}" and message in err.problem
    # PyTorch's advice (load with weights_only=False) is nowhere: not in the message, not in the
    # chained cause a traceback would print
    assert "weights_only" not in str(err) and err.__cause__ is None
    assert err.__suppress_context__ or err.__context__ is None
    assert not Evil.marker.exists()          # the pickled open() never ran


def test_the_good_file_loads(tmp_path):
    """The base of the table is valid: every failure above comes from its one change."""
    torch.save(_good(), tmp_path / "m.pt")
    b = ModelBundle.load(tmp_path / "m.pt")
    assert (b.backbone, b.feature_dim, b.residual_scale, b.validation) == ("tf_efficientnet_lite0", 8, 1.0, {})
    json.dumps(b.config.to_dict())


def test_missing_file_and_folder(tmp_path):
    for p in (tmp_path / "gone.pt", tmp_path):
        with pytest.raises(InputError, match="no such model file"):
            ModelBundle.load(p)
