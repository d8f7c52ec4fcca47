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

ACL's successors build on DS (:mod:`acl_tf.configs.pretrain`, ``method``):

- ``dynamic_weights`` (DynACL): the two streams' weights are a non-trainable variable
  ``stream_weights`` = (clean, adversarial) that :class:`acl_tf.tasks.pretrain.StreamSchedule` sets
  at every epoch;
- ``air`` (AIR): the loss adds ``lambda1`` SIR + ``lambda2`` AIR
  (:func:`acl_tf.losses.air_regularizers`), which compare the views with the original image:
  batches are then ``((view1, view2, original), labels)``;
- ``momentum`` (the released DynACL code): the second view of every pair goes through
  ``encoder_k``/``head_k``, copies of the encoder and head that take no gradient and follow the
  trained ones as an exponential moving average, ``k <- m k + (1 - m) q``, of the weights before
  the step's update (BN statistics are their own, from their training-mode passes).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from acl_tf import distribute
from acl_tf.attacks import PGDConfig, pgd_linf, replica_random_init, step_seed
from acl_tf.configs import DUAL_BN_VARIANTS, VARIANTS, check_variant  # noqa: F401 (re-exported)
from acl_tf.configs import AirConfig
from acl_tf.losses import air_regularizers, nt_xent_cross_replica
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
        dynamic_weights: DS stream weights from the variable ``stream_weights`` (DynACL).
        air: :class:`AirConfig` (or its dict) to add AIR's regularisers; None for none.
        momentum: EMA momentum of a key encoder and head for the second views (the DynACL
            code's variant); None for none.

    ``fit`` takes batches ``((view1, view2), labels)`` (labels are ignored) of float32 images in
    [0, 1], ``((view1, view2, original), labels)`` with ``air``. Logged metrics: ``loss``
    (total), ``clean_loss``/``clean_acc`` and ``adv_loss``/``adv_acc`` (NT-Xent and positive-pair
    top-1 accuracy of each stream present), ``sir``/``air`` with ``air``.
    """

    def __init__(self, encoder, head, variant: str = "ds", temperature: float = 0.5,
                 attack=None, ds_alpha: float = 1.0, ds_average: bool = False, seed: int = 0,
                 dynamic_weights: bool = False, air=None, momentum=None, **kwargs):
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
        if (dynamic_weights or air is not None or momentum is not None) and self.variant != "ds":
            raise ValueError("dynamic stream weights, AIR and the momentum encoder build on the "
                             f"DS variant, got variant {self.variant!r}.")
        if air is not None and momentum is not None:
            raise ValueError("AIR with the momentum encoder is not supported (neither reference "
                             "combines them).")
        self.dynamic_weights = bool(dynamic_weights)
        self.air = None if air is None else air if isinstance(air, AirConfig) else AirConfig(**air)
        self.momentum = None if momentum is None else float(momentum)
        if self.dynamic_weights:
            # Set every epoch by the task's schedule; starts as ACL's weights.
            self.stream_weights = keras.Variable(list(self._constant_weights()),
                                                 trainable=False, dtype="float32",
                                                 name="stream_weights")
        if self.momentum is not None:
            if not 0.0 <= self.momentum < 1.0:
                raise ValueError(f"momentum must be in [0, 1), got {self.momentum}.")
            self.encoder_k = _clone(encoder, "encoder_k")
            self.head_k = _clone(head, "head_k")
        streams = {"s2s": ("clean",), "a2a": ("adv",), "a2s": ("adv",), "ds": ("clean", "adv")}
        self.streams = streams[self.variant]
        self.trackers = {"loss": keras.metrics.Mean(name="loss")}
        for stream in self.streams:
            self.trackers[f"{stream}_loss"] = keras.metrics.Mean(name=f"{stream}_loss")
            self.trackers[f"{stream}_acc"] = keras.metrics.Mean(name=f"{stream}_acc")
        if self.air is not None:
            for term in ("sir", "air"):
                self.trackers[term] = keras.metrics.Mean(name=term)

    # -- forward -------------------------------------------------------------------------------
    def call(self, images, training=None, branch="normal"):
        features = self.encoder(images, training=training, branch=branch)
        return self.head(features, training=training, branch=branch)

    def key_projection(self, images, training=None, branch="normal"):
        """Projections through the key (momentum) encoder and head."""
        features = self.encoder_k(images, training=training, branch=branch)
        return self.head_k(features, training=training, branch=branch)

    @property
    def output_encoder(self):
        """The encoder a run writes out: the key encoder with a momentum encoder (the one the
        DynACL code evaluates and releases), the trained one otherwise."""
        return self.encoder if self.momentum is None else self.encoder_k

    def _pair_projections(self, views, training, branch):
        """(z_a, z_b) of a stacked pair [2B, ...] through one BN branch: both halves through the
        model, or with a momentum encoder the second half through the key encoder (no weight
        gradient: :attr:`trainable_weights` leaves its variables out; the input gradient still
        flows)."""
        if self.momentum is None:
            return tf.split(self(views, training=training, branch=branch), 2, axis=0)
        v_a, v_b = tf.split(views, 2, axis=0)
        return (self(v_a, training=training, branch=branch),
                self.key_projection(v_b, training=training, branch=branch))

    def _pair_loss(self, views, training, branch):
        """NT-Xent (and accuracy) of a stacked pair [2B, ...] through one BN branch."""
        z_a, z_b = self._pair_projections(views, training, branch)
        return nt_xent_cross_replica(z_a, z_b, self.temperature, return_accuracy=True)

    def _constant_weights(self):
        scale = 0.5 if self.ds_average else 1.0
        return scale, scale * self.ds_alpha

    def loss_weights(self, dtype="float32"):
        """(clean, adversarial) weights of the DS streams in the total loss, ``ds_average``'s
        halving included, as ``dtype`` (the losses' type)."""
        if self.dynamic_weights:
            weights = tf.cast(self.stream_weights, dtype)
            return weights[0], weights[1]
        return tuple(tf.constant(w, dtype) for w in self._constant_weights())

    def build(self, input_shape):
        """Builds the key encoder and head too (their weights exist before a load restores
        them); the rest builds on the first call."""
        if self.momentum is not None and not self.encoder_k.built:
            self.key_projection(tf.zeros([2, *input_shape[1:]]), training=False)
        super().build(input_shape)

    def build_key_encoder(self, images):
        """Builds the key encoder and head on ``images`` and copies the trained ones into them
        (the reference's ``_init_encoder_k``); a no-op without a momentum encoder."""
        if self.momentum is None:
            return
        self.key_projection(images, training=False)
        for q, k in self._key_pairs(all_weights=True):
            k.assign(q)

    def _key_pairs(self, all_weights: bool = False):
        """(trained, key) variable pairs: the trainable weights (the reference's parameters),
        or every weight with ``all_weights``."""
        pairs = []
        for q_model, k_model in ((self.encoder, self.encoder_k), (self.head, self.head_k)):
            q_vars, k_vars = q_model.weights, k_model.weights
            if len(q_vars) != len(k_vars):
                raise ValueError("the key encoder does not mirror the encoder; build it with "
                                 "build_key_encoder().")
            pairs += [(q, k) for q, k in zip(q_vars, k_vars)
                      if all_weights or q.trainable]
        return pairs

    @property
    def trainable_weights(self):
        """The trainable weights without the key encoder's, which only follow the EMA."""
        weights = super().trainable_weights
        if self.momentum is None:
            return weights
        key = {id(v) for model in (self.encoder_k, self.head_k) for v in model.weights}
        return [w for w in weights if id(w) not in key]

    @property
    def trainable_variables(self):
        return self.trainable_weights

    def update_key_encoder(self):
        """``k <- m k + (1 - m) q`` for the trainable weights of the encoder and head."""
        m = self.momentum
        for q, k in self._key_pairs():
            k.assign(m * k + (1.0 - m) * q)

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
            z_a, z_b = self._pair_projections(x_adv, False, "adv")
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
            w_clean, w_adv = self.loss_weights(results["clean"][0].dtype)
            total = w_clean * results["clean"][0] + w_adv * results["adv"][0]
        else:
            total = results[self.streams[0]][0]
        return total, results

    # -- training ------------------------------------------------------------------------------
    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        view1, view2 = x[0], x[1]
        variables = self.trainable_variables
        if self.air is not None:
            if len(x) != 3:
                raise ValueError("AIR trains on batches ((view1, view2, original), labels).")
            total, results, grads = self._air_gradients(view1, view2, x[2], variables)
        elif self.variant == "ds":
            total, results, grads = self._ds_gradients(view1, view2, variables)
        else:
            # The attack records nothing the gradient needs: its output is gradient-stopped.
            with tf.GradientTape() as tape:
                total, results = self.compute_losses(view1, view2)
                # With the all-gathered negatives the mean over replicas is the global batch's
                # loss.
                scaled = self.scaled_loss(total)
            grads = tape.gradient(scaled, variables)
        if self.momentum is not None:   # after the forward passes, before the update
            self.update_key_encoder()
        self.apply_gradients(grads, variables)
        return self._update_metrics(total, results)

    def _air_gradients(self, view1, view2, original, variables):
        """The DS loss plus AIR's regularisers and its gradient, in one pass (the regularisers
        tie the streams together). The passes run in the AIR code's order: the attack, the
        adversarial pair, the clean pair, the original images (the last two both update the
        ``normal`` BN statistics, in this order)."""
        x_adv = self.adversarial_views(view1, view2)
        with tf.GradientTape() as tape:
            z_i_adv, z_j_adv = tf.split(self(x_adv, training=True, branch="adv"), 2, axis=0)
            z_i, z_j = tf.split(self(tf.concat([view1, view2], 0), training=True,
                                     branch="normal"), 2, axis=0)
            z_orig = self(original, training=True, branch="normal")
            clean = nt_xent_cross_replica(z_i, z_j, self.temperature, return_accuracy=True)
            adv = nt_xent_cross_replica(z_i_adv, z_j_adv, self.temperature,
                                        return_accuracy=True)
            sir, air = air_regularizers(z_i, z_j, z_orig, z_i_adv, z_j_adv, self.temperature,
                                        divergence=self.air.divergence)
            w_clean, w_adv = self.loss_weights(clean[0].dtype)
            total = (w_clean * clean[0] + w_adv * adv[0]
                     + self.air.lambda1 * sir + self.air.lambda2 * air)
            scaled = self.scaled_loss(total)
        grads = tape.gradient(scaled, variables)
        return total, {"clean": clean, "adv": adv, "sir": sir, "air": air}, grads

    def _ds_gradients(self, view1, view2, variables):
        """DS loss and its gradient, one stream at a time.

        The gradient of ``w_clean * clean + w_adv * adv`` (:meth:`loss_weights`) is the sum of
        the streams' gradients, so the clean stream's forward and backward pass run first and
        free their activations before the attack and the adversarial stream run: the step then
        holds the activations of one training pass (128 views at batch 64), not two.
        """
        with tf.GradientTape() as tape:
            clean = self._pair_loss(tf.concat([view1, view2], 0), True, "normal")
            w_clean, w_adv = self.loss_weights(clean[0].dtype)
            scaled = self.scaled_loss(w_clean * clean[0])
        clean_grads = tape.gradient(scaled, variables)
        # Start the attack only once the clean stream's backward pass is done.
        with tf.control_dependencies([g for g in clean_grads if g is not None]):
            x_adv = tf.identity(self.adversarial_views(tf.identity(view1),
                                                       tf.identity(view2)))
        with tf.GradientTape() as tape:
            adv = self._pair_loss(x_adv, True, "adv")
            scaled = self.scaled_loss(w_adv * adv[0])
        adv_grads = tape.gradient(scaled, variables)
        grads = [a if b is None else b if a is None else a + b
                 for a, b in zip(clean_grads, adv_grads)]
        total = w_clean * clean[0] + w_adv * adv[0]
        return total, {"clean": clean, "adv": adv}, grads

    def _update_metrics(self, total, results):
        self.trackers["loss"].update_state(total)
        for name, value in results.items():
            if name in ("sir", "air"):
                self.trackers[name].update_state(value)
                continue
            loss, acc = value
            self.trackers[f"{name}_loss"].update_state(loss)
            self.trackers[f"{name}_acc"].update_state(acc)
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
            "dynamic_weights": self.dynamic_weights,
            "air": None if self.air is None else dataclasses.asdict(self.air),
            "momentum": self.momentum,
        }


def _clone(model, name: str):
    """A new, unbuilt model of ``model``'s configuration named ``name``."""
    config = keras.saving.serialize_keras_object(model)
    config["config"] = dict(config["config"], name=name)
    return keras.saving.deserialize_keras_object(config)
