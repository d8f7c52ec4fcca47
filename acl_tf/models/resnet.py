"""CIFAR ResNet-18 and WideResNet-34-10 whose every BatchNorm is a dual BN.

Both encoders take images in [0, 1], normalise them per channel inside the model (so an attack's
epsilon is in pixel units) and return pooled features. Every call takes ``branch`` (``"normal"`` or
``"adv"``) which is passed to all BN layers; convolution weights are shared by the branches.
"""

from __future__ import annotations

import keras
from keras import ops

from acl_tf.models.dual_bn import DualBatchNormalization

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _conv(filters, kernel, stride, name):
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                               kernel_initializer="he_normal", name=name)


@keras.saving.register_keras_serializable(package="acl_tf")
class ChannelNormalization(keras.layers.Layer):
    """``(x - mean) / std`` per channel with fixed, non-trainable constants."""

    def __init__(self, mean=CIFAR10_MEAN, std=CIFAR10_STD, **kwargs):
        super().__init__(**kwargs)
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"mean {mean} and std {std} must have equal length and std > 0.")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def call(self, inputs):
        mean = ops.convert_to_tensor(self.mean, dtype=inputs.dtype)
        std = ops.convert_to_tensor(self.std, dtype=inputs.dtype)
        return (inputs - mean) / std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="acl_tf")
class BasicBlock(keras.layers.Layer):
    """Post-activation ResNet basic block (two 3x3 convs) with dual BN."""

    def __init__(self, filters: int, stride: int = 1, dual_bn: bool = True,
                 in_filters: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.stride, self.dual_bn = filters, stride, dual_bn
        self.in_filters = filters if in_filters is None else in_filters
        self.conv1 = _conv(filters, 3, stride, "conv1")
        self.bn1 = DualBatchNormalization(dual=dual_bn, name="bn1")
        self.conv2 = _conv(filters, 3, 1, "conv2")
        self.bn2 = DualBatchNormalization(dual=dual_bn, name="bn2")
        self.shortcut_conv = self.shortcut_bn = None
        if stride != 1 or self.in_filters != filters:
            self.shortcut_conv = _conv(filters, 1, stride, "shortcut_conv")
            self.shortcut_bn = DualBatchNormalization(dual=dual_bn, name="shortcut_bn")

    def call(self, x, training=None, branch="normal"):
        out = ops.relu(self.bn1(self.conv1(x), training=training, branch=branch))
        out = self.bn2(self.conv2(out), training=training, branch=branch)
        shortcut = x
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_bn(self.shortcut_conv(x), training=training, branch=branch)
        return ops.relu(out + shortcut)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride,
                "dual_bn": self.dual_bn, "in_filters": self.in_filters}


@keras.saving.register_keras_serializable(package="acl_tf")
class WideBasicBlock(keras.layers.Layer):
    """Pre-activation WideResNet block (BN-ReLU-conv twice) with dual BN."""

    def __init__(self, filters: int, stride: int = 1, dual_bn: bool = True,
                 in_filters: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.stride, self.dual_bn = filters, stride, dual_bn
        self.in_filters = filters if in_filters is None else in_filters
        self.bn1 = DualBatchNormalization(dual=dual_bn, name="bn1")
        self.conv1 = _conv(filters, 3, stride, "conv1")
        self.bn2 = DualBatchNormalization(dual=dual_bn, name="bn2")
        self.conv2 = _conv(filters, 3, 1, "conv2")
        self.shortcut_conv = None
        if stride != 1 or self.in_filters != filters:
            self.shortcut_conv = _conv(filters, 1, stride, "shortcut_conv")

    def call(self, x, training=None, branch="normal"):
        pre = ops.relu(self.bn1(x, training=training, branch=branch))
        out = self.conv1(pre)
        out = self.conv2(ops.relu(self.bn2(out, training=training, branch=branch)))
        shortcut = x if self.shortcut_conv is None else self.shortcut_conv(pre)
        return out + shortcut

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride,
                "dual_bn": self.dual_bn, "in_filters": self.in_filters}


class _Encoder(keras.Model):
    """Shared plumbing: input normalisation, branch argument, config, feature size."""

    def __init__(self, dual_bn=True, mean=CIFAR10_MEAN, std=CIFAR10_STD, **kwargs):
        super().__init__(**kwargs)
        self.dual_bn = dual_bn
        self.normalize = ChannelNormalization(mean, std, name="normalize")

    def _base_config(self):
        return {"name": self.name, "dual_bn": self.dual_bn, "mean": self.normalize.mean,
                "std": self.normalize.std}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="acl_tf")
class ResNet18(_Encoder):
    """CIFAR ResNet-18: 3x3 stem (stride 1, no max-pool), 4 stages of 2 BasicBlocks.

    Args:
        width: channels of the first stage (64 in the paper); stages use width x (1, 2, 4, 8).
        dual_bn: dual BN (``normal``/``adv``) or a single BN.
        mean, std: per-channel normalisation applied to the [0, 1] input.

    Call args: ``images`` float [N, H, W, 3] in [0, 1], ``training``, ``branch``.
    Returns pooled features [N, 8 * width].
    """

    def __init__(self, width: int = 64, dual_bn: bool = True, mean=CIFAR10_MEAN,
                 std=CIFAR10_STD, **kwargs):
        kwargs.setdefault("name", "resnet18")
        super().__init__(dual_bn=dual_bn, mean=mean, std=std, **kwargs)
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}.")
        self.width = width
        self.stem_conv = _conv(width, 3, 1, "stem_conv")
        self.stem_bn = DualBatchNormalization(dual=dual_bn, name="stem_bn")
        self.blocks, channels = [], width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for i in range(2):
                stride = 2 if (stage > 0 and i == 0) else 1
                self.blocks.append(BasicBlock(width * mult, stride, dual_bn, in_filters=channels,
                                              name=f"stage{stage + 1}_block{i + 1}"))
                channels = width * mult
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.feature_dim = 8 * width

    def call(self, images, training=None, branch="normal"):
        x = self.stem_conv(self.normalize(images))
        x = ops.relu(self.stem_bn(x, training=training, branch=branch))
        for block in self.blocks:
            x = block(x, training=training, branch=branch)
        return self.pool(x)

    def get_config(self):
        return {**self._base_config(), "width": self.width}


@keras.saving.register_keras_serializable(package="acl_tf")
class WideResNet(_Encoder):
    """WideResNet-depth-k (34-10 is the paper's large backbone), pre-activation, dual BN.

    Returns pooled features [N, 64 * widen_factor].
    """

    def __init__(self, depth: int = 34, widen_factor: int = 10, dual_bn: bool = True,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD, **kwargs):
        kwargs.setdefault("name", f"wrn{depth}_{widen_factor}")
        super().__init__(dual_bn=dual_bn, mean=mean, std=std, **kwargs)
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}.")
        self.depth, self.widen_factor = depth, widen_factor
        n = (depth - 4) // 6
        self.stem_conv = _conv(16, 3, 1, "stem_conv")
        self.blocks, channels = [], 16
        for group, filters in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor)):
            for i in range(n):
                stride = 2 if (group > 0 and i == 0) else 1
                self.blocks.append(WideBasicBlock(filters, stride, dual_bn, in_filters=channels,
                                                  name=f"group{group + 1}_block{i + 1}"))
                channels = filters
        self.final_bn = DualBatchNormalization(dual=dual_bn, name="final_bn")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.feature_dim = 64 * widen_factor

    def call(self, images, training=None, branch="normal"):
        x = self.stem_conv(self.normalize(images))
        for block in self.blocks:
            x = block(x, training=training, branch=branch)
        x = ops.relu(self.final_bn(x, training=training, branch=branch))
        return self.pool(x)

    def get_config(self):
        return {**self._base_config(), "depth": self.depth, "widen_factor": self.widen_factor}
