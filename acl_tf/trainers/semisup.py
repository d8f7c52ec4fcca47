"""The two trained models of semi-supervised adversarial training (reference section 4).

* :class:`TeacherTrainer` (step ii): standard training of a whole
  :class:`~acl_tf.models.Classifier` (encoder, BN, linear layer) with the cross-entropy of clean
  images, on the classifier's BN branch (``normal`` for the teacher).
* :class:`SemisupStudent` (step iii): adversarial training on a batch mixing labelled and
  unlabelled images with :func:`acl_tf.losses.semisup_student_loss`. The attack is PGD on the
  cross-entropy of the true label (labelled images) or of the arg-max pseudo-label (unlabelled
  ones), uniform start, run with BN in inference mode on the classifier's branch (``adv``); the
  two training passes (clean and adversarial images) use batch statistics, as the official
  script's ``model.train()`` passes do.

Both are :class:`~acl_tf.trainers.adversarial.AdversarialTrainer` s: they only hand the optimizer
the variables that received a gradient, so the BN branch not in use is neither trained nor
weight-decayed.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from acl_tf.attacks import PGDConfig, step_seed
from acl_tf.core.errors import ConfigError
from acl_tf.losses import ALPHA_CONVENTIONS, SEMISUP_TERMS, cross_entropy, semisup_student_loss
from acl_tf.trainers.adversarial import AdversarialTrainer

#: Keys of a student batch (a dict; see :class:`SemisupStudent`).
BATCH_KEYS = ("images", "labels", "targets", "is_labelled")


@keras.saving.register_keras_serializable(package="acl_tf")
class TeacherTrainer(AdversarialTrainer):
    """Standard (clean, cross-entropy) training of every layer of ``classifier``.

    ``fit`` takes batches ``(images, labels)`` (float32 in [0, 1], int). Logged: ``loss``, ``acc``.
    """

    def __init__(self, classifier, **kwargs):
        super().__init__(classifier, trains_encoder=True, role="The teacher", adversarial=False,
                         **kwargs)

    def train_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            logits = self.classifier(images, training=True)
            loss = cross_entropy(labels, logits)
            scaled = self.scaled_loss(loss)
        self.minimize(tape, scaled)
        return self.update_metrics(loss, labels, logits)


@keras.saving.register_keras_serializable(package="acl_tf")
class SemisupStudent(AdversarialTrainer):
    """Adversarial training of ``classifier`` on labelled + pseudo-labelled images.

    Args:
        classifier: the model trained (``freeze_encoder=False``; branch ``adv``).
        alpha, beta, distill_weight, alpha_convention: weights of
            :func:`acl_tf.losses.semisup_student_loss`.
        temperature: T of the soft pseudo-labels and of the distillation terms.
        attack: :class:`PGDConfig` (or dict) of the training attack (PGD-10, uniform start).
        seed: seed of the attack's random start (folded with the step counter; the same on every
            replica, so N replicas start from the points one device would).

    ``fit`` takes dict batches with :data:`BATCH_KEYS`: ``images`` float32 [B, H, W, 3] in
    [0, 1], ``labels`` int64 [B] (true labels of labelled images, -1 elsewhere), ``targets``
    float32 [B, C] (soft pseudo-labels at T) and ``is_labelled`` bool [B]. Logged: ``loss``, the
    four weighted terms of the loss, ``acc`` / ``adv_acc`` (clean / adversarial accuracy against
    the attack targets: label or arg-max pseudo-label).
    """

    def __init__(self, classifier, alpha: float = 0.5, temperature: float = 1.0,
                 beta: float = 6.0, attack=None, distill_weight: float = 1.0,
                 alpha_convention: str = "paper", seed: int = 0, **kwargs):
        # Fail now, not inside the first train step, on bad loss weights.
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}.")
        if alpha_convention not in ALPHA_CONVENTIONS:
            raise ConfigError(f"Unknown alpha_convention {alpha_convention!r}; expected one of "
                              f"{ALPHA_CONVENTIONS}.")
        if not 0.0 <= float(alpha) <= 1.0 or float(beta) < 0 or float(distill_weight) < 0:
            raise ConfigError(f"Need 0 <= alpha <= 1, beta >= 0 and distill_weight >= 0, got "
                              f"{alpha}, {beta}, {distill_weight}.")
        super().__init__(classifier, attack=attack, seed=seed, trains_encoder=True,
                         role="The student", default_attack=PGDConfig(steps=10),
                         term_names=SEMISUP_TERMS, **kwargs)
        self.alpha, self.temperature, self.beta = float(alpha), float(temperature), float(beta)
        self.distill_weight, self.alpha_convention = float(distill_weight), alpha_convention

    @staticmethod
    def attack_targets(labels, targets, is_labelled):
        """The label each image's attack pushes away from: its true label if labelled, else the
        arg-max of its soft pseudo-label."""
        pseudo = tf.argmax(targets, axis=-1, output_type=tf.int64)
        return tf.where(tf.cast(is_labelled, tf.bool), tf.cast(labels, tf.int64), pseudo)

    def adversarial_examples(self, images, attack_targets, seed=None):
        """PGD on the summed cross-entropy of ``attack_targets`` (inference-mode BN).

        ``seed``: stateless seed [2] of the random start, the same on every replica (see
        :func:`acl_tf.attacks.step_seed`); None: the global generator."""
        return self.run_attack(
            images, lambda logits: cross_entropy(attack_targets, logits, "sum"), seed)

    def compute_loss_terms(self, batch, x_adv):
        """``(loss, terms, logits, logits_adv)`` of one batch with adversarial images ``x_adv``."""
        logits = self.classifier(batch["images"], training=True)
        logits_adv = self.classifier(x_adv, training=True)
        loss, terms = semisup_student_loss(
            logits, logits_adv, batch["labels"], batch["targets"], batch["is_labelled"],
            alpha=self.alpha, temperature=self.temperature, beta=self.beta,
            distill_weight=self.distill_weight, alpha_convention=self.alpha_convention,
            return_terms=True)
        return loss, terms, logits, logits_adv

    def train_step(self, data):
        batch, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise ValueError(f"SemisupStudent batches are dicts with keys {BATCH_KEYS}; "
                             f"missing {missing}.")
        targets = self.attack_targets(batch["labels"], batch["targets"], batch["is_labelled"])
        # The attack must not see the tape: it runs first, in inference mode.
        x_adv = self.adversarial_examples(batch["images"], targets,
                                          step_seed(self.seed, self.optimizer.iterations))
        with tf.GradientTape() as tape:
            loss, terms, logits, logits_adv = self.compute_loss_terms(batch, x_adv)
            scaled = self.scaled_loss(loss)
        self.minimize(tape, scaled)
        return self.update_metrics(loss, targets, logits, logits_adv, terms)

    def settings(self):
        return {"alpha": self.alpha, "temperature": self.temperature, "beta": self.beta,
                "attack": dataclasses.asdict(self.attack), "distill_weight": self.distill_weight,
                "alpha_convention": self.alpha_convention, "seed": self.seed}
