"""The ACL pre-training model: encoder + projection head with a contrastive ``train_step``.

Variants (reference section 1, Fig. 1 of the paper), for two augmented views v1, v2 of a batch:

======  ===========================================================  ==========
variant  what is contrasted (training passes use batch statistics)    BN
======  ===========================================================  ==========
s2s     (v1, v2)                                                     single
a2a     (v1 + d1, v2 + d2)                                           single
a2s     (v1 + d1 on the ``adv`` BN, v2 on the ``normal`` BN)          dual
ds      NT-Xent(v1, v2; normal) + alpha * NT-Xent(v1+d1, v2+d2; adv)  dual
======  ===========================================================  ==========

The perturbations d are L-inf PGD on the NT-Xent loss of the pair, run with BN in inference mode
(moving statistics) on the branch the adversarial views train with; the attack differentiates
with respect to the input only. With ``ds_average=True`` the DS sum is halved, as the official code
does (the paper's loss, and the default, is the plain sum).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from acl_tf.attacks import PGDConfig, pgd_linf
from acl_tf.losses import nt_xent

VARIANTS = ("s2s", "a2a", "a2s", "ds")
DUAL_BN_VARIANTS = ("a2s", "ds")


def check_variant(variant: str) -> str:
    """Returns the lower-cased variant or raises a ValueError naming the valid ones."""
    name = str(variant).lower()
    if name not in VARIANTS:
        raise ValueError(f"Unknown ACL variant {variant!r}; expected one of {VARIANTS}.")
    return name


@keras.saving.register_keras_serializable(package="acl_tf")
class ACLPretrainer(keras.Model):
    """Encoder + projection head trained with one of the ACL variants.

    Args:
        encoder: a model called as ``encoder(images, training=..., branch=...)`` (e.g.
            :class:`acl_tf.models.ResNet18`).
        head: a layer called as ``head(features, training=..., branch=...)``
            (:class:`acl_tf.models.ProjectionHead`).
        variant: ``s2s``, ``a2a``, ``a2s`` or ``ds``.
        temperature: NT-Xent temperature.
        attack: :class:`PGDConfig` (or its dict) of the pre-training attack (5 steps).
        ds_alpha: weight of the adversarial stream in DS.
        ds_average: halve the DS sum (the official code) instead of the paper's plain sum.
        seed: seed of the attack's random start (combined with the step counter, so a resumed
            run draws the same starts).

    ``fit`` takes batches ``((view1, view2), labels)`` (labels are ignored) of float32 images in
    [0, 1]. Logged metrics: ``loss`` (total), ``clean_loss``/``clean_acc`` and
    ``adv_loss``/``adv_acc`` (NT-Xent and positive-pair top-1 accuracy of each stream present).
    """

    def __init__(self, encoder, head, variant: str = "ds", temperature: float = 0.5,
                 attack=None, ds_alpha: float = 1.0, ds_average: bool = False, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head
        self.variant = check_variant(variant)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.temperature = temperature
        if attack is None:
            attack = PGDConfig()
        self.attack = attack if isinstance(attack, PGDConfig) else PGDConfig(**attack)
        self.ds_alpha = ds_alpha
        self.ds_average = ds_average
        self.seed = seed
        streams = {"s2s": ("clean",), "a2a": ("adv",), "a2s": ("adv",), "ds": ("clean", "adv")}
        self.streams = streams[self.variant]
        self.trackers = {"loss": keras.metrics.Mean(name="loss")}
        for stream in self.streams:
            self.trackers[f"{stream}_loss"] = keras.metrics.Mean(name=f"{stream}_loss")
            self.trackers[f"{stream}_acc"] = keras.metrics.Mean(name=f"{stream}_acc")

    # -- forward -------------------------------------------------------------------------------
    def call(self, images, training=None, branch="normal"):
        features = self.encoder(images, training=training, branch=branch)
        return self.head(features, training=training, branch=branch)

    def _pair_loss(self, views, training, branch):
        """NT-Xent (and accuracy) of a stacked pair [2B, ...] through one BN branch."""
        z = self(views, training=training, branch=branch)
        z_a, z_b = tf.split(z, 2, axis=0)
        return nt_xent(z_a, z_b, self.temperature, return_accuracy=True)

    def _attack_seed(self):
        step = tf.cast(self.optimizer.iterations, tf.int64)
        replica = tf.distribute.get_replica_context()
        replica_id = tf.cast(replica.replica_id_in_sync_group if replica else 0, tf.int64)
        return tf.stack([tf.constant(self.seed, tf.int64) * 1_000_003 + replica_id, step])

    def adversarial_views(self, view1, view2):
        """PGD views of the variant (inference-mode BN, no weight gradients).

        Returns the stacked adversarial pair [2B, ...] for a2a/ds, or the adversarial first view
        [B, ...] for a2s.
        """
        seed = self._attack_seed()
        if self.variant == "a2s":
            z_clean = tf.stop_gradient(self(view2, training=False, branch="normal"))

            def loss_fn(x_adv):
                return nt_xent(self(x_adv, training=False, branch="adv"), z_clean, self.temperature)

            return pgd_linf(loss_fn, view1, self.attack, seed=seed)

        def pair_loss_fn(x_adv):
            z_a, z_b = tf.split(self(x_adv, training=False, branch="adv"), 2, axis=0)
            return nt_xent(z_a, z_b, self.temperature)

        return pgd_linf(pair_loss_fn, tf.concat([view1, view2], axis=0), self.attack, seed=seed)

    def compute_losses(self, view1, view2):
        """Total loss and per-stream (loss, accuracy) of one training step (training-mode BN)."""
        results = {}
        if self.variant in ("s2s", "ds"):
            results["clean"] = self._pair_loss(tf.concat([view1, view2], 0), True, "normal")
        if self.variant in ("a2a", "ds"):
            results["adv"] = self._pair_loss(self.adversarial_views(view1, view2), True, "adv")
        if self.variant == "a2s":
            x_adv = self.adversarial_views(view1, view2)
            z_adv = self(x_adv, training=True, branch="adv")
            z_clean = self(view2, training=True, branch="normal")
            results["adv"] = nt_xent(z_adv, z_clean, self.temperature, return_accuracy=True)
        if self.variant == "ds":
            total = results["clean"][0] + self.ds_alpha * results["adv"][0]
            if self.ds_average:
                total = total / 2.0
        else:
            total = results[self.streams[0]][0]
        return total, results

    # -- training ------------------------------------------------------------------------------
    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        view1, view2 = x
        # The attack must not see the tape: it runs before it, in inference mode.
        with tf.GradientTape() as tape:
            total, results = self.compute_losses(view1, view2)
            # Keras sums gradients over replicas: scale the per-replica mean loss.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(total / replicas)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return self._update_metrics(total, results)

    def _update_metrics(self, total, results):
        self.trackers["loss"].update_state(total)
        for stream, (loss, acc) in results.items():
            self.trackers[f"{stream}_loss"].update_state(loss)
            self.trackers[f"{stream}_acc"].update_state(acc)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    @property
    def metrics(self):
        return list(self.trackers.values())

    # -- serialisation -------------------------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "head": keras.saving.serialize_keras_object(self.head),
            "variant": self.variant,
            "temperature": self.temperature,
            "attack": dataclasses.asdict(self.attack),
            "ds_alpha": self.ds_alpha,
            "ds_average": self.ds_average,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)
