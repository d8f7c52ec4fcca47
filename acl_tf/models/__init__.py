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
    NORMALIZATIONS,
    ChannelNormalization,
    ResNet18,
    WideResNet,
)


def build_encoder(arch: str = "resnet18", width: int = 64, dual_bn: bool = True,
                  sync_bn: bool = False, normalization: str | None = None, **kwargs):
    """Builds (without weights) the encoder named ``arch``: ``resnet18`` or ``wrn34_10``.

    ``sync_bn`` synchronises the batch statistics of every BN across replicas
    (:func:`set_synchronized_bn`). ``normalization`` names the input mean/std
    (``cifar10``, ``imagenet``: :data:`NORMALIZATIONS`, ``model.normalization`` of the configs);
    None leaves them to ``kwargs`` (default CIFAR-10's).
    """
    if normalization is not None:
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Unknown normalization {normalization!r}; expected one of "
                             f"{tuple(NORMALIZATIONS)}.")
        kwargs["mean"], kwargs["std"] = NORMALIZATIONS[normalization]
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
           "KaimingNormalFanOut", "LAYOUT_VERSION", "NORMALIZATIONS", "ProjectionHead", "ResNet18", "TorchLinearBias",
           "TorchLinearKernel", "WideResNet", "build_encoder", "set_synchronized_bn"]
