"""What the trainers share: gradient application under ``tf.distribute``, serialisation of their
nested Keras objects and, for the classifier trainers, the classifier, its BN branch, the
training attack and the metric trackers.

* :class:`Trainer`: a ``keras.Model`` with a custom ``train_step`` (multi-worker ``fit`` works,
  see :class:`acl_tf.distribute.MultiWorkerFitMixin`). :meth:`Trainer.scaled_loss` is the loss
  to differentiate (Keras sums the gradients of the replicas, so the per-replica mean is divided
  by their number); :meth:`Trainer.apply_gradients` hands the optimizer only the variables that
  received a gradient, so a BN branch not in use is neither trained nor weight-decayed.
  ``get_config`` / ``from_config`` (de)serialise the constructor arguments named in
  ``NESTED`` (Keras objects) and add those of :meth:`Trainer.settings`.
* :class:`AdversarialTrainer`: a :class:`Trainer` of one :class:`~acl_tf.models.Classifier`:
  the fine-tuner (:class:`acl_tf.trainers.finetuner.Finetuner`), the semi-supervised teacher
  and student (:mod:`acl_tf.trainers.semisup`). The training attack is L-inf PGD with BN in
  inference mode on the classifier's branch, differentiated with respect to the input only
  (:meth:`AdversarialTrainer.run_attack`); the logged ``loss``, ``acc`` and (when the steps
  train on x') ``adv_acc`` come from its trackers.
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from acl_tf import distribute
from acl_tf.attacks import PGDConfig, model_loss_fn, pgd_linf, replica_random_init
from acl_tf.core.errors import ConfigError


def as_pgd(attack, default: Optional[PGDConfig]) -> Optional[PGDConfig]:
    """``attack`` as a :class:`PGDConfig` (it may be one, or its dict); None gives ``default``."""
    if attack is None:
        return default
    return attack if isinstance(attack, PGDConfig) else PGDConfig(**attack)


class Trainer(distribute.MultiWorkerFitMixin, keras.Model):
    """Base of the trainers: distributed gradient application and (de)serialisation."""

    #: Constructor arguments that are Keras objects (serialised as such by ``get_config``).
    NESTED: tuple = ()

    def scaled_loss(self, loss):
        """The loss to differentiate (call inside the tape): Keras sums the gradients of
        replicas under tf.distribute, so the per-replica mean is divided by their number."""
        return self.optimizer.scale_loss(loss / distribute.num_replicas())

    def apply_gradients(self, grads, variables) -> None:
        """Applies the ``grads`` of ``variables`` that are not None.

        The optimizer is built for all ``variables`` first (not only the first subset that has
        gradients); the ones without a gradient (the BN branch not in use, a frozen encoder) get
        no update, no momentum and no weight decay."""
        if not self.optimizer.built:
            self.optimizer.build(variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

    def minimize(self, tape: tf.GradientTape, scaled) -> None:
        """Applies the gradients of ``scaled`` (see :meth:`scaled_loss`) to the trainable
        variables (see :meth:`apply_gradients`)."""
        variables = self.trainable_variables
        self.apply_gradients(tape.gradient(scaled, variables), variables)

    def step_logs(self) -> dict:
        """The results of every metric, as ``train_step`` returns them."""
        return distribute.step_outputs({m.name: m.result() for m in self.metrics})

    # -- serialisation -------------------------------------------------------------------------
    def settings(self) -> dict:
        """The constructor arguments other than ``NESTED`` (plain values)."""
        return {}

    def get_config(self):
        config = {"name": self.name}
        for key in self.NESTED:
            config[key] = keras.saving.serialize_keras_object(getattr(self, key))
        config.update(self.settings())
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.NESTED:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


class AdversarialTrainer(Trainer):
    """A :class:`Trainer` of ``classifier`` (a :class:`~acl_tf.models.Classifier`).

    Args:
        classifier: the model trained; ``classifier.freeze_encoder`` must be
            ``not trains_encoder``.
        attack: :class:`PGDConfig` (or dict) of the training attack, None for ``default_attack``
            (None: no attack, e.g. the teacher's standard training).
        seed: seed of the attack's random start (see :meth:`run_attack`).
        trains_encoder: whether the subclass trains the encoder (checked against the
            classifier).
        role: what trains, for error messages (``"AFF"``, ``"The teacher"``, ...).
        default_attack: the attack when ``attack`` is None.
        term_names: names of extra mean trackers, logged between ``loss`` and ``acc``.
        adversarial: whether the steps train on x' (then ``adv_acc`` is logged).

    Logged: ``loss``, the ``term_names``, ``acc`` and, if ``adversarial``, ``adv_acc``.
    """

    NESTED = ("classifier",)

    def __init__(self, classifier, *, attack=None, seed: int = 0, trains_encoder: bool = True,
                 role: str = "The trainer", default_attack: Optional[PGDConfig] = None,
                 term_names=(), adversarial: bool = True, **kwargs):
        super().__init__(**kwargs)
        if bool(classifier.freeze_encoder) == trains_encoder:
            what = "the whole network" if trains_encoder else "the linear layer only"
            raise ConfigError(f"{role} trains {what}: build the Classifier with "
                              f"freeze_encoder={not trains_encoder}.")
        self.classifier = classifier
        self.attack = as_pgd(attack, default_attack)
        self.seed = seed
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = [keras.metrics.Mean(name=name) for name in term_names]
        self.acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="acc")
        self.adv_acc_tracker = (keras.metrics.SparseCategoricalAccuracy(name="adv_acc")
                                if adversarial else None)

    @property
    def branch(self) -> str:
        return self.classifier.branch

    def call(self, images, training=None, branch=None):
        return self.classifier(images, training=training, branch=branch)

    def run_attack(self, images, loss_of_logits, seed=None):
        """x' maximising ``loss_of_logits(classifier(x'))`` (L-inf PGD of ``self.attack``,
        inference-mode BN on the classifier's branch, gradient with respect to the input only).

        ``seed``: stateless seed [2] of the random start, the same on every replica (see
        :func:`acl_tf.attacks.step_seed`), so N replicas start from the points one device would;
        None: the global generator."""
        loss_fn = model_loss_fn(self.classifier, loss_of_logits, branch=self.branch)
        if seed is None:
            return pgd_linf(loss_fn, images, self.attack)
        return pgd_linf(loss_fn, images, self.attack,
                        x_start=replica_random_init(images, self.attack, seed))

    def update_metrics(self, loss, labels, logits, logits_adv=None, terms=None) -> dict:
        """Updates the trackers with one step's results; returns the step's logs."""
        self.loss_tracker.update_state(loss)
        for tracker in self.term_trackers:
            tracker.update_state(terms[tracker.name])
        self.acc_tracker.update_state(labels, logits)
        if self.adv_acc_tracker is not None:
            self.adv_acc_tracker.update_state(labels, logits_adv)
        return self.step_logs()

    @property
    def metrics(self):
        return [m for m in (self.loss_tracker, *self.term_trackers, self.acc_tracker,
                            self.adv_acc_tracker) if m is not None]
