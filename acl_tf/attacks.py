"""L-inf projected gradient descent (PGD) over any loss.

The attack maximises ``loss_fn(x_adv)`` inside the L-inf ball of radius ``epsilon`` around ``x``
and inside the valid pixel range. It only differentiates with respect to the input (the tape
watches nothing else), so it computes no weight gradients; whether BN uses moving statistics is
up to ``loss_fn``: use :func:`model_loss_fn`, which calls the model with ``training=False`` on a
chosen BN branch, so the attack changes neither weights nor moving statistics.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from acl_tf import distribute
from acl_tf.configs import RANDOM_STARTS, PGDConfig  # noqa: F401 (re-exported)


def random_noise(shape, config: PGDConfig, seed=None, dtype=tf.float32):
    """The random-start perturbation of ``config`` (``uniform`` or ``normal``) of ``shape``."""
    if config.random_start == "uniform":
        return (tf.random.stateless_uniform(shape, seed, -config.epsilon, config.epsilon, dtype)
                if seed is not None else
                tf.random.uniform(shape, -config.epsilon, config.epsilon, dtype))
    return config.normal_std * (tf.random.stateless_normal(shape, seed, dtype=dtype)
                                if seed is not None else tf.random.normal(shape, dtype=dtype))


def random_init(x, config: PGDConfig, seed=None):
    """The attack's starting point: ``x`` + the random start, projected onto the ball and [0, 1]
    unless ``config.project_start`` is false (the reference code's start, see
    :func:`start_point`)."""
    if config.random_start == "none":
        return x
    return start_point(x + random_noise(tf.shape(x), config, seed, x.dtype), x, config)


def start_point(x_start, x, config: PGDConfig):
    """``x_start`` projected onto the ball and [0, 1] if ``config.project_start``, else as is.

    The ACL and TRADES code starts from ``x + noise`` unprojected: its first gradient is taken
    there even where a pixel within epsilon of 0 or 1 leaves [0, 1]; every step projects. The
    start differs from the projected one only at such pixels, but the sign steps diverge from
    there: with the projection acl-tf's 5-step pre-training attack ends elsewhere on about a
    quarter of the pixels of random images (docs/parity.md), without it on none.
    """
    return project(x_start, x, config.epsilon) if config.project_start else x_start


def step_seed(seed: int, step) -> tf.Tensor:
    """The stateless seed [2] of a training step's random start: new at every ``step``
    (the optimiser's iteration counter) and the same on every replica, so that
    :func:`replica_random_init` draws one global batch of noise whatever the replica count."""
    return tf.stack([tf.constant(seed, tf.int64) * 1_000_003, tf.cast(step, tf.int64)])


def replica_random_init(x, config: PGDConfig, seed, groups: int = 1):
    """:func:`random_init` of this replica's shard, independent of the number of replicas.

    ``x`` stacks ``groups`` blocks of ``b`` examples along axis 0 (e.g. the two views
    ``[v1; v2]``: ``groups=2``); under ``tf.distribute`` replica ``r`` of ``R`` holds rows
    ``r*b .. r*b + b - 1`` of each block of the global batch. The noise is drawn for the whole
    global batch ``[groups, R*b, ...]`` from the same stateless ``seed`` on every replica and this
    replica's rows are kept, so every example starts from the same point on one device or on
    ``R`` replicas. With one replica it equals ``random_init(x, config, seed)``.
    """
    if config.random_start == "none":
        return x
    if seed is None:
        raise ValueError("replica_random_init needs a stateless seed (the same on every replica).")
    replicas = distribute.num_replicas()
    if replicas == 1:
        return random_init(x, config, seed)
    shape = tf.shape(x)
    local = shape[0] // groups
    global_shape = tf.concat([[groups, local * replicas], shape[1:]], axis=0)
    noise = random_noise(global_shape, config, seed, x.dtype)
    start = distribute.replica_id() * local
    noise = tf.reshape(noise[:, start:start + local], shape)
    return start_point(x + noise, x, config)


def project(x_adv, x, epsilon, clip_min=0.0, clip_max=1.0):
    """Projects onto the L-inf ball of radius ``epsilon`` around ``x`` and onto [clip_min, clip_max]."""
    x_adv = tf.clip_by_value(x_adv, x - epsilon, x + epsilon)
    return tf.clip_by_value(x_adv, clip_min, clip_max)


def pgd_linf(loss_fn: Callable[[tf.Tensor], tf.Tensor], x, config: PGDConfig = PGDConfig(),
             seed: Optional[tf.Tensor] = None, x_start=None, unroll: bool = False,
             loss_scale=None):
    """Runs L-inf PGD and returns the adversarial input (gradient stopped).

    Each step: ``x_adv <- project(x_adv + step_size * sign(grad_x loss_fn(x_adv)))``.

    Args:
        loss_fn: maps a candidate input (same shape as ``x``) to a scalar loss to *maximise*.
        x: clean input in [0, 1], any shape (several views can be stacked along axis 0 and
            attacked at once).
        config: :class:`PGDConfig`.
        seed: optional stateless seed (int tensor [2]) for the random start, for reproducibility.
        x_start: optional starting point replacing the random start (e.g.
            :func:`replica_random_init`); it is projected onto the ball and [0, 1] unless
            ``config.project_start`` is false (:func:`start_point`).
        unroll: run the steps as a Python loop instead of a ``tf.while_loop``; needed when
            ``loss_fn`` holds cross-replica collectives (all-gathered negatives under
            MirroredStrategy), which cannot sit inside a while-loop body.
        loss_scale: optional positive factor (float or scalar tensor) on the loss before it is
            differentiated, for float16 models whose input gradient would underflow to 0; the
            sign step does not depend on it. If it overflows, infinite gradient entries still
            give their sign and NaN entries count as 0 (that pixel keeps its value this step)
            instead of turning the input into NaN.
    """
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    if x_start is None:
        x_adv = random_init(x, config, seed)
    else:
        x_adv = start_point(tf.convert_to_tensor(x_start, x.dtype), x, config)

    def step(i, x_adv):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x_adv)
            loss = loss_fn(x_adv)
            if loss_scale is not None:
                loss = loss * tf.cast(loss_scale, loss.dtype)
        grad = tape.gradient(loss, x_adv)
        if grad is None:
            raise ValueError("loss_fn does not depend on its input: PGD has no gradient.")
        if loss_scale is not None:
            grad = tf.where(tf.math.is_nan(grad), tf.zeros_like(grad), grad)
        x_next = project(x_adv + config.step_size * tf.sign(grad), x, config.epsilon)
        return i + 1, tf.stop_gradient(x_next)

    if unroll:
        for i in range(config.steps):
            _, x_adv = step(i, x_adv)
        return tf.stop_gradient(x_adv)
    _, x_adv = tf.while_loop(lambda i, _: i < config.steps, step, (tf.constant(0), x_adv),
                             maximum_iterations=config.steps)
    return tf.stop_gradient(x_adv)


def model_loss_fn(model, loss, branch: str = "adv", **call_kwargs):
    """``x -> loss(model(x, training=False, branch=branch))``: BN in inference mode on one branch."""

    def fn(x_adv):
        return loss(model(x_adv, training=False, branch=branch, **call_kwargs))

    return fn
