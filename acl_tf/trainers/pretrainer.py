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

Under ``tf.distribute`` each replica contrasts its pairs against the views of *all* replicas
(all-gathered projections, :func:`acl_tf.losses.nt_xent_cross_replica`), in the training loss
and in the attack's loss, and every example's random start is drawn from the global batch's noise
(:func:`acl_tf.attacks.replica_random_init`); with synchronised BN (``model.sync_bn``) a step on
R replicas then equals the single-device step on the same global batch up to float rounding.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from acl_tf import distribute
from acl_tf.attacks import PGDConfig, pgd_linf, replica_random_init, step_seed
from acl_tf.configs import DUAL_BN_VARIANTS, VARIANTS, check_variant  # noqa: F401 (re-exported)
from acl_tf.losses import nt_xent_cross_replica
from acl_tf.trainers.adversarial import Trainer


@keras.saving.register_keras_serializable(package="acl_tf")
class ACLPretrainer(Trainer):
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
            run draws the same starts; every replica draws the global batch's noise and keeps
            its own rows, so the starts do not depend on the number of replicas).

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
        return nt_xent_cross_replica(z_a, z_b, self.temperature, return_accuracy=True)

    def _pgd(self, loss_fn, x, groups, seed):
        """PGD from the replica-independent random start; unrolled when the loss all-gathers."""
        start = replica_random_init(x, self.attack, seed, groups=groups)
        return pgd_linf(loss_fn, x, self.attack, x_start=start,
                        unroll=distribute.num_replicas() > 1,
                        loss_scale=self._attack_loss_scale())

    def _attack_loss_scale(self):
        """With float16 compute (``mixed_float16``) the optimiser's dynamic loss scale, so that
        the attack's input gradient does not underflow (its sign does not depend on the scale);
        None otherwise. The perturbation, its projection and NT-Xent stay float32 in any policy.
        """
        if self.compute_dtype == "float16" and hasattr(self.optimizer, "dynamic_scale"):
            return tf.stop_gradient(self.optimizer.dynamic_scale)
        return None

    def adversarial_views(self, view1, view2):
        """PGD views of the variant (inference-mode BN, no weight gradients).

        Returns the stacked adversarial pair [2B, ...] for a2a/ds, or the adversarial first view
        [B, ...] for a2s.
        """
        seed = step_seed(self.seed, self.optimizer.iterations)
        if self.variant == "a2s":
            z_clean = tf.stop_gradient(self(view2, training=False, branch="normal"))

            def loss_fn(x_adv):
                return nt_xent_cross_replica(self(x_adv, training=False, branch="adv"), z_clean,
                                             self.temperature)

            return self._pgd(loss_fn, view1, 1, seed)

        def pair_loss_fn(x_adv):
            z_a, z_b = tf.split(self(x_adv, training=False, branch="adv"), 2, axis=0)
            return nt_xent_cross_replica(z_a, z_b, self.temperature)

        return self._pgd(pair_loss_fn, tf.concat([view1, view2], axis=0), 2, seed)

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
            results["adv"] = nt_xent_cross_replica(z_adv, z_clean, self.temperature,
                                                   return_accuracy=True)
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
        variables = self.trainable_variables
        if self.variant == "ds":
            total, results, grads = self._ds_gradients(view1, view2, variables)
        else:
            # The attack records nothing the gradient needs: its output is gradient-stopped.
            with tf.GradientTape() as tape:
                total, results = self.compute_losses(view1, view2)
                # With the all-gathered negatives the mean over replicas is the global batch's
                # loss.
                scaled = self.scaled_loss(total)
            grads = tape.gradient(scaled, variables)
        self.apply_gradients(grads, variables)
        return self._update_metrics(total, results)

    def _ds_gradients(self, view1, view2, variables):
        """DS loss and its gradient, one stream at a time.

        The gradient of ``w * (clean + alpha * adv)`` (``w`` = 1/2 with ``ds_average``) is the sum
        of the streams' gradients, so the clean stream's forward and backward pass run first and
        free their activations before the attack and the adversarial stream run: the step then
        holds the activations of one training pass (128 views at batch 64), not two.
        """
        scale = 0.5 if self.ds_average else 1.0
        with tf.GradientTape() as tape:
            clean = self._pair_loss(tf.concat([view1, view2], 0), True, "normal")
            scaled = self.scaled_loss(scale * clean[0])
        clean_grads = tape.gradient(scaled, variables)
        # Start the attack only once the clean stream's backward pass is done.
        with tf.control_dependencies([g for g in clean_grads if g is not None]):
            x_adv = tf.identity(self.adversarial_views(tf.identity(view1),
                                                       tf.identity(view2)))
        with tf.GradientTape() as tape:
            adv = self._pair_loss(x_adv, True, "adv")
            scaled = self.scaled_loss(scale * self.ds_alpha * adv[0])
        adv_grads = tape.gradient(scaled, variables)
        grads = [a if b is None else b if a is None else a + b
                 for a, b in zip(clean_grads, adv_grads)]
        total = clean[0] + self.ds_alpha * adv[0]
        if self.ds_average:
            total = total / 2.0
        return total, {"clean": clean, "adv": adv}, grads

    def _update_metrics(self, total, results):
        self.trackers["loss"].update_state(total)
        for stream, (loss, acc) in results.items():
            self.trackers[f"{stream}_loss"].update_state(loss)
            self.trackers[f"{stream}_acc"].update_state(acc)
        return self.step_logs()

    @property
    def metrics(self):
        return list(self.trackers.values())

    # -- serialisation -------------------------------------------------------------------------
    NESTED = ("encoder", "head")

    def settings(self):
        return {
            "variant": self.variant,
            "temperature": self.temperature,
            "attack": dataclasses.asdict(self.attack),
            "ds_alpha": self.ds_alpha,
            "ds_average": self.ds_average,
            "seed": self.seed,
        }
