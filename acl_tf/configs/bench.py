"""The pre-training throughput benchmark (``python -m acl_tf.bench``)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Optional

from acl_tf.configs.choices import VARIANTS, Method, Precision, Variant
from acl_tf.configs.fields import ConfigBase, DataSource, NonNegativeInt, PositiveInt, Range, Seed
from acl_tf.core.errors import ConfigError

__all__ = ["BenchConfig"]


@dataclasses.dataclass
class BenchConfig(ConfigBase):
    """Throughput benchmark of the pre-training step (``python -m acl_tf.bench``).

    Every variant's step is the one of the pre-training config ``pretrain`` (a name under
    ``configs/pretrain/`` or a path) with ``model.width``/``batch_size`` replaced by ``width`` /
    ``batch_size`` and ``overrides`` (``field.sub=value``) applied. ``warmup_steps`` untimed steps
    follow the first (tracing) call; ``steps`` timed steps give the median. The input pipeline
    decodes ``pipeline_source`` (first ``pipeline_limit`` images) and times two augmented views
    of ``pipeline_images`` images. ``intra_op_threads``/``inter_op_threads``: 0 keeps
    TensorFlow's default. ``floor`` also times the training and attack passes of a plain Keras
    ResNet-18 (what a step cannot go below). ``parallel`` > 1 runs that many variants' processes
    at once: faster, but they compete for the cores, so only for checking that everything runs.
    """

    variants: tuple[Variant, ...] = VARIANTS
    # ACL's successors timed besides the variants, each on the DS variant of ``pretrain``
    # with ``method`` set (dynacl, acl_air, dynacl_air).
    methods: tuple[Method, ...] = ()
    batch_size: Annotated[int, Range(2)] = 64
    width: PositiveInt = 64
    precision: Precision = "float32"
    jit_compile: bool = False
    warmup_steps: NonNegativeInt = 2
    steps: PositiveInt = 5
    pretrain: str = "cifar10_resnet18"
    overrides: tuple[str, ...] = ()
    floor: bool = True                  # also time a plain Keras ResNet-18's two passes
    pipeline: bool = True
    pipeline_source: DataSource = "sample:cifar10"
    pipeline_limit: Optional[PositiveInt] = None
    pipeline_images: PositiveInt = 1024
    intra_op_threads: NonNegativeInt = 0
    inter_op_threads: NonNegativeInt = 0
    parallel: PositiveInt = 1           # variants measured at once (>1 distorts the timings)
    seed: Seed = 0

    def validate(self):
        if not self.variants and not self.methods:
            raise ConfigError("variants or methods must name at least one step to time.")
        if "acl" in self.methods:
            raise ConfigError("methods lists ACL's successors (dynacl, acl_air, dynacl_air); "
                              "ACL itself is timed through variants.")
