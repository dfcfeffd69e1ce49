"""The known-defect bank (core/learning/known_defects.py, decision 0025): which blocks it keeps, its
score, the model file's check, and on real images: a model trained with masks scores unlabelled
defects of the same class better with it than without."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from core import api
from core.data.datasets import load_mvtec, load_sample_mask
from core.data.geometry import BlockGrid
from core.data.images import read_image
from core.data.labels import BLOCK_ANOMALOUS, BLOCK_IGNORE, BLOCK_NORMAL, BLOCK_UNKNOWN, block_labels_from_mask
from core.data.protocols import make_protocol
from core.deploy.inference import Predictor
from core.deploy.modelfile import ModelBundle
from core.errors import InputError
from core.learning.known_defects import closeness, exemplars, with_known
from core.learning.trainset import TokenImage


def _token_image(targets, seed=0, d=8):
    t = torch.as_tensor(np.asarray(targets, np.int8))
    feats = torch.randn(*t.shape, d, generator=torch.Generator().manual_seed(seed)).half()
    return TokenImage(feats, torch.zeros(*t.shape, 1, dtype=torch.long), t, "defective", f"im{seed}")


def test_exemplars_are_the_anomalous_blocks_only():
    a = _token_image([[BLOCK_ANOMALOUS, BLOCK_NORMAL], [BLOCK_UNKNOWN, BLOCK_IGNORE]], 0)
    b = _token_image([[BLOCK_NORMAL, BLOCK_ANOMALOUS], [BLOCK_ANOMALOUS, BLOCK_NORMAL]], 1)
    e = exemplars([a, b], 100)
    want = torch.stack([a.feats[0, 0], b.feats[0, 1], b.feats[1, 0]]).float().numpy()
    assert e.dtype == np.float32 and e.shape == (3, 8)
    np.testing.assert_array_equal(e, want)
    # no anomalous block (boxes not yet pseudo-masked, normal images): nothing, of the features' width
    assert exemplars([_token_image([[BLOCK_UNKNOWN, BLOCK_NORMAL]])], 100).shape == (0, 8)
    assert exemplars([], 100).shape == (0, 0)


def test_a_defective_tag_adds_its_highest_scored_blocks():
    tag = _token_image(np.full((3, 3), BLOCK_UNKNOWN), 5)
    tag.label_kind = "tag"
    normal_tag = _token_image(np.full((3, 3), BLOCK_NORMAL), 6)
    normal_tag.label_kind = "tag"
    scores = {tag.name: np.array([[0.1, 0.2, 0.3], [0.9, 0.0, 0.5], [0.4, 0.8, 0.6]]),
              normal_tag.name: np.ones((3, 3))}
    one = exemplars([tag, normal_tag], 100, score=lambda it: scores[it.name], per_tag=1)
    np.testing.assert_array_equal(one, tag.feats[1:2, 0].float().numpy())
    two = exemplars([tag, normal_tag], 100, score=lambda it: scores[it.name], per_tag=2)
    np.testing.assert_array_equal(two, torch.stack([tag.feats[1, 0], tag.feats[2, 1]]).float().numpy())
    # without a score, or with none asked, a tag adds nothing
    assert len(exemplars([tag], 100)) == 0 and len(exemplars([tag], 100, score=lambda it: scores[it.name])) == 0
    # only blocks above the floor (the held-out normals' highest block) count
    above = exemplars([tag], 100, score=lambda it: scores[it.name], per_tag=3, tag_floor=0.7)
    np.testing.assert_array_equal(above, torch.stack([tag.feats[1, 0], tag.feats[2, 1]]).float().numpy())
    assert len(exemplars([tag], 100, score=lambda it: scores[it.name], per_tag=3, tag_floor=0.9)) == 0


def test_exemplars_beyond_the_cap_keep_a_spread_subset():
    t = np.full((20, 20), BLOCK_ANOMALOUS)
    it = _token_image(t, 3)
    e = exemplars([it], 50)
    assert e.shape == (50, 8)
    every = it.feats.reshape(-1, 8).float().numpy()
    # each kept row is one of the blocks, no row twice
    assert len({r.tobytes() for r in e}) == 50
    assert all((np.abs(every - r).sum(1) == 0).any() for r in e)


def test_closeness_and_mixing_hand_values():
    d_n = np.array([0.0, 1.0, 3.0, 2.0])
    d_k = np.array([2.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(closeness(d_n, d_k), [0.0, 0.5, 0.75, 1.0], atol=1e-9)
    s = np.array([0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(with_known(s, closeness(d_n, d_k), 1.0), [0.1, 0.45, 0.675, 0.9], atol=1e-9)
    np.testing.assert_array_equal(with_known(s, closeness(d_n, d_k), 0.0), s)
    # torch alike (the exported graph)
    g = closeness(torch.tensor(d_n), torch.tensor(d_k))
    assert torch.allclose(with_known(torch.tensor(s), g, 1.0), torch.tensor([0.1, 0.45, 0.675, 0.9], dtype=g.dtype))


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """A small model of PA_BRG01_RL trained with 6 masks from an unsupervised start (real images,
    small sizes: about a minute), and its split."""
    from core.config import preset
    from tests.conftest import PIPED_ROOT
    if not (PIPED_ROOT / "PA_BRG01_RL" / "ground_truth").is_dir():
        pytest.skip(f"real data not found at {PIPED_ROOT}")
    root = tmp_path_factory.mktemp("known")
    torch.manual_seed(0)
    cfg = preset("cpu").updated({
        "swin": {"embed_dim": 48, "num_heads": 2, "depth": 2},
        "train": {"steps": 60, "val_every": 30, "checkpoint_every": 30, "warmup_steps": 10},
    })
    ds = load_mvtec(PIPED_ROOT, "PA_BRG01_RL")
    split = make_protocol(ds, "sup", 6, seed=0)
    api.fit(ds.train[:10], root / "unsup.pt", cfg, "cpu")
    events = []
    model = api.fit(ds.train[:10], root / "sup.pt", cfg, "cpu", labels=split.labels,
                    init_from=root / "unsup.pt", progress=events.append)
    # the same images tagged defective (ResMixMatch short: the tags' own training is not checked here)
    tags = make_protocol(ds, "tag", 6, seed=0)
    assert tags.moved == split.moved
    api.fit(ds.train[:10], root / "tag.pt", cfg.updated({"semi": {"steps": 20, "rampup_steps": 10}}), "cpu",
            labels=tags.labels, init_from=root / "unsup.pt")
    return root, ds, split, model, events


def _block_ap(pred: Predictor, samples) -> float:
    from sklearn.metrics import average_precision_score
    scores, labels = [], []
    for s in samples:
        img = read_image(s.path)
        lab = block_labels_from_mask(load_sample_mask(s, img.shape[:2]),
                                     BlockGrid.for_image(img.shape[1], img.shape[0], 256, 8), 0.25, 0.01)
        b = pred.predict(img).block_map
        keep = lab != BLOCK_IGNORE
        scores += b[keep].tolist()
        labels += (lab[keep] == BLOCK_ANOMALOUS).tolist()
    return average_precision_score(labels, scores)


def test_masks_keep_their_defective_blocks_and_they_find_unlabelled_defects(masked):
    root, ds, split, model, events = masked
    known = model.method_state["known_defects"]
    # every anomalous block of the 6 masks (the held-out ones too), at the features' width
    assert known.ndim == 2 and known.shape[1] == model.feature_dim and len(known) >= 6
    assert model.calibration["known_defects"] == {"weight": model.config.train.known_defects_weight,
                                                 "entries": len(known)}
    assert any(e.stage == "log" and "known defects:" in e.message for e in events)
    # reloaded from disk, the predictor uses them: with weight 0 the maps are the Swin's alone
    loaded = ModelBundle.load(root / "sup.pt")
    off = copy.deepcopy(loaded)
    off.calibration["known_defects"]["weight"] = 0.0
    with_bank, without = Predictor(loaded, "cpu"), Predictor(off, "cpu")
    assert with_bank.detector.known is not None and without.detector.known is None
    # on defective test images nobody labelled, the known defects rank the defect blocks higher
    unlabelled = [s for s in split.test if s.is_anomalous][:8] + [s for s in split.test if not s.is_anomalous][:4]
    ap_with, ap_without = _block_ap(with_bank, unlabelled), _block_ap(without, unlabelled)
    assert ap_with > ap_without, (ap_with, ap_without)


def test_tags_that_a_weak_model_cannot_tell_from_normals_add_nothing(masked):
    """The fixture's 60-step model does not score any of the 6 tagged images above every held-out
    normal (measured: its highest blocks there were no better than chance, and as known defects
    they lowered block AP on the unlabelled defects, 0.68 -> 0.66): the floor keeps them out."""
    root = masked[0]
    tagged = ModelBundle.load(root / "tag.pt")
    assert tagged.training["labels"] == {"tag": 6}
    assert "known_defects" not in tagged.method_state and "known_defects" not in tagged.calibration
    assert Predictor(tagged, "cpu").detector.known is None


def test_a_model_without_labels_has_no_known_defects(masked):
    root = masked[0]
    b = ModelBundle.load(root / "unsup.pt")
    assert "known_defects" not in b.method_state and "known_defects" not in b.calibration
    assert Predictor(b, "cpu").detector.known is None


def test_known_defects_of_the_wrong_width_are_refused_naming_the_file(masked, tmp_path):
    root = masked[0]
    b = ModelBundle.load(root / "sup.pt")
    b.method_state["known_defects"] = torch.zeros(3, b.feature_dim + 1)
    bad = tmp_path / "other.pt"
    b.save(bad)
    with pytest.raises(InputError) as err:
        ModelBundle.load(bad)
    assert str(bad) in str(err.value) and "known-defect" in str(err.value)


def test_a_cap_per_image_keeps_each_located_images_farthest_blocks():
    t = [[BLOCK_ANOMALOUS, BLOCK_ANOMALOUS, BLOCK_NORMAL], [BLOCK_ANOMALOUS, BLOCK_IGNORE, BLOCK_ANOMALOUS]]
    a, b = _token_image(t, 0), _token_image([[BLOCK_ANOMALOUS, BLOCK_NORMAL, BLOCK_NORMAL]] * 2, 1)
    # the normal and ignored blocks rank highest and must still be left out
    rank = {a.name: np.array([[0.2, 0.9, 5.0], [0.5, 7.0, 0.1]]), b.name: np.array([[0.3, 9.0, 9.0], [0.4, 9.0, 9.0]])}
    two = exemplars([a, b], 100, rank=lambda it: rank[it.name], per_image=2)
    want = torch.stack([a.feats[0, 1], a.feats[1, 0], b.feats[1, 0], b.feats[0, 0]]).float().numpy()
    np.testing.assert_array_equal(two, want)
    # 0 (the default) or no rank: every anomalous block, as before
    assert len(exemplars([a, b], 100, rank=lambda it: rank[it.name])) == 6
    assert len(exemplars([a, b], 100, per_image=2)) == 6
