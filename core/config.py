"""Typed configuration with the paper's defaults, two presets, and YAML load/save.

Every number of the method is a field here, never a literal in the pipeline. Field comments give
the paper's value in brackets and the component of ``docs/method.md`` it belongs to.

Presets:
- ``paper``: the paper's sizes (Wide-ResNet-50-2, 512 px, d_f 1024, Swin embed 1024 / 32 heads).
  Meant for a GPU.
- ``cpu``: the offline EfficientNet-Lite0 backbone, 256 px, a small Swin and fewer steps, so one
  category trains on 2 CPU cores in minutes. Same method, smaller sizes.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .methods import METHODS


# The backbones a config may name (torch-free: the CLI, the app and validation read it; their
# specs live in core/embedding/features.py BACKBONES). "auto": the preset's, resolved by
# core.embedding.features.
BACKBONE_NAMES = ("tf_efficientnet_lite0", "wide_resnet50_2")
BACKBONE_CHOICES = ("auto", *BACKBONE_NAMES)

# Input normalisations: name -> (mean, std) of RGB in [0, 1]; "backbone" takes timm's pretrained_cfg.
NORMALIZATIONS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "backbone": None}

# Settings that models saved before decision 0013 used; a model file whose config lacks these keys
# gets them on load (core/deploy/modelfile.py), so an old model keeps predicting as it was trained.
LEGACY_DEFAULTS = {"features": {"normalization": "backbone", "aggregation_padding": "valid"},
                   "output": {"upsample": "bilinear", "sharpness": 0.0}}


@dataclass
class FeatureConfig:
    backbone: str = "auto"              # auto | wide_resnet50_2 | tf_efficientnet_lite0
    weights: str | None = None          # local weights file (else $SEMIREST_WEIGHTS, timm's hub cache)
    image_size: int = 512               # longest side of the model input [512] (component 1)
    size_multiple: int = 64             # the other side is rounded up to this
    aggregation: int = 3                # local average aggregation kernel [3x3] (component 2)
    aggregation_padding: str = "zeros"  # zeros: border averages count the zero padding, as PatchCore's
                                        # reference and anomalib (AvgPool2d(3, 1, 1)); valid: average
                                        # only the pixels inside (models made before decision 0013)
    normalization: str = "imagenet"     # imagenet: ImageNet mean/std, as anomalib and the paper's code;
                                        # backbone: timm's pretrained_cfg (0.5/0.5 for Lite0; older models)
    feature_dim: int = 1024             # d_f [1024]; channel pooling target (0 = concatenate layers)
    lambda_pe: float = 0.1              # position code weight [0.1] (component 3, Eq. 2)
    pe_rho: float = 1.0                 # rho of Eq. 3 [1]


@dataclass
class BankConfig:
    coreset_ratio: float = 0.1          # fraction of training PCFs kept [10%] (component 4)
    coreset_dim: int = 128              # random projection for the approximate greedy coreset
    coreset_starts: int = 10            # random starting points of the greedy k-centre
    max_patches: int = 1_000_000        # random subsample before the coreset when above this
    coreset_cell: int = 4096            # points per cell of the partitioned greedy (core/embedding/bank.py):
                                        # a centre updates only its own k-means cell, so 400k patches
                                        # take seconds, not half an hour [0 = one cell: PatchCore's
                                        # plain greedy, where every centre updates every patch]
    coreset_plain_max: int = 65_536     # up to this many patches the plain greedy runs (seconds there;
                                        # every PIPED class keeps PatchCore's exact bank), cells above
    neighbours: int = 3                 # k of the k-NN search (K-NN augmentation uses 1..3)
    residual: str = "square"            # square [Eq. 6] | abs | abs_square (component 5)
    search: str = "exact"               # exact: every bank entry | posfar: only the entries of the
                                        # query image's most similar training images (WeakREST's
                                        # PosFAR, method.md component 17; decision 0018)
    posfar_images: int = 64             # ... how many training images [64]
    posfar_pca: float = 0.0             # ... rank candidates in a PCA space keeping this share of the
                                        # variance [0.95 in the spec; 0: the full space]
    include_val: bool = True            # after training, rebuild the bank from every normal, the
                                        # validation hold-outs included (PatchCore's bank sees them all)


@dataclass
class SwinConfig:
    embed_dim: int = 1024               # research code: 1024 (component 7)
    depth: int = 4                      # Swin blocks, alternating regular / shifted windows [4]
    num_heads: int = 32                 # [32]
    window: int = 8                     # attention window, in tokens [8]
    mlp_ratio: float = 4.0
    drop_path: float = 0.1
    embed_norm: bool = False            # LayerNorm after the token embedding (Swin's patch_norm); off:
                                        # it makes the embedding blind to the residual's magnitude
    mu: int = 32                        # sliding window, in tokens [32] (component 8)
    step: int = 8                       # sliding step s [8]
    bagging: bool = True                # average over overlapping windows; False = one pass


@dataclass
class SynthesisConfig:
    per_normal: float = 2.0             # synthetic images per training normal [about 2] (component 10)
    texture_dir: str | None = None      # folder of texture images (the paper uses DTD)
    texture_prob: float = 0.5           # chance the anomaly source is a texture
    perlin_min_exp: int = 0             # Perlin scale 2^U[min_exp, max_exp)
    perlin_max_exp: int = 6
    perlin_threshold: float = 0.5
    max_rotation: float = 90.0          # degrees
    blend_min: float = 0.5              # blending factor U[blend_min, blend_max]
    blend_max: float = 1.0
    min_component_px: int = 250         # per defect component, at 512 px (scaled with the input area)
    refresh_every: int = 0              # steps between fresh pools of synthetic images (0: one pool
                                        # for the whole run, which the Swin memorises in a few hundred steps)


# The validation metrics a model records, in the order checkpoints are chosen on (the first one a
# run has): real located defects, real tagged images (core/eval/realval.py), the synthetic split. One
# list, used by the trainer, the model file and the app (here: no torch, so the app can import it).
SELECTION_METRICS = ("val_real_ap", "val_real_image_auroc", "val_pixel_ap")


@dataclass
class TrainConfig:
    steps: int = 4000                   # optimisation steps ["a few thousand"]
    lr: float = 1e-4                    # unsup / sup [1e-4]; semi [3e-5] (component 12)
    precision: str = "auto"             # the Swin's forward passes while training: float32 [paper],
                                        # bfloat16 (autocast), float16 (GPU); auto: bfloat16 where the
                                        # CPU (AMX / AVX512-BF16) or GPU multiplies it, else float32
                                        # (core/deploy/precision.py; decision 0024: same test pixel AP
                                        # to 0.02 on the 8 dev classes, about 1.6x faster training)
    weight_decay: float = 0.05          # AdamW [0.05]
    grad_clip: float = 1.0              # [1.0]
    ema_decay: float = 0.999            # EMA of the weights for the final model
    warmup_steps: int = 100
    b_normal: int = 4                   # b1 [4 unsup, 2 sup, 3 semi]
    b_synthetic: int = 2                # b2 [2 unsup, 2 sup, 3 semi]
    b_defective: int = 2                # b3 [0 unsup, 2 sup, 2 semi] (used only when labels exist)
    window_fraction: float = 0.25       # p, fraction of each image's sliding windows [1/4]
    eps_pos: float = 0.5                # Eq. 14 eps+ for synthetic defects [50% unsup]
    eps_pos_real: float = 0.25          # Eq. 14 eps+ for real masks / block labels [25% sup]
    eps_neg: float = 0.08               # Eq. 14 eps- [8%]
    box_unknown: float = 0.5            # Eq. 15 v [50%]
    box_band: float | None = 0.08       # blocks a box covers by this fraction up to v carry no label
                                        # (not in Eq. 15, which calls them normal; None: Eq. 15 as written)
    paste_per_label: int = 0            # label paste: each labelled mask / box region copied onto this
                                        # many other training normals (core/synthetic/labelpaste.py; not
                                        # in the paper; 4 measured no better on the dev classes: decision
                                        # 0015)
    paste_feather_px: float = 3.0       # ... its edge dilated and feathered over this many input pixels
    focal_alpha: float = 0.25           # Eq. 11 alpha [0.25]
    focal_gamma: float = 4.0            # Eq. 11 gamma [4]
    focal_norm: str = "class"           # class: each class's sum over its own token count [Eq. 11];
                                        # mean: one mean over all tokens [the research code]
    knn_a1: float = 0.5                 # Eq. 12 a1 [0.5]
    knn_a2: float = 0.8                 # Eq. 12 a2 [0.8]
    knn_noise_sigma: float = 0.2        # delta = e^z, z ~ N(0, 0.2) [0.2]
    knn_noise_clip: float = 0.223       # |z| <= 0.223
    pcr_dropout: float = 0.25           # Eq. 13 alpha [25%]
    val_fraction: float = 0.15          # held-out training normals for checkpoint choice (component 19)
    val_min_images: int = 2
    val_generator: str = "defectmaker"  # defects of the validation split: defectmaker | memseg
    val_defects_per_normal: float = 4.0  # synthetic defects per held-out normal
    fusion: bool = True                 # fuse the block's NN distance into the map, weight chosen on
                                        # validation (core/learning/fusion.py); False: the Swin's map alone
    known_defects_weight: float = 1.0   # the blocks labelled defective score test blocks by nearness,
                                        # s' = (s + w g) / (1 + w) (core/learning/known_defects.py,
                                        # decision 0025); 0: off. One constant, not chosen per model
    known_defects_max: int = 4096       # at most this many known-defect blocks (greedy k-centre beyond)
    known_defects_per_tag: int = 1      # a defective tag adds its image's highest blocks, this many
    known_defects_per_image: int = 3    # a mask / block / box image adds only its this many blocks
                                        # farthest from the normal bank (decision 0025: every block
                                        # swamped the bank with large defects); 0: every labelled block
    real_val_fraction: float = 0.3      # labelled defective images held out to validate on real defects
    real_val_min_labelled: int = 4      # ... when at least this many are labelled (then >= 1 held out)
    checkpoint: str = "last"            # validation: the EMA state with the best validation pixel AP;
                                        # last: the final EMA state (validation still calibrates)
    preflight_min_images: int = 16      # with this many normals or more, a dry run of every stage on the
                                        # most different few comes first (core/preflight.py); 0: never
    val_every: int = 250                # validate (EMA weights) every this many steps
    checkpoint_every: int = 250         # resumable checkpoint every this many steps
    seed: int = 0


@dataclass
class SemiConfig:
    """ResMixMatch (component 15, Algorithm 1)."""

    steps: int = 2000
    lr: float = 3e-5                    # [3e-5] ResMixMatch's (boxes: resmixmatch, tags); pseudo-masks
                                        # train like Sup at train.lr (3e-5 there: no change, 2026-11-30)
    window_fraction: float = 0.1        # p [1/10]
    b_normal: int = 3                   # [3]
    b_synthetic: int = 3                # [3]
    b_defective: int = 2                # [2]
    copies: int = 3                     # M [3]
    temperature: float = 0.5            # Gamma [0.5]
    mixup_alpha: float = 0.75           # Beta(a, a) of MixMatch's MixUp
    alpha_x: float = 0.25               # [0.25]
    alpha_u: float = 0.75               # [0.75]
    gamma_x: float = 4.0                # [4]
    gamma_u: float = 4.0                # [4]
    lambda_u: float = 5.0               # [5]
    rampup_steps: int = 400             # [400], clamped after
    checkpoint: str = "last"            # last | validation (see core/learning/resmixmatch.py)
    boxes: str = "pseudo_mask"          # how boxes teach: pseudo_mask (core/learning/pseudomask.py,
                                        # decision 0015) | resmixmatch (Algorithm 1 on the boxed
                                        # blocks [paper])
    pseudo_threshold: float = 0.5       # pseudo-masks: belief at which a boxed block counts as defective
    pseudo_belief: str = "swin"         # pseudo-masks' belief: swin (the start model's probability;
                                        # decision 0022) | max (of it and the distance belief)
    unchecked_tags: bool = False        # train ResMixMatch on defective tags when too few labelled
                                        # images for any to be held out (train.real_val_min_labelled)?
                                        # Off: the model keeps its start (decision 0023)


PSEUDO_BELIEFS = ("max", "swin")    # SemiConfig.pseudo_belief (core/learning/pseudomask.py)


@dataclass
class HaloAEConfig:
    """HaloAE (Mathian et al. 2022; core/methods/haloae.py): an auto-encoder of HaloNet local self-attention
    blocks reconstructs the frozen backbone features; the anomaly map is the per-position
    reconstruction error. Values in brackets are the paper's / its research code's."""

    block: int = 8                      # halo attention block, in feature positions [8]
    halo: int = 4                       # halo: the keys of a block reach this many positions around it [4]
    width: int = 234                    # channels after the input projection [704 / 3 = 234]
    latent: int = 117                   # bottleneck channels [117: width x 0.5]
    depth: int = 4                      # halo bottleneck blocks in the encoder; the decoder mirrors them [4]
    heads: int = 8                      # attention heads per block [4 in the first stage, 8 after]
    dim_head: int = 16                  # channels per head [16]
    steps: int = 188_250                # Adam steps [251 epochs x 750 steps of batch 4]
    batch: int = 4                      # normals per step [4]; each comes with a CutPaste and a CutPaste-scar
                                        # copy (CutPaste 3-way), so a step sees 3 x batch feature maps
    lr: float = 1e-4                    # Adam [1e-4]
    weight_decay: float = 1e-5          # Adam's L2 weight decay [1e-5]
    cutpaste_weight: float = 1.0        # multiplier on the scheduled weight of the CutPaste head's
                                        # cross-entropy [1: the schedule as published]; 0: no head
    ssim_window: int = 11               # Gaussian window of the SSIM term of the loss [11, sigma 1.5]
    jitter: float = 0.1                 # ColorJitter of every training image and pasted patch [0.1]
    pool_per_normal: int = 0            # 0: fresh augmentations every step [paper]; N: N augmented copies
                                        # of each normal encoded once before training (the backbone is
                                        # frozen, so a step then runs the auto-encoder alone)
    crop: int = 0                       # 0: train on whole feature maps [paper]; N: on N x N windows of
                                        # them, on the block grid (4x cheaper at N = 16 of 32; the
                                        # attention sees the same blocks and halos inside a window)


@dataclass
class OutputConfig:
    gaussian_sigma: float = 4.0         # smoothing of the upsampled map [4] (component 18)
    upsample: str = "nearest"           # block map -> pixels: nearest (each 8x8 block keeps its value,
                                        # then the Gaussian; PatchCore/anomalib) | bilinear (older models)
    eval_size: int = 256                # ground truth and maps compared at this size [256]
    sharpness: float = 1.0              # gamma of the block map's sharpening at local maxima before
                                        # upsampling, b * (b / max3x3(b)) ** gamma; 0: off, as the paper
                                        # and PatchCore (core/eval/anomaly_map.sharpen, decision 0026)
    contrast: float = 0.0               # beta of the pixel-contrast refinement of the map, m * (1 + beta z)
                                        # / (1 + beta), z: each pixel's difference from its neighbourhood's
                                        # median grey level over the image's typical one (core/eval/
                                        # anomaly_map.refine_by_contrast, decision 0028); 0: off, as the
                                        # paper; with contrast_choice validation, the chosen value is saved here
    contrast_radius: float = 2.0        # ... its median window: this many blocks on each side of a pixel
    contrast_choice: str = "validation"  # validation: the beta of anomaly_map.CONTRAST_BETAS (0 among
                                        # them) with the best validation pixel AP, on held-out labelled
                                        # masks / boxes when there are some, else on the synthetic split
                                        # (which keeps 0 on every dev class), written into the saved
                                        # model's output.contrast (SemiREST, PatchCore, REB); fixed:
                                        # beta = output.contrast (HaloAE always)


@dataclass
class RebConfig:
    """REB (Lyu, Mo, Wong; docs/method.md, REB): DefectMaker self-supervised
    fine-tuning of the backbone, then a bank of the (adapted) features scored with Local-Density
    KNN (core/methods/ldknn.py). Brackets: the paper / its reference code (ShuaiLYU/REB)."""

    ldknn_lambda: float = 1.0           # lambda of LDKNN [1]: score = d(q, m*) - lambda * density(m*)
    ldknn_k: int = 9                    # K bank neighbours that define an entry's density [9 on MVTec
                                        # AD; 45 on MVTec LOCO]
    finetune: bool = True               # DefectMaker self-supervision before the bank [on]; off: the
                                        # plain ImageNet features (LDKNN alone; the cpu preset's choice)
    finetune_steps: int = 300           # SGD steps [300 epochs of one accumulated step each]
    finetune_head_steps: int = 40       # first steps train only the linear head, backbone frozen [40]
    finetune_batch: int = 32            # images per step, each a normal or one DefectMaker defect kind
                                        # (7 classes) [1024 per accumulated step: a GPU's worth]
    finetune_lr: float = 0.03           # SGD learning rate [0.03], cosine decay to 1e-5 [as the code]
    finetune_grad_clip: float = 1.0     # gradient norm clip; 0: none [REB clips nothing]. Ours: with
                                        # batch norms frozen and 8 images a step, lr 0.03 diverged once
                                        # the backbone joined (loss 1e12 by step 75 of 300, PA_BDP01_TL);
                                        # clipped, the self-supervised loss fell steadily (2.06 -> 0.84)
    finetune_momentum: float = 0.9      # SGD momentum (not stated by REB; the usual value)
    finetune_weight_decay: float = 3e-5  # [3e-5]


@dataclass
class Config:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    swin: SwinConfig = field(default_factory=SwinConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    haloae: HaloAEConfig = field(default_factory=HaloAEConfig)   # absent in older model files: defaults
    output: OutputConfig = field(default_factory=OutputConfig)
    reb: RebConfig = field(default_factory=RebConfig)   # method reb only; a file without it: defaults
    preset: str = "paper"
    method: str = "semirest"            # one of core/methods/__init__.py's REGISTRY

    # ---- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "Config":
        return _build(cls, d, where)

    def updated(self, overrides: dict, where: str = "config") -> "Config":
        merged = _deep_merge(self.to_dict(), overrides)
        return Config.from_dict(merged, where)

    def validate(self) -> "Config":
        f, s, t = self.features, self.swin, self.train
        if self.method not in METHODS:
            raise ConfigError(f"method: unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        if f.backbone not in BACKBONE_CHOICES:
            raise ConfigError(f"features.backbone: unknown backbone {f.backbone!r}")
        from .deploy.precision import TRAIN_PRECISIONS, known_precision
        known_precision(t.precision, TRAIN_PRECISIONS, "train.precision")   # float16 on a CPU: at train start
        if f.image_size % f.size_multiple:
            raise ConfigError(f"features.image_size {f.image_size} must be a multiple of {f.size_multiple}")
        if s.window <= 0 or s.mu <= 0:
            raise ConfigError(f"swin.mu {s.mu} and swin.window {s.window} must be positive")
        if s.mu % s.window:
            raise ConfigError(f"swin.mu {s.mu} must be a multiple of swin.window {s.window}")
        if not 1 <= s.step <= s.mu:
            raise ConfigError(f"swin.step {s.step} must be between 1 and swin.mu {s.mu} "
                              f"(a larger step leaves tokens that no window covers)")
        if s.embed_dim % s.num_heads:
            raise ConfigError(f"swin.embed_dim {s.embed_dim} must be divisible by swin.num_heads {s.num_heads}")
        if not 0 < self.bank.coreset_ratio <= 1:
            raise ConfigError("bank.coreset_ratio must be in (0, 1]")
        if self.bank.coreset_cell < 0:
            raise ConfigError(f"bank.coreset_cell must be 0 (one cell: plain greedy) or a number of points "
                              f"per cell, got {self.bank.coreset_cell}")
        if f.normalization not in NORMALIZATIONS:
            raise ConfigError(f"features.normalization: expected one of {sorted(NORMALIZATIONS)}, got {f.normalization!r}")
        if f.aggregation_padding not in ("zeros", "valid"):
            raise ConfigError(f"features.aggregation_padding: expected zeros or valid, got {f.aggregation_padding!r}")
        if not (math.isfinite(self.output.sharpness) and self.output.sharpness >= 0):
            raise ConfigError(f"output.sharpness: expected a number >= 0, got {self.output.sharpness}")
        if not (math.isfinite(self.output.contrast) and self.output.contrast >= 0):
            raise ConfigError(f"output.contrast: expected a number >= 0, got {self.output.contrast}")
        from .eval.anomaly_map import CONTRAST_CHOICES
        if self.output.contrast_choice not in CONTRAST_CHOICES:
            raise ConfigError(f"output.contrast_choice: expected one of {', '.join(CONTRAST_CHOICES)}, "
                              f"got {self.output.contrast_choice!r}")
        if not (math.isfinite(self.output.contrast_radius) and 0 < self.output.contrast_radius <= 16):
            raise ConfigError(f"output.contrast_radius: expected blocks in (0, 16], got {self.output.contrast_radius}")
        if self.output.upsample not in ("nearest", "bilinear"):
            raise ConfigError(f"output.upsample: expected nearest or bilinear, got {self.output.upsample!r}")
        if self.bank.search not in ("exact", "posfar"):
            raise ConfigError(f"bank.search: expected exact or posfar, got {self.bank.search!r}")
        if self.bank.posfar_images < 1 or not 0 <= self.bank.posfar_pca < 1:
            raise ConfigError("bank.posfar_images must be at least 1 and bank.posfar_pca in [0, 1)")
        if self.bank.residual not in ("square", "abs", "abs_square"):
            raise ConfigError(f"bank.residual: unknown residual {self.bank.residual!r}")
        if not 0 <= t.knn_a1 <= t.knn_a2 <= 1:
            raise ConfigError("train.knn_a1 <= train.knn_a2 must lie in [0, 1]")
        if t.focal_norm not in ("class", "mean"):
            raise ConfigError(f"train.focal_norm must be class or mean, not {t.focal_norm!r}")
        if t.checkpoint not in ("last", "validation"):
            raise ConfigError(f"train.checkpoint: expected last or validation, got {t.checkpoint!r}")
        if self.semi.checkpoint not in ("last", "validation"):
            raise ConfigError(f"semi.checkpoint: expected last or validation, got {self.semi.checkpoint!r}")
        if self.semi.boxes not in ("pseudo_mask", "resmixmatch"):
            raise ConfigError(f"semi.boxes: expected pseudo_mask or resmixmatch, got {self.semi.boxes!r}")
        if self.semi.pseudo_belief not in PSEUDO_BELIEFS:
            raise ConfigError(f"semi.pseudo_belief: expected one of {', '.join(PSEUDO_BELIEFS)}, "
                              f"got {self.semi.pseudo_belief!r}")
        if not (math.isfinite(t.known_defects_weight) and t.known_defects_weight >= 0):
            raise ConfigError(f"train.known_defects_weight: expected a number >= 0, got {t.known_defects_weight}")
        if t.known_defects_per_tag < 0:
            raise ConfigError(f"train.known_defects_per_tag: expected 0 or more, got {t.known_defects_per_tag}")
        if t.known_defects_per_image < 0:
            raise ConfigError(f"train.known_defects_per_image: expected 0 or more, got {t.known_defects_per_image}")
        if t.known_defects_max < 1:
            raise ConfigError(f"train.known_defects_max: expected 1 or more, got {t.known_defects_max}")
        if t.paste_per_label < 0:
            raise ConfigError(f"train.paste_per_label: expected 0 or more, got {t.paste_per_label}")
        if t.val_generator not in ("defectmaker", "memseg"):
            raise ConfigError(f"train.val_generator: unknown generator {t.val_generator!r}")
        self._validate_haloae()
        if f.feature_dim and f.feature_dim % 4:
            raise ConfigError("features.feature_dim must be a multiple of 4 (position code, Eq. 3)")
        r = self.reb
        if r.ldknn_k < 1:
            raise ConfigError(f"reb.ldknn_k: expected 1 or more bank neighbours, got {r.ldknn_k}")
        if r.ldknn_lambda < 0:
            raise ConfigError(f"reb.ldknn_lambda: expected 0 or more, got {r.ldknn_lambda}")
        if r.finetune and (r.finetune_steps < 1 or r.finetune_batch < 2 or r.finetune_lr <= 0):
            raise ConfigError(f"reb.finetune_steps ({r.finetune_steps}) and reb.finetune_lr "
                              f"({r.finetune_lr}) must be positive and reb.finetune_batch "
                              f"({r.finetune_batch}) at least 2 (the head's batch norm) when "
                              f"reb.finetune is on")
        if r.finetune_grad_clip < 0:
            raise ConfigError(f"reb.finetune_grad_clip: expected 0 (no clipping) or more, got {r.finetune_grad_clip}")
        if not 0 <= r.finetune_head_steps <= r.finetune_steps:
            raise ConfigError(f"reb.finetune_head_steps {r.finetune_head_steps} must lie in "
                              f"[0, reb.finetune_steps {r.finetune_steps}]")
        return self

    def _validate_haloae(self) -> None:
        h = self.haloae
        for name in ("block", "width", "latent", "depth", "heads", "dim_head", "steps", "batch"):
            if getattr(h, name) < 1:
                raise ConfigError(f"haloae.{name} must be at least 1, got {getattr(h, name)}")
        if min(h.halo, h.pool_per_normal, h.crop, h.cutpaste_weight) < 0:
            raise ConfigError(f"haloae.halo, pool_per_normal, crop and cutpaste_weight must not be "
                              f"negative, got {h.halo}, {h.pool_per_normal}, {h.crop}, {h.cutpaste_weight}")
        if h.ssim_window < 1 or h.ssim_window % 2 == 0:
            raise ConfigError(f"haloae.ssim_window must be odd and positive, got {h.ssim_window}")
        if not 0 <= h.jitter < 0.5:
            raise ConfigError(f"haloae.jitter must lie in [0, 0.5), got {h.jitter}")
        if h.lr <= 0:
            raise ConfigError(f"haloae.lr must be positive, got {h.lr}")


def _build(cls, d: Any, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    defaults = cls()
    for name, value in d.items():
        default = getattr(defaults, name)
        if is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, default, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value, default, where):
    if value is None or default is None:
        return value
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}") from None
    return value


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


DEFAULT_PRESET = "cpu"        # what the CLI, load_config and the API use when no preset is named

PRESETS: dict[str, dict] = {
    "paper": {"preset": "paper"},
    "cpu": {
        "preset": "cpu",
        # Same method, sizes for 2 CPU cores: the offline backbone's two stages concatenated
        # (40 + 112 = 152 channels, no pooling needed), 256 px input, and windows of mu = 16
        # tokens, i.e. half the 32-token map, the same relative window as the paper's 32 of 64.
        "features": {"backbone": "tf_efficientnet_lite0", "image_size": 256, "feature_dim": 0},
        # A Swin of width 192 (6 heads of 32, as Swin-T's later stages): width 96 lost 1-4 points
        # of test pixel AP on every dev class measured, at half the Swin's time (decision 0020).
        "swin": {"embed_dim": 192, "num_heads": 6, "depth": 4, "drop_path": 0.05, "mu": 16, "step": 8},
        # Steps: the validation split (defects of a generator training never sees) peaks after
        # 200-300 steps on PIPED, so 500 leaves room; ResMixMatch gets 300 steps with the lambda_u
        # ramp shortened in proportion (the paper: 400 of a few thousand).
        "train": {"steps": 500, "val_every": 50, "checkpoint_every": 50},
        "semi": {"steps": 300, "rampup_steps": 150},
        # REB: the plain-features variant (LDKNN alone). Its DefectMaker fine-tuning, when turned
        # on, runs 300 steps of 8 images at 256 px, the head-only warm-up in REB's proportion (40
        # of 300): 0.8-1.3 s per step with EfficientNet-Lite0 on one thread of a busy 2-core
        # machine (measured, PA_BDP01_TL: 249 s for the 300), i.e. 4-7 minutes.
        "reb": {"finetune": False, "finetune_steps": 300, "finetune_head_steps": 40,
                "finetune_batch": 8},
        # HaloAE with the paper's block 8 and halo 4 (a 32-position map is 4 x 4 blocks) but a
        # narrow, shallow auto-encoder with 2 heads, each normal's CutPaste copies encoded once (a
        # step is then the auto-encoder alone) and 16 x 16 training windows: 0.25-0.35 s per step
        # on one core, a few minutes in all. 600 steps instead of 188,000 need a larger step: at
        # 1e-4 the auto-encoder reconstructs worse than the channel means after 600 steps (MSE
        # 1.04 of the standardised variance); at 1e-3, 0.52 on held-out training normals.
        "haloae": {"width": 64, "latent": 32, "depth": 2, "heads": 2, "dim_head": 16,
                   "steps": 600, "lr": 1e-3, "pool_per_normal": 4, "crop": 16},
    },
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return Config().updated(PRESETS[name], where=f"preset {name}").validate()


def load_config(path: str | Path | None = None, preset_name: str | None = None,
                overrides: dict | None = None) -> Config:
    """A preset (``preset_name``, else the file's ``preset:`` key, else DEFAULT_PRESET), then the
    YAML file, then overrides."""
    file_over: dict = {}
    if path is not None:
        p = Path(path)
        try:
            file_over = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such config file") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from None
        if not isinstance(file_over, dict):
            raise ConfigError(f"{p}: expected a mapping of settings at the top level")
    name = preset_name or file_over.get("preset") or DEFAULT_PRESET
    cfg = preset(name)
    if file_over:
        cfg = cfg.updated(file_over, where=str(path))
    if overrides:
        cfg = cfg.updated(overrides, where="overrides")
    return cfg.validate()


# Seconds per training step measured so far, (preset, device type) -> (seconds, on what): rough and
# data-dependent (3.6 s per step was measured with the cpu preset on a set of larger, varied image
# sizes), so the run also states its own estimate after its first steps (core/progress.py).
MEASURED_SECONDS_PER_STEP = {
    ("cpu", "cpu"): (0.65, "128-px images, 1 thread of a busy 2-core machine"),   # docs/benchmarks.md (Swin width 192)
    ("paper", "cpu"): (72.0, "2 cores"),                      # issue 14
}


def plan_line(cfg: Config, device_type: str) -> str:
    """One line said before the heavy work: preset, steps, image size, backbone, device, and a
    rough time where one was measured; the paper preset on a CPU is called out (days, not minutes)."""
    from .progress import duration_text
    t = cfg.train
    line = (f"preset {cfg.preset}: {t.steps} training steps, images at {cfg.features.image_size} px "
            f"(longest side), backbone {cfg.features.backbone}, device {device_type}")
    measured = MEASURED_SECONDS_PER_STEP.get((cfg.preset, device_type))
    if measured:
        per, where = measured
        line += (f"; roughly {duration_text(per * t.steps)} of training at {per:g} s per step "
                 f"(measured on {where}; larger images take longer)")
    if cfg.preset == "paper" and device_type == "cpu":
        line += "; the paper preset is meant for a GPU: --preset cpu trains in minutes"
    return line + "; an estimate from this run's own first steps follows"


def save_config(cfg: Config, path: str | Path) -> None:
    from .fileio import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
