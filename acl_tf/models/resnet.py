"""CIFAR ResNet-18 and WideResNet-34-10 whose every BatchNorm is a dual BN.

Both encoders take images in [0, 1], normalise them per channel inside the model (so an attack's
epsilon is in pixel units) and return pooled features. Every call takes ``branch`` (``"normal"`` or
``"adv"``) which is passed to all BN layers; convolution weights are shared by the branches.

Arithmetic of the reference PyTorch code (layout version 2, the default):

* Every 3x3 convolution pads one pixel on each side, as PyTorch's ``padding=1``. For stride 1
  Keras' ``padding="same"`` already does that; for stride 2 on an even-sized input "same" pads only
  the bottom/right (0 before, 1 after), so its windows are centred on odd pixels while the 1x1
  stride-2 shortcut samples even ones. A stride-2 3x3 convolution is therefore an explicit
  symmetric zero padding of 1 followed by a ``"valid"`` convolution. The 1x1 shortcut convolutions
  pad nothing (``"valid"``, PyTorch's ``padding=0``).
* Stems are the CIFAR variant: a 3x3 stride-1 convolution, no max-pool.
* Convolution kernels are drawn as PyTorch's ``kaiming_normal_(mode="fan_out",
  nonlinearity="relu")`` (:class:`~acl_tf.models.init.KaimingNormalFanOut`), BN as in
  :mod:`acl_tf.models.dual_bn` (PyTorch's momentum 0.1 and epsilon 1e-5, gamma 1, beta 0).

``layout_version`` records the padding in the model config. Version 1 is the layout of acl-tf
before it matched PyTorch ("same" padding for the stride-2 3x3 convolutions as well); it has the
same variables, so its weights would load into version 2 silently but give other features. A
config without ``layout_version`` (a ``.keras`` file written before the field existed) therefore
loads as version 1, with a warning: the model computes exactly what it was trained with, but not
what the PyTorch reference computes. New models are version 2.
"""

from __future__ import annotations

import keras
from absl import logging
from keras import ops

from acl_tf.models.dual_bn import DualBatchNormalization
from acl_tf.models.init import KaimingNormalFanOut

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: What the ACL reference ResNet-18s normalise with (``resnet_multi_bn.py`` / ``resnet.py``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``model.normalization`` name -> (mean, std).
NORMALIZATIONS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD),
                  "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}

#: The layout of new models: symmetric padding of the stride-2 3x3 convolutions (PyTorch's).
LAYOUT_VERSION = 2
#: The layout of models saved before ``layout_version`` existed ("same" padding throughout).
LEGACY_LAYOUT_VERSION = 1
LAYOUT_VERSIONS = (LEGACY_LAYOUT_VERSION, LAYOUT_VERSION)


def check_layout_version(layout_version) -> int:
    """``layout_version`` as an int if this acl-tf knows it, else a ValueError saying why."""
    if isinstance(layout_version, bool) or layout_version not in LAYOUT_VERSIONS:
        raise ValueError(
            f"Unknown layout_version {layout_version!r}: this acl-tf knows {LAYOUT_VERSIONS} (1: "
            f"the padding of acl-tf before it matched PyTorch, 2: PyTorch's symmetric padding); "
            f"a model saved by a newer acl-tf needs that newer version to load.")
    return int(layout_version)


def _legacy_layout(config: dict, owner: str) -> dict:
    """``config`` with ``layout_version`` 1 when it has none (a file older than the field)."""
    if "layout_version" in config:
        return config
    logging.warning(
        "%s config %r has no layout_version: it was saved by acl-tf before its models matched "
        "PyTorch's padding, and loads with that legacy layout (layout_version=1: stride-2 3x3 "
        "convolutions pad only bottom/right), which reproduces what it was trained with but not "
        "the PyTorch reference. Re-train (new models use layout_version=%d) to get the "
        "PyTorch-matching layout; its weights cannot be converted.",
        owner, config.get("name"), LAYOUT_VERSION)
    return {**config, "layout_version": LEGACY_LAYOUT_VERSION}


def _conv(filters, kernel, stride, name, padding="same"):
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                               kernel_initializer=KaimingNormalFanOut(), name=name)


def _strided_conv3x3(filters, stride, layout_version, name):
    """A 3x3 convolution and whether its input must first be padded by one pixel each side."""
    symmetric = stride > 1 and layout_version >= 2
    return _conv(filters, 3, stride, name, padding="valid" if symmetric else "same"), symmetric


def pad_symmetric(x):
    """Zero padding of one pixel on every side of the spatial axes (channels last), which a
    ``"valid"`` 3x3 convolution after it turns into PyTorch's ``padding=1``."""
    return ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


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
    """Post-activation ResNet basic block (two 3x3 convs) with dual BN; ``layout_version`` as in
    the module docstring."""

    def __init__(self, filters: int, stride: int = 1, dual_bn: bool = True,
                 in_filters: int | None = None, layout_version: int = LAYOUT_VERSION, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.stride, self.dual_bn = filters, stride, dual_bn
        self.in_filters = filters if in_filters is None else in_filters
        self.layout_version = check_layout_version(layout_version)
        self.conv1, self.pad1 = _strided_conv3x3(filters, stride, self.layout_version, "conv1")
        self.bn1 = DualBatchNormalization(dual=dual_bn, name="bn1")
        self.conv2 = _conv(filters, 3, 1, "conv2")
        self.bn2 = DualBatchNormalization(dual=dual_bn, name="bn2")
        self.shortcut_conv = self.shortcut_bn = None
        if stride != 1 or self.in_filters != filters:
            self.shortcut_conv = _conv(filters, 1, stride, "shortcut_conv", padding="valid")
            self.shortcut_bn = DualBatchNormalization(dual=dual_bn, name="shortcut_bn")

    def call(self, x, training=None, branch="normal"):
        out = self.conv1(pad_symmetric(x) if self.pad1 else x)
        out = ops.relu(self.bn1(out, training=training, branch=branch))
        out = self.bn2(self.conv2(out), training=training, branch=branch)
        shortcut = x
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_bn(self.shortcut_conv(x), training=training, branch=branch)
        return ops.relu(out + shortcut)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride,
                "dual_bn": self.dual_bn, "in_filters": self.in_filters,
                "layout_version": self.layout_version}

    @classmethod
    def from_config(cls, config):
        return cls(**_legacy_layout(config, cls.__name__))


@keras.saving.register_keras_serializable(package="acl_tf")
class WideBasicBlock(keras.layers.Layer):
    """Pre-activation WideResNet block (BN-ReLU-conv twice) with dual BN; ``layout_version`` as
    in the module docstring."""

    def __init__(self, filters: int, stride: int = 1, dual_bn: bool = True,
                 in_filters: int | None = None, layout_version: int = LAYOUT_VERSION, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.stride, self.dual_bn = filters, stride, dual_bn
        self.in_filters = filters if in_filters is None else in_filters
        self.layout_version = check_layout_version(layout_version)
        self.bn1 = DualBatchNormalization(dual=dual_bn, name="bn1")
        self.conv1, self.pad1 = _strided_conv3x3(filters, stride, self.layout_version, "conv1")
        self.bn2 = DualBatchNormalization(dual=dual_bn, name="bn2")
        self.conv2 = _conv(filters, 3, 1, "conv2")
        self.shortcut_conv = None
        if stride != 1 or self.in_filters != filters:
            self.shortcut_conv = _conv(filters, 1, stride, "shortcut_conv", padding="valid")

    def call(self, x, training=None, branch="normal"):
        pre = ops.relu(self.bn1(x, training=training, branch=branch))
        out = self.conv1(pad_symmetric(pre) if self.pad1 else pre)
        out = self.conv2(ops.relu(self.bn2(out, training=training, branch=branch)))
        shortcut = x if self.shortcut_conv is None else self.shortcut_conv(pre)
        return out + shortcut

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride,
                "dual_bn": self.dual_bn, "in_filters": self.in_filters,
                "layout_version": self.layout_version}

    @classmethod
    def from_config(cls, config):
        return cls(**_legacy_layout(config, cls.__name__))


class _Encoder(keras.Model):
    """Shared plumbing: input normalisation, branch argument, config, feature size."""

    def __init__(self, dual_bn=True, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                 layout_version=LAYOUT_VERSION, **kwargs):
        super().__init__(**kwargs)
        self.dual_bn = dual_bn
        self.layout_version = check_layout_version(layout_version)
        self.normalize = ChannelNormalization(mean, std, name="normalize")

    def _base_config(self):
        return {"name": self.name, "dual_bn": self.dual_bn, "mean": self.normalize.mean,
                "std": self.normalize.std, "layout_version": self.layout_version}

    @classmethod
    def from_config(cls, config):
        """Rebuilds the encoder; a config without ``layout_version`` (saved before the field
        existed) rebuilds the legacy layout 1, with a warning (module docstring)."""
        return cls(**_legacy_layout(config, cls.__name__))


@keras.saving.register_keras_serializable(package="acl_tf")
class ResNet18(_Encoder):
    """CIFAR ResNet-18: 3x3 stem (stride 1, no max-pool), 4 stages of 2 BasicBlocks.

    Args:
        width: channels of the first stage (64 in the paper); stages use width x (1, 2, 4, 8).
        dual_bn: dual BN (``normal``/``adv``) or a single BN.
        mean, std: per-channel normalisation applied to the [0, 1] input.
        layout_version: 2 (default): PyTorch's padding; 1: the legacy padding of files saved
            before the field existed (module docstring).

    Call args: ``images`` float [N, H, W, 3] in [0, 1], ``training``, ``branch``.
    Returns pooled features [N, 8 * width].
    """

    def __init__(self, width: int = 64, dual_bn: bool = True, mean=CIFAR10_MEAN,
                 std=CIFAR10_STD, layout_version: int = LAYOUT_VERSION, **kwargs):
        kwargs.setdefault("name", "resnet18")
        super().__init__(dual_bn=dual_bn, mean=mean, std=std, layout_version=layout_version,
                         **kwargs)
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
                                              layout_version=self.layout_version,
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

    The usual adversarial-training WideResNet (TRADES): 3x3 stride-1 stem of 16 channels, three
    groups of (depth - 4) / 6 blocks, a 1x1 shortcut on the pre-activated input where the shape
    changes, a final BN-ReLU before pooling. ``layout_version`` as for :class:`ResNet18`.

    Returns pooled features [N, 64 * widen_factor].
    """

    def __init__(self, depth: int = 34, widen_factor: int = 10, dual_bn: bool = True,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD, layout_version: int = LAYOUT_VERSION,
                 **kwargs):
        kwargs.setdefault("name", f"wrn{depth}_{widen_factor}")
        super().__init__(dual_bn=dual_bn, mean=mean, std=std, layout_version=layout_version,
                         **kwargs)
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
                                                  layout_version=self.layout_version,
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
