"""Config sections shared by the experiments: data, model, optimisers, the PGD attack and the
augmentation of a view."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Optional

from acl_tf.configs.choices import (
    AirDivergence,
    Architecture,
    Interpolation,
    BnMode,
    HeadLayers,
    InputNormalization,
    OptimizerName,
    RandomStart,
    Schedule,
)
from acl_tf.configs.fields import (
    ConfigBase,
    DataSource,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    check_field,
)
from acl_tf.core.errors import ConfigError

__all__ = ["AirConfig", "AugmentConfig", "DataConfig", "DynamicConfig", "FinetuneOptimizerConfig",
           "ModelConfig", "OptimizerConfig", "PGDConfig", "check_crop_args", "check_jitter_args"]

Momentum = Annotated[float, Range(0, 1, high_open=True)]


@dataclasses.dataclass
class DataConfig(ConfigBase):
    """Where images come from (see :func:`acl_tf.data.load`)."""

    source: DataSource = "cifar10"            # TFDS name, sample:cifar10, TFRecord file/dir/glob
    train_split: str = "train"
    test_split: str = "test"
    data_dir: Optional[str] = None            # TFDS data_dir
    download: bool = False                    # TFDS download switch
    image_size: PositiveInt = 32
    num_classes: Annotated[int, Range(2)] = 10
    limit: Optional[PositiveInt] = None       # use the first N training images


@dataclasses.dataclass
class ModelConfig(ConfigBase):
    """Encoder and projection head."""

    arch: Architecture = "resnet18"
    width: PositiveInt = 64              # ResNet-18 first-stage channels
    bn: BnMode = "auto"                  # auto (dual for a2s/ds, single for s2s/a2a), dual, single
    head_layers: HeadLayers = 3
    head_dim: PositiveInt = 512
    sync_bn: bool = False        # all-reduce BN batch statistics across replicas (tf.distribute)
    # Per-channel mean/std inside the encoder: cifar10, or imagenet (the ACL reference code's).
    normalization: InputNormalization = "cifar10"


@dataclasses.dataclass
class OptimizerConfig(ConfigBase):
    """Optimiser and learning-rate schedule (per-step warm-up + cosine by default).

    ``schedule_per_epoch``: the cosine schedule's rate changes once per epoch, as the DynACL code
    steps it (see :func:`acl_tf.optimizers.epoch_warmup_cosine`), instead of at every update.
    """

    name: OptimizerName = "lars"
    learning_rate: PositiveFloat = 5.0              # at reference_batch_size
    reference_batch_size: NonNegativeInt = 512      # lr scales linearly; 0 = no scaling
    momentum: Momentum = 0.9
    weight_decay: NonNegativeFloat = 1e-6
    trust_coefficient: PositiveFloat = 0.001        # LARS eta
    schedule: Schedule = "cosine"
    warmup_epochs: NonNegativeInt = 10
    final_learning_rate: NonNegativeFloat = 1e-6
    schedule_per_epoch: bool = False

    def peak_learning_rate(self, batch_size: int) -> float:
        if not self.reference_batch_size:
            return self.learning_rate
        return self.learning_rate * batch_size / self.reference_batch_size


@dataclasses.dataclass
class FinetuneOptimizerConfig(ConfigBase):
    """SGD with momentum and coupled L2 (``torch.optim.SGD``), piecewise-constant per epoch."""

    learning_rate: PositiveFloat = 0.1
    momentum: Momentum = 0.9
    weight_decay: NonNegativeFloat = 2e-4       # coupled L2, as torch.optim.SGD(weight_decay=...)
    nesterov: bool = False
    decay_epochs: tuple[PositiveInt, ...] = (15, 20)   # the rate drops after these many epochs
    decay_factor: Annotated[float, Range(0, 1, low_open=True)] = 0.1

    def validate(self):
        epochs = list(self.decay_epochs)
        if epochs != sorted(set(epochs)):
            raise ConfigError(f"decay_epochs must be strictly increasing positive "
                              f"epoch counts, got {epochs}.")


@dataclasses.dataclass(frozen=True)
class PGDConfig(ConfigBase):
    """Settings of an L-inf PGD attack (pixel units of images in [0, 1]).

    ``random_start``: ``uniform`` in [-eps, eps] (Madry et al.; ACL pre-training and PGD-20
    evaluation), ``normal`` (x + ``normal_std`` * N(0, 1), the TRADES start) or ``none``.
    ``project_start``: project the random start onto the ball and [0, 1] before the first step
    (default). The ACL and TRADES code does not: its first gradient is taken at x + noise even
    where that leaves [0, 1] (pixels within epsilon of 0 or 1), and only the steps project;
    ``false`` does the same (the ``*_official`` presets).
    """

    epsilon: Probability = 8 / 255            # an L-inf radius in pixel units: [0, 1]
    step_size: Probability = 2 / 255
    steps: NonNegativeInt = 5
    random_start: RandomStart = "uniform"
    normal_std: Probability = 0.001
    project_start: bool = True


CropScale = Annotated[float, Range(0, 1, low_open=True)]


@dataclasses.dataclass(frozen=True)
class AugmentConfig(ConfigBase):
    """Settings of the SimCLR/ACL augmentation of one view.

    Attributes:
      image_size: side of the square output (RandomResizedCrop size).
      crop_scale: range of the crop area as a fraction of the image area. The
        torchvision default is ``(0.08, 1.0)``; the ACL code uses ``(0.1, 1.0)``.
      crop_ratio: range of the crop aspect ratio (width / height).
      flip_prob: probability of a horizontal flip.
      jitter_prob: probability of applying ColorJitter.
      brightness, contrast, saturation: jitter strengths; factors are drawn
        from ``[max(0, 1 - x), 1 + x]``.
      hue: hue jitter strength in ``[0, 0.5]``; the shift is drawn from
        ``[-hue, hue]``.
      grayscale_prob: probability of converting to grayscale.
      interpolation: RandomResizedCrop's resampling: ``bicubic`` (the ACL and AIR code's
        ``interpolation=3``) or ``bilinear`` (torchvision's default, the DynACL code's).
    """

    image_size: PositiveInt = 32
    crop_scale: tuple[CropScale, CropScale] = (0.08, 1.0)
    crop_ratio: tuple[PositiveFloat, PositiveFloat] = (3 / 4, 4 / 3)
    flip_prob: Probability = 0.5
    jitter_prob: Probability = 0.8
    brightness: NonNegativeFloat = 0.4
    contrast: NonNegativeFloat = 0.4
    saturation: NonNegativeFloat = 0.4
    hue: Annotated[float, Range(0, 0.5)] = 0.1
    grayscale_prob: Probability = 0.2
    interpolation: Interpolation = "bicubic"

    def validate(self) -> None:
        _check_ordered("crop_scale", self.crop_scale)
        _check_ordered("crop_ratio", self.crop_ratio)

    def at_strength(self, strength: float) -> "AugmentConfig":
        """This augmentation at DynACL's strength ``s`` in [0, 1]: the jitter strengths and the
        jitter and grayscale probabilities times ``s``, the crop scale's lower bound moved
        towards 1 (``1 - (1 - low) * s``: DynACL's ``(1 - 0.9 s, 1)`` from ``(0.1, 1)``); the
        flip, aspect ratios and size unchanged. ``s = 1`` is this config."""
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"augmentation strength must be in [0, 1], got {strength}.")
        if strength == 1.0:
            return self
        low, high = self.crop_scale
        return dataclasses.replace(
            self, brightness=self.brightness * strength, contrast=self.contrast * strength,
            saturation=self.saturation * strength, hue=self.hue * strength,
            jitter_prob=self.jitter_prob * strength,
            grayscale_prob=self.grayscale_prob * strength,
            crop_scale=(min(1.0 - (1.0 - low) * strength, high), high))


@dataclasses.dataclass(frozen=True)
class DynamicConfig(ConfigBase):
    """DynACL's schedules (Luo, Wang & Wang, ICLR 2023), for the ``dynacl`` and ``dynacl_air``
    methods. With ``E`` = ``anneal_epochs`` (default: the run's epochs), ``R`` = ``reload_every``
    and 1-based epochs ``e``:

    - augmentation strength ``s(e) = 1 - floor((e - 1) / R) * R / E``: constant for ``R`` epochs,
      then a step down (:meth:`AugmentConfig.at_strength`);
    - stream weights: the clean stream times ``1 - d(e)``, the adversarial one times
      ``1 + d(e)``, with ``d(e) = min(swap_param * (1 - s(e + weight_lead)), 1)``. The DynACL
      code's weight runs one epoch ahead of its strength (``weight_lead`` 1: it steps at epoch
      ``R``, the strength at ``R + 1``); the AIR code's does not (0).

    ``momentum_encoder``: the released DynACL code's variant, which the paper does not describe:
    the second view of every pair goes through a momentum (EMA, ``momentum``) copy of the encoder
    and head that takes no gradient; the copy is the encoder the run writes out.
    """

    reload_every: PositiveInt = 50
    anneal_epochs: Optional[PositiveInt] = None
    swap_param: NonNegativeFloat = 2 / 3
    weight_lead: NonNegativeInt = 1
    momentum_encoder: bool = False
    momentum: Momentum = 0.99

    def strength(self, epoch: int, epochs: int) -> float:
        """``s(epoch)`` for a 1-based ``epoch`` of a run of ``epochs`` epochs (never below 0)."""
        total = self.anneal_epochs or epochs
        return max(0.0, 1.0 - ((epoch - 1) // self.reload_every) * self.reload_every / total)

    def stream_delta(self, epoch: int, epochs: int) -> float:
        """``d(epoch)``: how far the adversarial stream's weight is above 1 at ``epoch``."""
        return min(self.swap_param * (1.0 - self.strength(epoch + self.weight_lead, epochs)),
                   1.0)


@dataclasses.dataclass(frozen=True)
class AirConfig(ConfigBase):
    """AIR's regularisers (Xu et al., NeurIPS 2023), for the ``acl_air`` and ``dynacl_air``
    methods: ``lambda1`` times the standard invariant regulariser (between the clean views'
    similarity distributions to the original image) plus ``lambda2`` times the adversarial one
    (see :func:`acl_tf.losses.air_regularizers`)."""

    lambda1: NonNegativeFloat = 0.5
    lambda2: NonNegativeFloat = 0.5
    divergence: AirDivergence = "reference"


def _check_ordered(name: str, pair) -> None:
    if pair[0] > pair[1]:
        raise ConfigError(f"{name} must be a pair (low, high) with low <= high, got {pair!r}.")


def check_crop_args(size, scale, ratio) -> None:
    """Checks RandomResizedCrop arguments given directly (as :class:`AugmentConfig` would)."""
    check_field(AugmentConfig, "image_size", size, "crop size")
    _check_ordered("crop_scale", check_field(AugmentConfig, "crop_scale", scale))
    _check_ordered("crop_ratio", check_field(AugmentConfig, "crop_ratio", ratio))


def check_jitter_args(brightness, contrast, saturation, hue) -> None:
    """Checks ColorJitter strengths given directly (torchvision's constraints)."""
    for name, value in (("brightness", brightness), ("contrast", contrast),
                        ("saturation", saturation), ("hue", hue)):
        check_field(AugmentConfig, name, value)
