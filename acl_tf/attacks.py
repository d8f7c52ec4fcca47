"""L-inf projected gradient descent (PGD) over any loss.

The attack maximises ``loss_fn(x_adv)`` inside the L-inf ball of radius ``epsilon`` around ``x``
and inside the valid pixel range. It only differentiates with respect to the input (the tape
watches nothing else), so it computes no weight gradients; whether BN uses moving statistics is
up to ``loss_fn``: use :func:`model_loss_fn`, which calls the model with ``training=False`` on a
chosen BN branch, so the attack changes neither weights nor moving statistics.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import tensorflow as tf

RANDOM_STARTS = ("uniform", "normal", "none")


@dataclasses.dataclass(frozen=True)
class PGDConfig:
    """Settings of an L-inf PGD attack (pixel units of images in [0, 1]).

    ``random_start``: ``uniform`` in [-eps, eps] (Madry et al.; ACL pre-training and PGD-20
    evaluation), ``normal`` (x + ``normal_std`` * N(0, 1), the TRADES start) or ``none``.
    """

    epsilon: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 5
    random_start: str = "uniform"
    normal_std: float = 0.001

    def __post_init__(self):
        if self.epsilon < 0 or self.step_size < 0:
            raise ValueError(f"epsilon and step_size must be >= 0, got {self.epsilon}, "
                             f"{self.step_size}.")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}.")
        if self.random_start not in RANDOM_STARTS:
            raise ValueError(f"Unknown random_start {self.random_start!r}; expected one of "
                             f"{RANDOM_STARTS}.")


def random_init(x, config: PGDConfig, seed=None):
    """The attack's starting point (already projected onto the ball and [0, 1])."""
    shape, dtype = tf.shape(x), x.dtype
    if config.random_start == "none":
        return x
    if config.random_start == "uniform":
        noise = (tf.random.stateless_uniform(shape, seed, -config.epsilon, config.epsilon, dtype)
                 if seed is not None else
                 tf.random.uniform(shape, -config.epsilon, config.epsilon, dtype))
    else:
        noise = config.normal_std * (tf.random.stateless_normal(shape, seed, dtype=dtype)
                                     if seed is not None else tf.random.normal(shape, dtype=dtype))
    return project(x + noise, x, config.epsilon)


def project(x_adv, x, epsilon, clip_min=0.0, clip_max=1.0):
    """Projects onto the L-inf ball of radius ``epsilon`` around ``x`` and onto [clip_min, clip_max]."""
    x_adv = tf.clip_by_value(x_adv, x - epsilon, x + epsilon)
    return tf.clip_by_value(x_adv, clip_min, clip_max)


def pgd_linf(loss_fn: Callable[[tf.Tensor], tf.Tensor], x, config: PGDConfig = PGDConfig(),
             seed: Optional[tf.Tensor] = None):
    """Runs L-inf PGD and returns the adversarial input (gradient stopped).

    Each step: ``x_adv <- project(x_adv + step_size * sign(grad_x loss_fn(x_adv)))``.

    Args:
        loss_fn: maps a candidate input (same shape as ``x``) to a scalar loss to *maximise*.
        x: clean input in [0, 1], any shape (several views can be stacked along axis 0 and
            attacked at once).
        config: :class:`PGDConfig`.
        seed: optional stateless seed (int tensor [2]) for the random start, for reproducibility.
    """
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    x_adv = random_init(x, config, seed)

    def step(i, x_adv):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x_adv)
            loss = loss_fn(x_adv)
        grad = tape.gradient(loss, x_adv)
        if grad is None:
            raise ValueError("loss_fn does not depend on its input: PGD has no gradient.")
        x_next = project(x_adv + config.step_size * tf.sign(grad), x, config.epsilon)
        return i + 1, tf.stop_gradient(x_next)

    _, x_adv = tf.while_loop(lambda i, _: i < config.steps, step, (tf.constant(0), x_adv),
                             maximum_iterations=config.steps)
    return tf.stop_gradient(x_adv)


def model_loss_fn(model, loss, branch: str = "adv", **call_kwargs):
    """``x -> loss(model(x, training=False, branch=branch))``: BN in inference mode on one branch."""

    def fn(x_adv):
        return loss(model(x_adv, training=False, branch=branch, **call_kwargs))

    return fn
