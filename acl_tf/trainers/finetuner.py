"""The supervised fine-tuning model: a :class:`~acl_tf.models.Classifier` with the ``train_step``
of one of three protocols (reference section 2).

=====  ====================================================  ==================================
mode   loss of one batch (x, y)                               what is trained
=====  ====================================================  ==================================
aff    TRADES: CE(f(x), y) + beta * KL(f(x) || f(x'))         everything (encoder, BN, linear)
alf    CE(f(x'), y), x' = PGD on the cross-entropy            the linear layer only
slf    CE(f(x), y)                                            the linear layer only
=====  ====================================================  ==================================

Every forward pass uses the classifier's BN branch (``adv`` or ``normal``). The attacks run with
BN in inference mode on that branch (TRADES calls ``model.eval()`` before its attack) and
differentiate with respect to the input only: x' of AFF maximises the summed KL from a start
x + 0.001 N(0, 1); x' of ALF maximises the cross-entropy from a uniform start. In AFF the
training passes use batch statistics (the clean and the adversarial batch each update the moving
statistics, as two PyTorch forward passes do); in ALF/SLF the frozen encoder always runs in
inference mode, so its moving statistics never change.

Weight decay is the optimizer's business (:class:`acl_tf.optimizers.SGDL2`); only
variables that receive a gradient are handed to it, so the unused BN branch is neither trained
nor decayed.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from acl_tf.attacks import PGDConfig, step_seed
from acl_tf.configs import FINETUNE_MODES as MODES  # noqa: F401 (re-exported)
from acl_tf.configs import check_mode
from acl_tf.core.errors import ConfigError
from acl_tf.losses import cross_entropy, trades_kl, trades_loss
from acl_tf.trainers.adversarial import AdversarialTrainer


@keras.saving.register_keras_serializable(package="acl_tf")
class Finetuner(AdversarialTrainer):
    """Trains a :class:`~acl_tf.models.Classifier` with AFF, ALF or SLF.

    Args:
        classifier: the model to train; build it with ``freeze_encoder=(mode != "aff")``.
        mode: ``aff``, ``alf`` or ``slf``.
        attack: :class:`PGDConfig` (or dict) of the training attack: the TRADES attack for AFF
            (10 steps, normal start), the PGD of ALF (10 steps, uniform start); unused by SLF.
        beta: TRADES weight of the KL term (AFF).
        seed: seed of the attack's random start (combined with the step counter, so a resumed
            run draws the same starts; under ``tf.distribute`` every replica draws the global
            batch's noise and keeps its rows, so the starts do not depend on the number of
            replicas).

    ``fit`` takes batches ``(images, labels)`` of float32 images in [0, 1] and int labels.
    Logged metrics: ``loss``, ``acc`` (clean accuracy of the batch; training-mode BN in AFF) and,
    for AFF/ALF, ``adv_acc`` (accuracy on the training attack's x').
    """

    def __init__(self, classifier, mode: str = "aff", attack=None, beta: float = 6.0,
                 seed: int = 0, **kwargs):
        mode = check_mode(mode)
        if beta < 0:
            raise ConfigError(f"beta (the TRADES weight) must be >= 0, got {beta}.")
        default = PGDConfig(steps=10, random_start="normal" if mode == "aff" else "uniform")
        super().__init__(classifier, attack=attack, seed=seed, trains_encoder=mode == "aff",
                         role=mode.upper(), default_attack=default, adversarial=mode != "slf",
                         **kwargs)
        self.mode = mode
        self.beta = beta

    # -- attacks -------------------------------------------------------------------------------
    def adversarial_examples(self, images, labels, seed=None):
        """x' of the training attack (inference-mode BN on the classifier's branch).

        AFF: maximise ``trades_kl(f(x), f(x'), reduction="sum")`` with f(x) fixed (TRADES);
        ALF: maximise the cross-entropy of ``labels``. ``seed``: stateless seed [2] of the random
        start (None: the global generator).
        """
        if self.mode == "slf":
            raise ValueError("SLF trains on clean images; it has no training attack.")
        if self.mode == "aff":
            logits_clean = tf.stop_gradient(
                self.classifier(images, training=False, branch=self.branch))
            return self.run_attack(images, lambda logits: trades_kl(logits_clean, logits, "sum"),
                                   seed)
        return self.run_attack(images, lambda logits: cross_entropy(labels, logits, "sum"), seed)

    # -- training ------------------------------------------------------------------------------
    def compute_step(self, images, labels, x_adv=None):
        """Loss, clean logits and adversarial logits (None for SLF) of one training step."""
        if self.mode == "aff":
            logits = self.classifier(images, training=True)
            logits_adv = self.classifier(x_adv, training=True)
            return trades_loss(logits, logits_adv, labels, self.beta), logits, logits_adv
        if self.mode == "alf":
            logits_adv = self.classifier(x_adv, training=True)
            logits = tf.stop_gradient(self.classifier(images, training=False))
            return cross_entropy(labels, logits_adv), logits, logits_adv
        logits = self.classifier(images, training=True)
        return cross_entropy(labels, logits), logits, None

    def train_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        # The attack must not see the tape: it runs first, in inference mode.
        x_adv = (self.adversarial_examples(images, labels,
                                           step_seed(self.seed, self.optimizer.iterations))
                 if self.mode != "slf" else None)
        with tf.GradientTape() as tape:
            loss, logits, logits_adv = self.compute_step(images, labels, x_adv)
            scaled = self.scaled_loss(loss)
        self.minimize(tape, scaled)
        return self.update_metrics(loss, labels, logits, logits_adv)

    def settings(self):
        return {"mode": self.mode, "attack": dataclasses.asdict(self.attack), "beta": self.beta,
                "seed": self.seed}
