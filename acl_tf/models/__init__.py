"""Encoders, dual BN and the projection head."""

from acl_tf.configs import ARCHITECTURES
from acl_tf.models.classifier import Classifier
from acl_tf.models.dual_bn import (
    BRANCHES,
    DualBatchNormalization,
    check_branch,
    set_synchronized_bn,
)
from acl_tf.models.heads import ProjectionHead
from acl_tf.models.init import KaimingNormalFanOut, TorchLinearBias, TorchLinearKernel
from acl_tf.models.resnet import (
    LAYOUT_VERSION,
    ChannelNormalization,
    ResNet18,
    WideResNet,
)


def build_encoder(arch: str = "resnet18", width: int = 64, dual_bn: bool = True,
                  sync_bn: bool = False, **kwargs):
    """Builds (without weights) the encoder named ``arch``: ``resnet18`` or ``wrn34_10``.

    ``sync_bn`` synchronises the batch statistics of every BN across replicas
    (:func:`set_synchronized_bn`).
    """
    if arch == "resnet18":
        encoder = ResNet18(width=width, dual_bn=dual_bn, **kwargs)
    elif arch == "wrn34_10":
        encoder = WideResNet(depth=34, widen_factor=10, dual_bn=dual_bn, **kwargs)
    else:
        raise ValueError(f"Unknown architecture {arch!r}; expected one of {ARCHITECTURES}.")
    if sync_bn:
        set_synchronized_bn(encoder)
    return encoder


__all__ = ["ARCHITECTURES", "BRANCHES", "ChannelNormalization", "Classifier", "check_branch", "DualBatchNormalization",
           "KaimingNormalFanOut", "LAYOUT_VERSION", "ProjectionHead", "ResNet18", "TorchLinearBias",
           "TorchLinearKernel", "WideResNet", "build_encoder", "set_synchronized_bn"]
