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

Both only hand the optimizer the variables that received a gradient, so the BN branch not in use
is neither trained nor weight-decayed.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from acl_tf import distribute
from acl_tf.attacks import PGDConfig, model_loss_fn, pgd_linf, replica_random_init, step_seed
from acl_tf.losses import ALPHA_CONVENTIONS, SEMISUP_TERMS, cross_entropy, semisup_student_loss

#: Keys of a student batch (a dict; see :class:`SemisupStudent`).
BATCH_KEYS = ("images", "labels", "targets", "is_labelled")


def _scaled_loss(model: keras.Model, loss):
    """The loss to differentiate (call inside the tape): Keras sums the gradients of replicas
    under tf.distribute, so the per-replica mean is divided by their number."""
    return model.optimizer.scale_loss(loss / distribute.num_replicas())


def _apply_gradients(model: keras.Model, tape: tf.GradientTape, scaled) -> None:
    """Applies the gradients of ``scaled`` (see :func:`_scaled_loss`) that are not None."""
    variables = model.trainable_variables
    grads = tape.gradient(scaled, variables)
    if not model.optimizer.built:
        model.optimizer.build(variables)
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    model.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])


@keras.saving.register_keras_serializable(package="acl_tf")
class TeacherTrainer(distribute.MultiWorkerFitMixin, keras.Model):
    """Standard (clean, cross-entropy) training of every layer of ``classifier``.

    ``fit`` takes batches ``(images, labels)`` (float32 in [0, 1], int). Logged: ``loss``, ``acc``.
    """

    def __init__(self, classifier, **kwargs):
        super().__init__(**kwargs)
        if classifier.freeze_encoder:
            raise ValueError("The teacher trains the whole network: build the Classifier with "
                             "freeze_encoder=False.")
        self.classifier = classifier
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="acc")

    def call(self, images, training=None, branch=None):
        return self.classifier(images, training=training, branch=branch)

    def train_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            logits = self.classifier(images, training=True)
            loss = cross_entropy(labels, logits)
            scaled = _scaled_loss(self, loss)
        _apply_gradients(self, tape, scaled)
        self.loss_tracker.update_state(loss)
        self.acc_tracker.update_state(labels, logits)
        return distribute.step_outputs({m.name: m.result() for m in self.metrics})

    @property
    def metrics(self):
        return [self.loss_tracker, self.acc_tracker]

    def get_config(self):
        return {"name": self.name,
                "classifier": keras.saving.serialize_keras_object(self.classifier)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="acl_tf")
class SemisupStudent(distribute.MultiWorkerFitMixin, keras.Model):
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
        super().__init__(**kwargs)
        if classifier.freeze_encoder:
            raise ValueError("The student trains the whole network: build the Classifier with "
                             "freeze_encoder=False.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.classifier = classifier
        self.alpha, self.temperature, self.beta = float(alpha), float(temperature), float(beta)
        self.distill_weight, self.alpha_convention = float(distill_weight), alpha_convention
        if attack is None:
            attack = PGDConfig(steps=10)
        self.attack = attack if isinstance(attack, PGDConfig) else PGDConfig(**attack)
        self.seed = seed
        # Fail now, not inside the first train step, on bad loss weights.
        if alpha_convention not in ALPHA_CONVENTIONS:
            raise ValueError(f"Unknown alpha_convention {alpha_convention!r}; expected one of "
                             f"{ALPHA_CONVENTIONS}.")
        if not 0.0 <= self.alpha <= 1.0 or self.beta < 0 or self.distill_weight < 0:
            raise ValueError(f"Need 0 <= alpha <= 1, beta >= 0 and distill_weight >= 0, got "
                             f"{alpha}, {beta}, {distill_weight}.")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = [keras.metrics.Mean(name=name) for name in SEMISUP_TERMS]
        self.acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="acc")
        self.adv_acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="adv_acc")

    @property
    def branch(self) -> str:
        return self.classifier.branch

    def call(self, images, training=None, branch=None):
        return self.classifier(images, training=training, branch=branch)

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
        loss_fn = model_loss_fn(self.classifier,
                                lambda logits: cross_entropy(attack_targets, logits, "sum"),
                                branch=self.branch)
        if seed is None:
            return pgd_linf(loss_fn, images, self.attack)
        return pgd_linf(loss_fn, images, self.attack,
                        x_start=replica_random_init(images, self.attack, seed))

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
            scaled = _scaled_loss(self, loss)
        _apply_gradients(self, tape, scaled)
        self.loss_tracker.update_state(loss)
        for tracker in self.term_trackers:
            tracker.update_state(terms[tracker.name])
        self.acc_tracker.update_state(targets, logits)
        self.adv_acc_tracker.update_state(targets, logits_adv)
        return distribute.step_outputs({m.name: m.result() for m in self.metrics})

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers, self.acc_tracker, self.adv_acc_tracker]

    def get_config(self):
        return {"name": self.name,
                "classifier": keras.saving.serialize_keras_object(self.classifier),
                "alpha": self.alpha, "temperature": self.temperature, "beta": self.beta,
                "attack": dataclasses.asdict(self.attack), "distill_weight": self.distill_weight,
                "alpha_convention": self.alpha_convention, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
