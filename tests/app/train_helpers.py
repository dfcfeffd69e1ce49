"""Real-data projects and tiny training runs for the training and review tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from core.data.images import read_mask
from core.data.labels import ImageLabel, boxes_from_mask

TINY = {
    "features": {"image_size": 128},
    "swin": {"embed_dim": 32, "num_heads": 2, "depth": 2, "mu": 16, "step": 8},
    "train": {"steps": 20, "val_every": 10, "checkpoint_every": 10, "warmup_steps": 5},
    "semi": {"steps": 10, "rampup_steps": 5},
    "synthesis": {"per_normal": 1.0},
}


def tiny_yaml(path: Path, steps: int = 20) -> Path:
    cfg = {**TINY, "train": {**TINY["train"], "steps": steps}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def piped_project(folder: Path, category: Path, n_train: int = 8, boxes: int = 2, test_bad: int = 2,
                  test_good: int = 2) -> Path:
    """A referenced-in-place project: ``n_train`` normals (train), ``boxes`` defective images with
    boxes from their masks (train), ``test_bad`` with masks and ``test_good`` normals (test)."""
    from app.project.importer import import_files
    from app.project.store import Store
    good = sorted((category / "train" / "good").glob("*.png"))[:n_train]
    bad = sorted((category / "test" / "impurity").glob("*.png"))[:boxes + test_bad]
    tgood = sorted((category / "test" / "good").glob("*.png"))[:test_good]
    labels, drawn = {}, {}
    for i, p in enumerate(bad):
        mask = read_mask(category / "ground_truth" / "impurity" / f"{p.stem}_mask.png")
        if i < boxes:   # drawn in the canvas after the import (below), not imported
            drawn[p] = boxes_from_mask(mask)
        else:
            labels[p.resolve()] = ImageLabel(p, mask=mask)
    for p in tgood:
        labels[p.resolve()] = ImageLabel(p, tag="normal")
    files = good + bad + tgood
    splits = ["train"] * len(good) + ["train"] * boxes + ["test"] * test_bad + ["test"] * len(tgood)
    with Store.create(folder) as s:
        rep = import_files(s, files, copy=False, split=splits, labels=labels)
        assert len(rep.added) == len(files), rep.skipped
        for p, bxs in drawn.items():    # boxes and their measured time, as the canvas writes them
            s.save_boxes(s.find_image(p), bxs)
            s.save_timing(f"t-{p.stem}", s.find_image(p), {"boxes": 5.0}, 0.0, 5.0)
    return folder


def train_in_project(folder: Path, config: Path, supervision: str = "all") -> int:
    """What the Train panel does, without a window: select, prepare, run the worker, register."""
    from app.project.store import Store
    from app.training.selection import RunSpec, prepare_run, register_model, run_dir_for, select_training_set
    from core.deploy.modelfile import ModelBundle
    with Store.open(folder) as s:
        spec = RunSpec(supervision=supervision, config=str(config))
        ts = select_training_set(s, supervision)
        run_dir = run_dir_for(s.folder, s.runs.next_run_id())
        cmd = prepare_run(run_dir, spec, ts)
        run_id = s.runs.add_run(spec.as_dict(), cmd, run_dir, ts.labels_used, ts.label_seconds,
                           label_seconds_estimated=ts.label_seconds_estimated)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        r = subprocess.run([sys.executable, *cmd], cwd=run_dir, capture_output=True, text=True, timeout=600,
                           env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        s.runs.update_run(run_id, started=time.time(), ended=time.time(), exit_code=0)
        return register_model(s, run_id, ModelBundle.load(run_dir / "model.pt"))


def copy_project(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
