"""synthesis.refresh_every: training draws fresh synthetic defects instead of memorising one pool."""
from __future__ import annotations

import numpy as np
import torch

from core.embedding.features import Encoder
from core.learning.training import Trainer
from core.learning.trainset import build_material
from core.progress import Reporter


def test_training_replaces_the_synthetic_pool(demo_data, tiny_cfg):
    from core.data.datasets import prepare_image, read_images
    cfg = tiny_cfg.updated({"synthesis": {"refresh_every": 10}, "train": {"steps": 25}})
    f = cfg.features
    paths = sorted((demo_data / "train" / "good").glob("*.png"))
    imgs = [prepare_image(i, f.image_size, f.size_multiple) for i in read_images(paths)]
    enc = Encoder(f, "cpu")
    m = build_material(cfg, enc, torch.device("cpu"), imgs[:6], [p.name for p in paths[:6]], imgs[6:],
                       [p.name for p in paths[6:]], [], Reporter())
    first = m.synthetic
    pools = []
    original = m.refresh

    def spy(r):
        pools.append(r)
        return original(r)

    m.refresh = spy
    Trainer(cfg, m, torch.device("cpu"), Reporter()).run()
    assert pools == [1, 2]                       # steps 10 and 20 of 25
    assert m.synthetic is not first and len(m.synthetic) == len(first)
    # other random draws: the defects (block targets) differ from the first pool's
    same = [torch.equal(a.targets, b.targets) for a, b in zip(first, m.synthetic)]
    assert not all(same)
    # the same round gives the same pool (a resumed run sees what the interrupted one saw)
    again = original(2)
    assert all(torch.equal(a.targets, b.targets) for a, b in zip(again, m.synthetic))
    assert all(np.array_equal(a.nbr.numpy(), b.nbr.numpy()) for a, b in zip(again, m.synthetic))
