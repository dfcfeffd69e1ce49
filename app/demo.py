"""The demo project: real paper-impurity images shipped in ``resources/demo`` (PIPED, CC BY 4.0),
with a few labels, opened in the app, training a first model on first start.

    python -m app --demo [DIR] [--no-train]       (./dev demo)

Where: ``DIR``, else the user's data folder (``$XDG_DATA_HOME`` or ``~/.local/share`` on Linux,
``~/Library/Application Support`` on macOS, ``%LOCALAPPDATA%`` on Windows) under
``semirest-studio/demo-project``; never inside the installed package. The first start builds it and
starts a cpu-preset training run ("whatever labels exist"), so heatmaps appear within minutes; a
later start reopens it as the user left it.

What the project holds (PA_BDP01_TL, 128 x 128 px): 12 good parts in the train split; 5 defective
parts in the train split labelled the quick ways (3 with boxes drawn from their masks with
``core.data.labels.boxes_from_mask``, 1 tagged defective, 1 with its pixel mask); 5 defective parts with
their masks and 4 good parts in the test split (ground truth for review, never trained on). The
labels were not drawn by anyone, so their annotation seconds are the label cost model's estimates
from each label's geometry (core/data/labelcost.py, the paper's Fig. 6 priors; recorded by the importer
as for any imported label): stored as *estimated*, the timing exports keep them apart from measured
time, and the label-budget plot has something to show.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from core.data.images import read_mask
from core.data.labels import ImageLabel, boxes_from_mask

from . import resources

CATEGORY = "PA_BDP01_TL"
TRAIN_BOXES, TRAIN_TAG, TRAIN_MASK = (0, 1, 2), (3,), (4,)


def demo_data() -> Path:
    return resources.path("demo") / CATEGORY


def default_dir() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "SemiREST Studio" / "demo-project"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "SemiREST Studio" / "demo-project"
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "semirest-studio" / "demo-project"


def build_demo_project(folder: str | Path, data: Path | None = None) -> Path:
    """Create the demo project in ``folder`` (images copied in, so it is self-contained)."""
    from .project.importer import import_files
    from .project.store import Store
    data = Path(data or demo_data())
    if not (data / "train" / "good").is_dir():
        raise FileNotFoundError(f"the demo images are missing: {data} (a broken installation?)")
    good = sorted((data / "train" / "good").glob("*.png"))
    test_good = sorted((data / "test" / "good").glob("*.png"))
    bad = sorted((data / "test" / "impurity").glob("*.png"))
    labels: dict[Path, ImageLabel] = {}
    files, splits = [], []
    for p in good:
        files.append(p), splits.append("train")
        labels[p.resolve()] = ImageLabel(p, tag="normal")
    for i, p in enumerate(bad):
        mask = read_mask(data / "ground_truth" / "impurity" / f"{p.stem}_mask.png")
        if i in TRAIN_BOXES:
            lab = ImageLabel(p, boxes=boxes_from_mask(mask))
        elif i in TRAIN_TAG:
            lab = ImageLabel(p, tag="defective")
        else:
            lab = ImageLabel(p, mask=mask)
        labels[p.resolve()] = lab
        files.append(p), splits.append("train" if i in TRAIN_BOXES + TRAIN_TAG + TRAIN_MASK else "test")
    for p in test_good:
        files.append(p), splits.append("test")
        labels[p.resolve()] = ImageLabel(p, tag="normal")
    folder = Path(folder)
    building = folder.with_name(f".{folder.name}.building")   # renamed at the end: never half a demo
    if building.exists():
        shutil.rmtree(building)
    with Store.create(building) as store:
        report = import_files(store, files, copy=True, split=splits, root=data, labels=labels)
        if report.skipped:
            raise RuntimeError(f"demo images could not be imported: {report.skipped}")
    os.replace(building, folder)
    return folder


def start_first_training(window, config: str | None = None):
    """The first start's run: whatever labels exist, cpu preset with the demo's step counts
    (``resources/demo/demo.yaml``), the picker's device."""
    from .training.selection import RunSpec
    docks = window.docks
    if config is None and resources.path("demo", "demo.yaml").is_file():
        config = str(resources.path("demo", "demo.yaml"))
    spec = RunSpec(supervision="all", preset="cpu", backbone="auto", device=docks.train_panel.device.current(),
                   config=config)
    docks.train_panel.set_spec(spec)
    docks.dock["train"].raise_()
    window.statusBar().showMessage("Demo: training a first model on the CPU; heatmaps appear when it finishes", 20000)
    return docks.training.start(spec)
