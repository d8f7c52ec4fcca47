"""Encoders, dual BN and the projection head."""

from acl_tf.models.classifier import Classifier
from acl_tf.models.dual_bn import BRANCHES, DualBatchNormalization, check_branch
from acl_tf.models.heads import ProjectionHead
from acl_tf.models.resnet import ChannelNormalization, ResNet18, WideResNet

ARCHITECTURES = ("resnet18", "wrn34_10")


def build_encoder(arch: str = "resnet18", width: int = 64, dual_bn: bool = True, **kwargs):
    """Builds (without weights) the encoder named ``arch``: ``resnet18`` or ``wrn34_10``."""
    if arch == "resnet18":
        return ResNet18(width=width, dual_bn=dual_bn, **kwargs)
    if arch == "wrn34_10":
        return WideResNet(depth=34, widen_factor=10, dual_bn=dual_bn, **kwargs)
    raise ValueError(f"Unknown architecture {arch!r}; expected one of {ARCHITECTURES}.")


__all__ = ["ARCHITECTURES", "BRANCHES", "ChannelNormalization", "Classifier", "check_branch", "DualBatchNormalization",
           "ProjectionHead", "ResNet18", "WideResNet", "build_encoder"]
