"""Dual batch normalisation: one BN for clean inputs, one for adversarial inputs.

ACL (and AdvProp before it) keeps two sets of BN parameters and moving statistics that share
every convolution weight: a call argument ``branch`` picks ``"normal"`` (clean stream) or
``"adv"`` (adversarial stream). With ``dual=False`` the layer is an ordinary BN and ``branch`` is
ignored, which is what the single-BN variants (S2S, A2A) and the Table 4 ablation use.
"""

from __future__ import annotations

import keras

BRANCHES = ("normal", "adv")


def check_branch(branch: str) -> str:
    """Returns ``branch`` or raises a ValueError naming the valid branches."""
    if branch not in BRANCHES:
        raise ValueError(f"Unknown BN branch {branch!r}; expected one of {BRANCHES}.")
    return branch


@keras.saving.register_keras_serializable(package="acl_tf")
class DualBatchNormalization(keras.layers.Layer):
    """Two BatchNormalization sub-layers selected per call.

    Args:
        dual: keep separate ``normal`` and ``adv`` sub-layers; if False a single BN serves both.
        momentum: moving-average momentum (Keras convention: PyTorch's 0.1 is Keras' 0.9).
        epsilon: variance epsilon (PyTorch default 1e-5).
        synchronized: all-reduce batch moments across replicas under ``tf.distribute``.
        **kwargs: forwarded to ``keras.layers.Layer``.

    Call args:
        inputs: a tensor whose last axis holds the channels.
        training: use batch statistics (and update moving statistics) when True.
        branch: ``"normal"`` or ``"adv"``.

    Example:
        >>> bn = DualBatchNormalization()
        >>> y = bn(x, training=True, branch="adv")   # updates only the adversarial statistics
    """

    def __init__(self, dual: bool = True, momentum: float = 0.9, epsilon: float = 1e-5,
                 synchronized: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.dual = dual
        self.momentum = momentum
        self.epsilon = epsilon
        self.synchronized = synchronized

        def make(name):
            return keras.layers.BatchNormalization(
                momentum=momentum, epsilon=epsilon, synchronized=synchronized, name=name,
                dtype=self.dtype_policy)

        self.bn_normal = make("normal")
        self.bn_adv = make("adv") if dual else self.bn_normal

    def build(self, input_shape):
        self.bn_normal.build(input_shape)
        if self.dual:
            self.bn_adv.build(input_shape)

    def call(self, inputs, training=None, branch: str = "normal"):
        layer = self.bn_adv if check_branch(branch) == "adv" else self.bn_normal
        return layer(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(dual=self.dual, momentum=self.momentum, epsilon=self.epsilon,
                      synchronized=self.synchronized)
        return config
