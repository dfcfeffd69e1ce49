"""Shared test setup: Qt offscreen, isolated user settings, the real dataset (optional), a tiny
config and small generated datasets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent


def _shared_data() -> Path:
    """``../shared/data`` beside the repository; in a git worktree, beside the main checkout
    (``$SEMIREST_SHARED_DATA`` overrides)."""
    if os.environ.get("SEMIREST_SHARED_DATA"):
        return Path(os.environ["SEMIREST_SHARED_DATA"])
    here = ROOT.parent / "shared" / "data"
    git = ROOT / ".git"
    if here.is_dir() or not git.is_file():
        return here
    try:   # .git is "gitdir: <main>/.git/worktrees/<name>"; commondir points at <main>/.git
        gitdir = Path(git.read_text(encoding="utf-8").split("gitdir:", 1)[1].strip())
        common = (gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()).resolve()
    except (OSError, IndexError):
        return here
    main = common.parent / "shared" / "data" if common.name != ".git" else common.parent.parent / "shared" / "data"
    return main if main.is_dir() else here


SHARED_DATA = _shared_data()
PIPED_ROOT = SHARED_DATA / "piped"
PIPED = PIPED_ROOT / "PA_BDP01_TL"


@pytest.fixture(autouse=True)
def _isolated_user_settings(tmp_path, monkeypatch):
    """Never read or write the real user's QSettings (recent projects, brush size)."""
    monkeypatch.setenv("SEMIREST_STUDIO_SETTINGS", str(tmp_path / "user-settings.ini"))


@pytest.fixture(scope="session")
def piped() -> Path:
    """The PIPED root (``../shared/data/piped``); skips when it is absent."""
    if not PIPED_ROOT.is_dir():
        pytest.skip(f"real data not found at {PIPED_ROOT} (../shared/data/piped beside the repository)")
    return PIPED_ROOT


@pytest.fixture
def piped_category():
    """One real PIPED category in the MVTec layout; skips when it is absent."""
    if not (PIPED / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED} (../shared/data is absent on this machine)")
    return PIPED


@pytest.fixture
def tiny_cfg():
    """The cpu preset shrunk so a training run takes seconds: same code paths, smaller sizes."""
    return tiny_config()


def tiny_config():
    """:func:`tiny_cfg` as a plain function, for module-scoped fixtures that train once."""
    from core.config import preset
    return preset("cpu").updated({
        "features": {"image_size": 128},
        "swin": {"embed_dim": 32, "num_heads": 2, "depth": 2, "mu": 16, "step": 8},
        "train": {"steps": 30, "val_every": 15, "checkpoint_every": 15, "warmup_steps": 5},
        "semi": {"steps": 20, "rampup_steps": 10},
        "synthesis": {"per_normal": 1.0},
    })


def tiny_yaml(path: Path, steps: int, val_every: int, warmup_steps: int = 2) -> Path:
    """A config file for the command lines a test runs (bench scripts, Ray jobs): the tiny sizes of
    :func:`tiny_config` with ``steps`` training steps validated every ``val_every``."""
    import yaml
    path.write_text(yaml.safe_dump({
        "features": {"image_size": 128},
        "swin": {"embed_dim": 32, "num_heads": 2, "depth": 2, "mu": 16, "step": 8},
        "train": {"steps": steps, "val_every": val_every, "checkpoint_every": val_every,
                  "warmup_steps": warmup_steps},
        "synthesis": {"per_normal": 1.0}}))
    return path


def kept_unsup_model(demo_data: Path, work: Path) -> Path:
    """A tiny unsupervised model of ``demo_data`` where the bench keeps one
    (``work/<class>-unsup-0.pt``), scoring with the Swin alone (validation may keep the distance
    alone on a tiny model, which runs no Swin): what bench/quantize.py and bench/precision.py read."""
    from core import api
    from core.deploy.modelfile import ModelBundle
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{demo_data.name}-unsup-0.pt"
    api.fit(sorted((demo_data / "train" / "good").glob("*.png")), path, tiny_config(), "cpu", resume=False)
    model = ModelBundle.load(path)
    model.calibration["fusion"] = {**(model.calibration.get("fusion") or {"d_ref": 10.0}), "weight": 0.0}
    model.save(path)
    return path


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A generated MVTec-layout category (fast; no outside data)."""
    from core.demo import make_dataset
    return make_dataset(tmp_path_factory.mktemp("demo"), n_train=8, n_good=3, n_bad=4)
