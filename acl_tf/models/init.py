"""Keras initialisers that draw what the reference PyTorch ACL code draws.

* :class:`KaimingNormalFanOut`: every convolution kernel. The reference ResNet-18 initialises each
  ``nn.Conv2d`` with ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, i.e. a plain
  (untruncated) normal with standard deviation ``sqrt(2 / fan_out)``, ``fan_out = out_channels x
  kernel_h x kernel_w``; the usual WideResNet-34-10 (TRADES) draws ``normal(0, sqrt(2 / (k * k *
  out_channels)))``, the same distribution. Keras' ``he_normal`` differs twice: it uses fan_in and
  a truncated normal.
* :class:`TorchLinearKernel`: the weight of a Dense layer as ``nn.Linear`` draws it by default,
  ``kaiming_uniform_(a=sqrt(5))`` = ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (Keras' default is
  Glorot uniform).
* :class:`TorchLinearBias`: the bias of such a layer, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
  the *layer's* fan_in, which a bias initialiser cannot see from the bias shape: it is a
  constructor argument (Keras' default bias is zero).

BatchNorm needs nothing here: Keras' and PyTorch's BN both start with gamma 1, beta 0, moving mean
0 and moving variance 1 (the momentum and epsilon are set in :mod:`acl_tf.models.dual_bn`).

All three are registered Keras serializables (package ``acl_tf``), so a layer config that names
one round-trips through ``get_config`` / ``.keras`` files. As with every seeded Keras
initialiser, one instance returns the same values for the same shape on every call: give each
layer its own instance.
"""

from __future__ import annotations

import math

import keras


@keras.saving.register_keras_serializable(package="acl_tf")
class KaimingNormalFanOut(keras.initializers.VarianceScaling):
    """``torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")``: N(0, 2 / fan_out).

    Keras' fan_out of a ``(kh, kw, in, out)`` conv kernel is ``kh * kw * out``, PyTorch's of the
    ``(out, in, kh, kw)`` weight is the same number.
    """

    def __init__(self, seed=None):
        super().__init__(scale=2.0, mode="fan_out", distribution="untruncated_normal", seed=seed)

    def get_config(self):
        return {"seed": super().get_config()["seed"]}


@keras.saving.register_keras_serializable(package="acl_tf")
class TorchLinearKernel(keras.initializers.VarianceScaling):
    """``nn.Linear``'s default weight, ``kaiming_uniform_(a=sqrt(5))``: U(+-1/sqrt(fan_in)).

    (gain sqrt(2 / (1 + 5)) = sqrt(1/3), bound sqrt(3) x gain / sqrt(fan_in); here variance
    scaling 1/3 over fan_in with a uniform draw, whose limit is sqrt(3 x scale / fan_in)).
    """

    def __init__(self, seed=None):
        super().__init__(scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed)

    def get_config(self):
        return {"seed": super().get_config()["seed"]}


@keras.saving.register_keras_serializable(package="acl_tf")
class TorchLinearBias(keras.initializers.RandomUniform):
    """``nn.Linear``'s default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (0 when fan_in is 0).

    Args:
        fan_in: the input size of the layer whose bias this is.
        seed: as for any Keras random initialiser.
    """

    def __init__(self, fan_in: int, seed=None):
        fan_in = int(fan_in)
        if fan_in < 0:
            raise ValueError(f"fan_in must be >= 0, got {fan_in}.")
        self.fan_in = fan_in
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        super().__init__(minval=-bound, maxval=bound, seed=seed)

    def get_config(self):
        return {"fan_in": self.fan_in, "seed": super().get_config()["seed"]}


__all__ = ["KaimingNormalFanOut", "TorchLinearBias", "TorchLinearKernel"]
