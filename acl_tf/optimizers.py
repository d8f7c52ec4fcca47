"""The optimisers (LARS, SGD with coupled L2), their learning-rate schedules, and building them from
the optimizer sections of the configs."""

from __future__ import annotations

import keras
from keras import ops

from acl_tf.configs import ConfigError, FinetuneOptimizerConfig, OptimizerConfig


class _MomentumOptimizer(keras.optimizers.Optimizer):
    """An optimiser with one momentum buffer per variable (``self.momentums``)."""

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in var_list]


@keras.saving.register_keras_serializable(package="acl_tf")
class LARS(_MomentumOptimizer):
    """Layer-wise adaptive rate scaling with momentum, as in the ACL reference code.

    For every variable w with gradient g:
        local_lr = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w||)   (1 if ||w|| or ||g|| is 0)
        v <- momentum * v + learning_rate * local_lr * (g + weight_decay * w)
        w <- w - v

    ``weight_decay`` here is the coupled L2 term of the reference, not Keras' decoupled decay.

    Args:
        learning_rate: float or ``LearningRateSchedule``.
        momentum: momentum factor (0.9).
        weight_decay: L2 coefficient (1e-6 in ACL pre-training).
        trust_coefficient: LARS eta (0.001).
    """

    def __init__(self, learning_rate=5.0, momentum=0.9, weight_decay=1e-6,
                 trust_coefficient=0.001, name="lars", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if momentum < 0 or weight_decay < 0 or trust_coefficient < 0:
            raise ValueError("LARS momentum, weight_decay and trust_coefficient must be >= 0.")
        self.momentum = momentum
        self.lars_weight_decay = weight_decay
        self.trust_coefficient = trust_coefficient

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))
        g_norm = ops.sqrt(ops.sum(ops.square(g)))
        wd = self.lars_weight_decay
        trust = self.trust_coefficient * w_norm / (g_norm + wd * w_norm + 1e-30)
        local_lr = ops.where((w_norm < 1e-15) | (g_norm < 1e-15), ops.ones_like(trust), trust)
        m = self.momentums[self._get_variable_index(variable)]
        self.assign(m, self.momentum * m + lr * local_lr * (g + wd * variable))
        self.assign_sub(variable, m)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.lars_weight_decay,
                      trust_coefficient=self.trust_coefficient)
        return config


@keras.saving.register_keras_serializable(package="acl_tf")
class ReferenceCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Keras' ``CosineDecay`` (linear warm-up, then cosine) read one step ahead.

    Keras evaluates a schedule at the optimizer's iteration count, the number of updates already
    taken: 0 for the first update. The reference calls ``scheduler.step()`` *before* each update
    (``train_simCLR.py`` ``train``), so its k-th update (k = 1, 2, ...) uses
    ``cosine_annealing(k)``: the first one ``peak / warmup_steps``, not 0, and the last one
    exactly the final rate. This schedule returns ``CosineDecay(step + 1)``, so update k uses
    the reference's rate of update k.
    """

    def __call__(self, step):
        return super().__call__(ops.add(step, 1))


def warmup_cosine(peak_lr: float, total_steps: int, warmup_steps: int, final_lr: float = 1e-6):
    """Linear warm-up from 0 to ``peak_lr`` over ``warmup_steps``, then per-step cosine to ``final_lr``.

    This is the reference's ``cosine_annealing`` (lr_min = final_lr) as its training loop steps
    it: update k (1-based; the optimizer's iteration count is k - 1) uses
    ``cosine_annealing(k)`` (:class:`ReferenceCosineDecay`), i.e. ``peak_lr * k / warmup_steps``
    in the warm-up and ``final_lr`` at update ``total_steps``. Expressed with Keras'
    ``CosineDecay`` so it serialises with the optimizer.
    """
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}).")
    return ReferenceCosineDecay(**_cosine_settings(peak_lr, total_steps, warmup_steps, final_lr))


def _cosine_settings(peak_lr: float, total: int, warmup: int, final_lr: float) -> dict:
    """Keras ``CosineDecay`` arguments of a linear warm-up from 0 over ``warmup`` units, then a
    cosine from ``peak_lr`` to ``final_lr`` over the remaining ``total - warmup``."""
    return dict(initial_learning_rate=0.0 if warmup else peak_lr, decay_steps=total - warmup,
                alpha=final_lr / peak_lr, warmup_target=peak_lr if warmup else None,
                warmup_steps=warmup)


@keras.saving.register_keras_serializable(package="acl_tf")
class ReferenceEpochCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Keras' ``CosineDecay`` in epoch units, constant within an epoch, as the DynACL code steps
    its schedule.

    ``train_DynACL.py`` builds its ``LambdaLR`` with ``cosine_annealing(step, epochs, ...,
    warmup_steps=10)`` (``utils.py``) and calls ``scheduler.step()`` once, at the end of each
    epoch, so epoch e (1-based) trains at ``cosine_annealing(e - 1)``. That ``cosine_annealing``
    warms up as ``(step + 1) / warmup_steps``, one step ahead of ACL's ``step / warmup_steps``,
    while its cosine part starts at ``step = warmup_steps``. With ``i = e - 1`` the number of
    completed epochs (the optimizer's iteration count // ``steps_per_epoch``) this schedule is
    ``CosineDecay(i + 1)`` during the warm-up (``i < warmup_steps``) and ``CosineDecay(i)`` after
    it, ``warmup_steps`` and ``decay_steps`` counted in epochs: the rate rises to the peak at epoch
    W (= ``warmup_steps``), stays there for epoch W + 1 (the cosine's start), and the last epoch
    E trains at the cosine's value at ``(E - 1 - W) / (E - W)``, above the final rate, which only an
    epoch E + 1 would reach.
    """

    def __init__(self, *args, steps_per_epoch: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        if int(steps_per_epoch) < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        epoch = ops.floor_divide(ops.cast(step, "int64"), self.steps_per_epoch)
        if self.warmup_target is not None:
            epoch = ops.where(epoch < self.warmup_steps, epoch + 1, epoch)
        return super().__call__(epoch)

    def get_config(self):
        config = super().get_config()
        config.update(steps_per_epoch=self.steps_per_epoch)
        return config


def epoch_warmup_cosine(peak_lr: float, epochs: int, warmup_epochs: int, steps_per_epoch: int,
                        final_lr: float = 1e-6):
    """DynACL's per-epoch schedule: linear warm-up over ``warmup_epochs`` and cosine to
    ``final_lr`` over ``epochs``, the rate fixed within each epoch of ``steps_per_epoch`` updates
    (:class:`ReferenceEpochCosineDecay`). Epoch e (1-based) trains at the DynACL code's
    ``cosine_annealing(e - 1, epochs, peak, final, warmup_epochs)``: ``peak * e / W`` for
    e <= W = ``warmup_epochs``, then ``final + (peak - final) (1 + cos(pi (e - 1 - W) /
    (epochs - W))) / 2``."""
    if epochs <= warmup_epochs:
        raise ValueError(f"epochs ({epochs}) must exceed warmup_epochs ({warmup_epochs}).")
    return ReferenceEpochCosineDecay(**_cosine_settings(peak_lr, epochs, warmup_epochs, final_lr),
                                     steps_per_epoch=steps_per_epoch)


@keras.saving.register_keras_serializable(package="acl_tf")
class SGDL2(_MomentumOptimizer):
    """SGD with momentum and *coupled* L2 weight decay: ``torch.optim.SGD`` semantics.

    For every variable w with gradient g (dampening 0, as in the TRADES / ACL fine-tuning code):
        d = g + weight_decay * w
        b <- momentum * b + d                    (b starts at 0, so the first b is d)
        w <- w - learning_rate * (d + momentum * b if nesterov else b)

    Keras' own ``SGD(weight_decay=...)`` decays the weights outside the momentum buffer
    (decoupled), which with momentum 0.9 is a roughly 10x weaker decay than the reference's;
    and Keras' momentum buffer holds ``learning_rate * g``, which differs from PyTorch's right
    after a learning-rate drop. This class follows PyTorch in both.

    Only variables that receive a gradient are updated (and decayed): pass the
    (gradient, variable) pairs of what was trained.

    Args:
        learning_rate: float or ``LearningRateSchedule``.
        momentum: momentum factor (0.9).
        weight_decay: coupled L2 coefficient (2e-4 in ACL fine-tuning).
        nesterov: Nesterov momentum (off in the reference).
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=0.0, nesterov=False,
                 name="sgd_l2", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGDL2 momentum and weight_decay must be >= 0, got {momentum}, "
                             f"{weight_decay}.")
        self.momentum = momentum
        self.l2 = weight_decay
        self.nesterov = nesterov

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        d = ops.cast(gradient, variable.dtype)
        if self.l2:
            d = d + ops.cast(self.l2, variable.dtype) * variable
        if not self.momentum:
            self.assign_sub(variable, lr * d)
            return
        momentum = ops.cast(self.momentum, variable.dtype)
        b = self.momentums[self._get_variable_index(variable)]
        self.assign(b, momentum * b + d)
        step = d + momentum * b if self.nesterov else b
        self.assign_sub(variable, lr * step)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.l2, nesterov=self.nesterov)
        return config


def piecewise_epochs(learning_rate: float, steps_per_epoch: int, decay_epochs, factor: float = 0.1):
    """Step-wise constant rate multiplied by ``factor`` after each epoch count in ``decay_epochs``.

    ``decay_epochs=(15, 20)`` trains epochs 1-15 at ``learning_rate``, 16-20 at ``factor`` times
    it and the rest at ``factor**2`` times it. (The ACL/TRADES scripts call their MultiStepLR
    scheduler before each epoch, so their ``15,20`` drops the rate one epoch earlier: that is
    ``decay_epochs=(14, 19)`` here.) The optimizer evaluates the schedule at its iteration count,
    i.e. the number of steps already taken, so the first step of epoch ``e`` (1-based) sees step
    ``(e - 1) * steps_per_epoch``.
    """
    decay_epochs = tuple(int(e) for e in decay_epochs)
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    if any(e < 1 for e in decay_epochs) or list(decay_epochs) != sorted(set(decay_epochs)):
        raise ValueError(f"decay_epochs must be strictly increasing positive epoch counts, "
                         f"got {decay_epochs}.")
    if not decay_epochs:
        return float(learning_rate)
    boundaries = [e * steps_per_epoch - 1 for e in decay_epochs]
    values = [float(learning_rate) * factor ** i for i in range(len(decay_epochs) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def build_pretrain_optimizer(config: OptimizerConfig, batch_size: int, steps_per_epoch: int,
                             epochs: int):
    """The pre-training optimiser of ``config`` with its (warm-up +) cosine or constant schedule:
    per update (:func:`warmup_cosine`, ACL's and AIR's stepping) or, with
    ``config.schedule_per_epoch``, per epoch (:func:`epoch_warmup_cosine`, DynACL's)."""
    peak = config.peak_learning_rate(batch_size)
    total = steps_per_epoch * epochs
    warmup = config.warmup_epochs * steps_per_epoch
    if config.schedule == "cosine":
        if warmup >= total:
            raise ConfigError(f"optimizer.warmup_epochs ({config.warmup_epochs}) must be smaller "
                              f"than the number of epochs ({epochs}).")
        if config.schedule_per_epoch:
            lr = epoch_warmup_cosine(peak, epochs, config.warmup_epochs, steps_per_epoch,
                                     config.final_learning_rate)
        else:
            lr = warmup_cosine(peak, total, warmup, config.final_learning_rate)
    else:
        lr = peak
    if config.name == "lars":
        return LARS(lr, momentum=config.momentum, weight_decay=config.weight_decay,
                    trust_coefficient=config.trust_coefficient)
    if config.name == "sgd":
        # The reference's torch.optim.SGD couples L2 into the gradient (Keras' SGD decouples it).
        return SGDL2(lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(lr)


def build_finetune_optimizer(opt: FinetuneOptimizerConfig, steps_per_epoch: int) -> SGDL2:
    """Fine-tuning's SGD (momentum, coupled L2) with the per-epoch piecewise-constant rate."""
    lr = piecewise_epochs(opt.learning_rate, steps_per_epoch, opt.decay_epochs, opt.decay_factor)
    return SGDL2(lr, momentum=opt.momentum, weight_decay=opt.weight_decay,
                 nesterov=opt.nesterov)
