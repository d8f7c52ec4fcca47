"""The SimCLR/ACL projection head with dual BN (dropped after pre-training).

Initialised as the reference PyTorch head, whose layers are ``nn.Linear`` with PyTorch's default
initialisation: kernels U(-1/sqrt(fan_in), 1/sqrt(fan_in))
(:class:`~acl_tf.models.init.TorchLinearKernel`), the first layer's bias from the same range
(:class:`~acl_tf.models.init.TorchLinearBias`, with that layer's fan_in, set when the head is
built), and BN with PyTorch's momentum and epsilon (:mod:`acl_tf.models.dual_bn`). The
initialisers are not part of the config: they only decide a new head's first values.
"""

from __future__ import annotations

import keras
from keras import ops

from acl_tf.models.dual_bn import DualBatchNormalization
from acl_tf.models.init import TorchLinearBias, TorchLinearKernel


@keras.saving.register_keras_serializable(package="acl_tf")
class ProjectionHead(keras.layers.Layer):
    """MLP projection head of the ACL code.

    3 layers (default): Linear(bias) -> BN -> ReLU -> Linear(no bias) -> BN -> ReLU -> Linear(no bias) -> BN.
    2 layers: Linear(bias) -> BN -> ReLU -> Linear(no bias) -> BN.
    Every BN is a :class:`DualBatchNormalization`; ``branch`` selects which.

    Args:
        hidden_dim: width of the hidden layers.
        output_dim: size of the projection.
        num_layers: 2 or 3.
        dual_bn: dual or single BN.
    """

    def __init__(self, hidden_dim: int = 512, output_dim: int = 512, num_layers: int = 3,
                 dual_bn: bool = True, **kwargs):
        super().__init__(**kwargs)
        if num_layers not in (2, 3):
            raise ValueError(f"ProjectionHead num_layers must be 2 or 3, got {num_layers}.")
        self.hidden_dim, self.output_dim = hidden_dim, output_dim
        self.num_layers, self.dual_bn = num_layers, dual_bn
        dims = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.dense = [keras.layers.Dense(d, use_bias=(i == 0), name=f"dense{i + 1}",
                                         kernel_initializer=TorchLinearKernel())
                      for i, d in enumerate(dims)]
        self.bns = [DualBatchNormalization(dual=dual_bn, name=f"bn{i + 1}")
                    for i in range(num_layers)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for dense, bn in zip(self.dense, self.bns):
            if dense.use_bias:  # nn.Linear's bias range depends on the layer's input size
                dense.bias_initializer = TorchLinearBias(fan_in=shape[-1])
            dense.build(shape)
            shape = shape[:-1] + (dense.units,)
            bn.build(shape)

    def call(self, features, training=None, branch="normal"):
        x = features
        for i, (dense, bn) in enumerate(zip(self.dense, self.bns)):
            x = bn(dense(x), training=training, branch=branch)
            if i < self.num_layers - 1:
                x = ops.relu(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim,
                "output_dim": self.output_dim, "num_layers": self.num_layers,
                "dual_bn": self.dual_bn}
