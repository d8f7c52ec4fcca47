"""Semi-supervised adversarial training from few labels (``python -m acl_tf.semisup``)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Optional

from acl_tf.configs.choices import AlphaConvention, SelectBy
from acl_tf.configs.fields import (
    ConfigBase,
    FilePath,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    Seed,
)
from acl_tf.configs.sections import DataConfig, FinetuneOptimizerConfig, ModelConfig, PGDConfig
from acl_tf.core.errors import ConfigError

__all__ = ["SemisupConfig", "SemisupStudentConfig", "SemisupTeacherConfig"]


@dataclasses.dataclass
class SemisupTeacherConfig(ConfigBase):
    """Step ii: standard (non-adversarial) training of the whole classifier on the labelled subset
    only, from the pre-trained encoder with its ``normal`` BN. Defaults: the authors' README
    (``train_trades.py --trainmode normal``: SGD 0.1, weight decay 2e-4, 100 epochs decayed x0.1
    after 40 and 60, batch 128). The epoch of highest clean validation accuracy is kept."""

    optimizer: FinetuneOptimizerConfig = dataclasses.field(
        default_factory=lambda: FinetuneOptimizerConfig(
            learning_rate=0.1, weight_decay=2e-4, decay_epochs=(40, 60)))
    batch_size: PositiveInt = 128
    epochs: PositiveInt = 100
    augment: bool = True                  # RandomCrop(32, padding=4) + horizontal flip


@dataclasses.dataclass
class SemisupStudentConfig(ConfigBase):
    """Step iii: adversarial training on every training image from the pre-trained encoder with
    its ``adv`` BN, loss l_s of reference section 4 (alpha, beta; the temperature is
    :attr:`SemisupConfig.temperature`). ``attack``: PGD-10 on the cross-entropy of the label
    (labelled images) or the pseudo-label (unlabelled ones), uniform start. ``batch_size`` images
    per step, labelled and unlabelled in proportion to the label rate (at least one labelled,
    so at least 2). ``alpha_convention``: ``paper`` weighs the labelled CE by alpha and its
    distillation term by 1 - alpha (Eqn. 3); ``code`` swaps them, as the official script does
    (equal at alpha 0.5). ``distill_weight`` multiplies both distillation terms (the script's
    ``rate_distill``). Defaults: the official script (weight decay 5e-4, 15 epochs decayed x0.1
    after 5 and 10)."""

    optimizer: FinetuneOptimizerConfig = dataclasses.field(
        default_factory=lambda: FinetuneOptimizerConfig(
            learning_rate=0.1, weight_decay=5e-4, decay_epochs=(5, 10)))
    batch_size: Annotated[int, Range(2)] = 128
    epochs: PositiveInt = 15
    alpha: Probability = 0.5
    beta: NonNegativeFloat = 6.0
    distill_weight: NonNegativeFloat = 1.0
    alpha_convention: AlphaConvention = "paper"
    attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=10))
    augment: bool = True
    select_by: SelectBy = "robust"        # robust | clean validation accuracy -> best.keras


# A labelled fraction strictly between none and all of the images.
LabelFraction = Annotated[float, Range(0, 1, low_open=True, high_open=True)]


@dataclasses.dataclass
class SemisupConfig(ConfigBase):
    """Semi-supervised adversarial training from few labels (reference section 4, Table 2).

    The training split loses a class-balanced validation hold-out of ``val_size`` images; of the
    rest, a class-balanced labelled subset is drawn: ``labels_per_class`` images per class, or
    ``label_fraction`` of the rest (rounded to a whole number of images per class); exactly one
    of the two is set. The other images are unlabelled. ``temperature`` is T of the soft
    pseudo-labels and of the distillation terms. ``pretrained``: a pre-training run directory
    (or ``.keras`` encoder); None is the "vanilla UAT++" baseline (random initialisation), whose
    architecture ``model`` describes. ``eval_attack``: PGD-20 of student model selection and
    testing.
    """

    pretrained: Optional[FilePath] = None
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    label_fraction: Optional[LabelFraction] = 0.01
    labels_per_class: Optional[PositiveInt] = None
    val_size: PositiveInt = 5000
    temperature: PositiveFloat = 1.0
    teacher: SemisupTeacherConfig = dataclasses.field(default_factory=SemisupTeacherConfig)
    student: SemisupStudentConfig = dataclasses.field(default_factory=SemisupStudentConfig)
    eval_attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=20))
    eval_batch_size: PositiveInt = 256
    evaluate_test: bool = True
    seed: Seed = 0
    log_every_steps: PositiveInt = 50
    keep_checkpoints: PositiveInt = 3

    def validate(self):
        if (self.label_fraction is None) == (self.labels_per_class is None):
            raise ConfigError(f"Set exactly one of label_fraction and labels_per_class (the other "
                              f"null), got label_fraction={self.label_fraction}, "
                              f"labels_per_class={self.labels_per_class}.")
        if self.val_size % self.data.num_classes:
            raise ConfigError(f"val_size must be a positive multiple of data.num_classes="
                              f"{self.data.num_classes}, got {self.val_size}.")
