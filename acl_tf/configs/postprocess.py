"""DynACL++ post-processing of a pre-trained encoder (``python -m acl_tf.postprocess``)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal, Optional

from acl_tf.configs.choices import Branch
from acl_tf.configs.fields import (
    Choice,
    ConfigBase,
    FilePath,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Range,
    Seed,
    choice_names,
)
from acl_tf.configs.sections import DataConfig, FinetuneOptimizerConfig, ModelConfig, PGDConfig
from acl_tf.core.errors import ConfigError

__all__ = ["KMEANS_INITS", "AftConfig", "ClusterConfig", "KMeansInit", "LinearProbeConfig",
           "PostprocessConfig"]

# random: k distinct feature rows drawn uniformly (the reference's kmeans_pytorch); kmeans++:
# D^2 sampling (Arthur & Vassilvitskii, 2007).
KMeansInit = Annotated[Literal["random", "kmeans++"],
                       Choice("k-means init", "random: k distinct feature rows (the reference's "
                                              "kmeans_pytorch), kmeans++: D^2 sampling")]
KMEANS_INITS = choice_names(KMeansInit)


@dataclasses.dataclass
class ClusterConfig(ConfigBase):
    """The pseudo-labels: k-means (euclidean) of the pre-trained encoder's features of every
    training image, BN ``branch`` in inference mode, no augmentation (DynACL ``assign_label.py``
    L46-48, L67-70: ``model.eval()(x, 'normal', return_features=True)``; L79-83:
    ``kmeans(X, num_clusters=10, distance='euclidean')`` of ``kmeans_pytorch``, whose defaults
    are a random initialisation from k distinct rows, ``tol=1e-4`` on the squared sum of the
    centre moves and no iteration limit). ``max_iterations`` caps the iterations (the reference
    has no cap), ``restarts`` keeps the lowest-inertia of several runs (the reference runs once),
    ``batch_size`` rows go through one distance computation (:func:`acl_tf.data.clusters.kmeans`).
    """

    num_clusters: Annotated[int, Range(2)] = 10
    init: KMeansInit = "random"
    tolerance: NonNegativeFloat = 1e-4
    max_iterations: PositiveInt = 300
    restarts: PositiveInt = 1
    branch: Branch = "normal"
    batch_size: PositiveInt = 8192


@dataclasses.dataclass
class LinearProbeConfig(ConfigBase):
    """Stage 1, linear probing (LP): only the zero-initialised linear layer trains, with
    cross-entropy on the cluster labels, the encoder frozen in inference mode on the
    config's ``bn`` branch (``LPAFT_AFF.py`` L186-199 and ``train_head`` L324-362:
    ``model.eval()(inputs, 'pgd')``). Defaults: ``--epochs_head 10`` (L40), ``SGD(fc,
    lr=0.01, momentum=0.9, weight_decay=1e-4)`` (L51, L159-160), constant rate
    (``MultiStepLR(milestones=[])``, L167-168). ``epochs: 0`` skips the stage."""

    epochs: NonNegativeInt = 10
    optimizer: FinetuneOptimizerConfig = dataclasses.field(
        default_factory=lambda: FinetuneOptimizerConfig(
            learning_rate=0.01, weight_decay=1e-4, decay_epochs=()))


@dataclasses.dataclass
class AftConfig(ConfigBase):
    """Stage 2, adversarial full fine-tuning (AFT) on the cluster labels: TRADES (beta 6, PGD-10
    of step 2/255 in an 8/255 ball, BN in inference mode for the attack) with every weight of the
    encoder and the linear layer trained, clean and adversarial passes both on the config's ``bn``
    branch (``LPAFT_AFF.py`` L203-211, ``train`` L283-322: ``trades_loss_dual(...,
    perturb_steps=10, natural_mode='pgd')``, utils.py L403-438). Defaults: ``--epochs 25`` (L38),
    ``SGD(lr=0.1, momentum=0.9, weight_decay=1e-4)`` (L50, L157-158), ``MultiStepLR([10, 20],
    0.1)`` stepped after every epoch (L165-166, L320): epochs 1-10 at 0.1, 11-20 at 0.01, 21-25
    at 0.001, ``decay_epochs [10, 20]`` here.

    ``attack.random_start``: the DynACL code starts the attack at x itself (utils.py L410), where
    the gradient of the KL term is round-off; ``normal`` (x + 0.001 N(0, 1), unprojected) is
    TRADES' start and the AIR code's (``finetuning_utils.py`` L540). ``none`` follows the DynACL
    code literally."""

    epochs: PositiveInt = 25
    optimizer: FinetuneOptimizerConfig = dataclasses.field(
        default_factory=lambda: FinetuneOptimizerConfig(
            learning_rate=0.1, weight_decay=1e-4, decay_epochs=(10, 20)))
    attack: PGDConfig = dataclasses.field(
        default_factory=lambda: PGDConfig(steps=10, random_start="normal", project_start=False))
    trades_beta: NonNegativeFloat = 6.0


@dataclasses.dataclass
class PostprocessConfig(ConfigBase):
    """DynACL++ post-processing (Luo, Wang & Wang, ICLR 2023; the DynACL code's
    ``assign_label.py`` then ``LPAFT_AFF.py``): k-means pseudo-labels of the pre-trained
    encoder's features (``clusters``), then linear probing (``linear_probe``) and adversarial full
    fine-tuning (``aft``) on them, which writes a new encoder.

    Both stages train on every image of the training split (no validation hold-out, no model
    selection: the last epoch is kept, as the reference does), ``batch_size`` 512 images, the last
    partial batch dropped (``LPAFT_AFF.py`` L35, L129-133), with RandomCrop(32, padding=4) and a
    horizontal flip (L95-99). ``bn`` is the BN branch both stages train (the reference's
    ``pgd``); the other branch is neither used nor changed, so the written ``encoder.keras``
    keeps both branches as ``LPAFT_AFF.py`` does (L213-218: its ``model.pt`` holds both routes),
    with the fine-tuned convolutions. ``single_bn_output`` writes the ``bn`` branch alone instead,
    the single-BN model of ``LPAFT.py`` (L180-181, ``cvt_state_dict`` of the adversarial route).

    ``pretrained``: a pre-training run directory (holding ``encoder.keras``), an imported
    checkpoint's directory or an encoder ``.keras`` file; ``model`` follows that encoder.
    ``eval_batch_size`` images go through one feature extraction.
    """

    pretrained: Optional[FilePath] = None
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    clusters: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)
    linear_probe: LinearProbeConfig = dataclasses.field(default_factory=LinearProbeConfig)
    aft: AftConfig = dataclasses.field(default_factory=AftConfig)
    bn: Branch = "adv"
    batch_size: PositiveInt = 512
    drop_remainder: bool = True
    augment: bool = True
    single_bn_output: bool = False
    eval_batch_size: PositiveInt = 256
    seed: Seed = 0
    log_every_steps: PositiveInt = 50
    keep_checkpoints: PositiveInt = 3

    def check_pretrained(self) -> None:
        """A ConfigError unless ``pretrained`` names an encoder (the presets leave it to
        ``--model``): post-processing has nothing to start from without one."""
        if not self.pretrained:
            raise ConfigError("Post-processing needs a pre-trained encoder: pass --model=RUN_DIR "
                              "(a pre-training run or an imported checkpoint) or an encoder "
                              ".keras file.")
