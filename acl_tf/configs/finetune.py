"""Supervised fine-tuning (``python -m acl_tf.finetune``, ``python -m acl_tf.linear_eval``)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from acl_tf.configs.choices import Branch, FinetuneMode, SelectBy
from acl_tf.configs.fields import ConfigBase, FilePath, NonNegativeFloat, PositiveInt, Seed
from acl_tf.configs.sections import DataConfig, FinetuneOptimizerConfig, ModelConfig, PGDConfig
from acl_tf.core.errors import ConfigError

__all__ = ["FinetuneConfig"]


@dataclasses.dataclass
class FinetuneConfig(ConfigBase):
    """Supervised fine-tuning (reference section 2): AFF (TRADES), ALF or SLF.

    ``model`` describes the randomly initialised encoder used without ``pretrained``; with a
    pre-trained encoder its ``arch``/``width``/``bn`` are set from the saved encoder.
    ``attack`` is the TRADES attack of AFF (start x + 0.001 N(0, 1)), ``alf_attack`` the PGD of
    ALF (uniform start), ``eval_attack`` the PGD-20 of model selection on the validation split.
    ``select_by``: keep as ``best.keras`` the epoch of highest robust (or clean) validation
    accuracy.
    """

    mode: FinetuneMode = "aff"
    bn: Branch = "adv"                    # BN branch fine-tuned and evaluated: adv | normal
    pretrained: Optional[FilePath] = None     # pre-training run dir (or .keras file); None = RI
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    attack: PGDConfig = dataclasses.field(
        default_factory=lambda: PGDConfig(steps=10, random_start="normal"))
    alf_attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=10))
    eval_attack: PGDConfig = dataclasses.field(default_factory=lambda: PGDConfig(steps=20))
    trades_beta: NonNegativeFloat = 6.0
    optimizer: FinetuneOptimizerConfig = dataclasses.field(
        default_factory=FinetuneOptimizerConfig)
    batch_size: PositiveInt = 128
    eval_batch_size: PositiveInt = 256
    epochs: PositiveInt = 25
    val_size: PositiveInt = 5000          # class-balanced hold-out of the training split
    augment: bool = True                  # RandomCrop(32, padding=4) + horizontal flip
    drop_remainder: bool = False          # PyTorch's DataLoader keeps the last partial batch
    select_by: SelectBy = "robust"
    evaluate_test: bool = True            # clean + eval_attack accuracy of best.keras on test
    test_limit: Optional[PositiveInt] = None   # test on N images, N/classes per class (null: all)
    export: bool = True                   # export best.keras to model_dir/saved_model/<version>
    seed: Seed = 0
    log_every_steps: PositiveInt = 50
    keep_checkpoints: PositiveInt = 3

    def validate(self):
        if self.val_size % self.data.num_classes:
            raise ConfigError(f"val_size must be a positive multiple of data.num_classes="
                              f"{self.data.num_classes}, got {self.val_size}.")
        if self.test_limit is not None and self.test_limit % self.data.num_classes:
            raise ConfigError(f"test_limit must be a positive multiple of data.num_classes="
                              f"{self.data.num_classes} (a class-balanced subset) or null, got "
                              f"{self.test_limit}.")

    @property
    def freeze_encoder(self) -> bool:
        return self.mode != "aff"
