"""Every choice of names in acl-tf, defined once.

Each choice is a ``Literal`` type (annotated with what its names are) that config fields declare
and the loader checks, case-insensitively; the tuple of its names (``VARIANTS`` ...) is what
library code and command-line flags use. ``check_*`` functions are for library functions that
receive a name as a plain argument rather than inside a typed config.
"""

from __future__ import annotations

from typing import Annotated, Literal

from acl_tf.configs.fields import Choice, check_choice, choice_names

__all__ = [
    "AIR_DIVERGENCES", "AIR_METHODS", "AirDivergence", "DYNAMIC_METHODS", "INTERPOLATIONS",
    "Interpolation", "METHODS", "Method", "check_method",
    "ALPHA_CONVENTIONS", "ARCHITECTURES", "AUTOATTACK_ATTACKS", "AlphaConvention",
    "Architecture", "AutoAttackName", "BENCH_PRECISIONS", "BN_MODES", "BRANCHES", "BnMode",
    "Branch", "CIFAR10C_CORRUPTIONS", "CIFAR10C_SEVERITIES", "Corruption", "DUAL_BN_VARIANTS",
    "FINETUNE_MODES", "FinetuneMode", "HEAD_LAYERS", "HeadLayers", "INPUT_NORMALIZATIONS",
    "InputNormalization", "OPTIMIZERS",
    "OptimizerName", "Precision", "RANDOM_STARTS", "RandomStart", "SCHEDULES", "SELECT_BY",
    "SEMISUP_STEPS", "STRATEGIES", "Schedule", "SelectBy", "SemisupStep", "Severity",
    "Strategy", "Variant", "check_branch", "check_mode", "check_variant",
]

# -- Pre-training --------------------------------------------------------------------------------
Variant = Annotated[Literal["s2s", "a2a", "a2s", "ds"], Choice("ACL variant")]
VARIANTS = choice_names(Variant)
DUAL_BN_VARIANTS = ("a2s", "ds")          # the variants whose default model.bn is dual

# acl: ACL's dual stream; dynacl: DynACL's annealed augmentation and stream weights (Luo et al.,
# ICLR 2023); acl_air / dynacl_air: ACL / DynACL with AIR's invariance regularisers (Xu et al.,
# NeurIPS 2023). Every method but acl builds on the DS variant.
Method = Annotated[Literal["acl", "dynacl", "acl_air", "dynacl_air"],
                   Choice("pre-training method")]
METHODS = choice_names(Method)
DYNAMIC_METHODS = ("dynacl", "dynacl_air")   # annealed augmentation strength and stream weights
AIR_METHODS = ("acl_air", "dynacl_air")      # with AIR's regularisers

# reference: what the AIR code computes (F.kl_div given probabilities where it expects log
# probabilities, and an unnormalised product of distributions); kl: the KL divergences the AIR
# paper writes.
AirDivergence = Annotated[Literal["reference", "kl"], Choice("AIR divergence")]
AIR_DIVERGENCES = choice_names(AirDivergence)

# RandomResizedCrop's resampling: bicubic (the ACL and AIR code) or bilinear (torchvision's
# default, which the DynACL code keeps).
Interpolation = Annotated[Literal["bilinear", "bicubic"], Choice("crop interpolation")]
INTERPOLATIONS = choice_names(Interpolation)

BnMode = Annotated[Literal["auto", "dual", "single"],
                   Choice("BN mode", "auto: dual for a2s/ds, single for s2s/a2a")]
BN_MODES = choice_names(BnMode)

Architecture = Annotated[Literal["resnet18", "wrn34_10"], Choice("architecture")]
ARCHITECTURES = choice_names(Architecture)

HeadLayers = Annotated[Literal[2, 3], Choice("projection-head depth")]
HEAD_LAYERS = choice_names(HeadLayers)

InputNormalization = Annotated[
    Literal["cifar10", "imagenet"],
    Choice("input normalisation", "the per-channel mean/std the encoder subtracts/divides by: "
                                  "CIFAR-10's, or ImageNet's (what the ACL reference code uses)")]
INPUT_NORMALIZATIONS = choice_names(InputNormalization)

OptimizerName = Annotated[Literal["lars", "sgd", "adam"], Choice("optimizer")]
OPTIMIZERS = choice_names(OptimizerName)

Schedule = Annotated[Literal["cosine", "constant"], Choice("learning-rate schedule")]
SCHEDULES = choice_names(Schedule)

# -- Attacks -------------------------------------------------------------------------------------
RandomStart = Annotated[Literal["uniform", "normal", "none"],
                        Choice("random_start", "uniform in [-eps, eps], x + normal_std * N(0, 1) "
                                               "or none")]
RANDOM_STARTS = choice_names(RandomStart)

# -- Fine-tuning, model selection, dual BN -------------------------------------------------------
FinetuneMode = Annotated[
    Literal["aff", "alf", "slf"],
    Choice("fine-tuning mode", "aff: adversarial full fine-tuning with TRADES, alf: adversarial "
                               "linear fine-tuning, slf: standard linear fine-tuning")]
FINETUNE_MODES = choice_names(FinetuneMode)

Branch = Annotated[Literal["normal", "adv"], Choice("BN branch")]
BRANCHES = choice_names(Branch)

SelectBy = Annotated[Literal["robust", "clean"], Choice("select_by criterion",
                                                        "validation accuracy kept as best")]
SELECT_BY = choice_names(SelectBy)

# -- Semi-supervised training --------------------------------------------------------------------
AlphaConvention = Annotated[
    Literal["paper", "code"],
    Choice("alpha_convention", "paper: alpha weighs the labelled CE as in Eqn. 3, code: as the "
                               "official script")]
ALPHA_CONVENTIONS = choice_names(AlphaConvention)

SemisupStep = Annotated[Literal["all", "teacher", "pseudo_label", "student"], Choice("step")]
SEMISUP_STEPS = choice_names(SemisupStep)

# -- Evaluation ----------------------------------------------------------------------------------
AutoAttackName = Annotated[Literal["apgd-ce", "apgd-t", "fab-t", "square"],
                           Choice("AutoAttack attack")]
AUTOATTACK_ATTACKS = choice_names(AutoAttackName)      # the standard list, in order

Corruption = Annotated[
    Literal["brightness", "contrast", "defocus_blur", "elastic", "fog", "frost",
            "frosted_glass_blur", "gaussian_blur", "gaussian_noise", "impulse_noise",
            "jpeg_compression", "motion_blur", "pixelate", "saturate", "shot_noise", "snow",
            "spatter", "speckle_noise", "zoom_blur"],
    Choice("CIFAR-10-C corruption")]
CIFAR10C_CORRUPTIONS = choice_names(Corruption)

Severity = Annotated[Literal[1, 2, 3, 4, 5], Choice("CIFAR-10-C severity")]
CIFAR10C_SEVERITIES = choice_names(Severity)

# -- Running -------------------------------------------------------------------------------------
Strategy = Annotated[Literal["default", "mirrored", "multi_worker", "tpu"],
                     Choice("distribution strategy")]
STRATEGIES = choice_names(Strategy)

Precision = Annotated[Literal["float32", "mixed_bfloat16", "mixed_float16"],
                      Choice("precision")]
BENCH_PRECISIONS = choice_names(Precision)


def check_variant(variant) -> str:
    """The lower-cased ACL variant, or a ConfigError (a ValueError) naming the valid ones."""
    return check_choice(Variant, variant, "variant")


def check_method(method) -> str:
    """The lower-cased pre-training method, or a ConfigError (a ValueError) naming the valid
    ones."""
    return check_choice(Method, method, "method")


def check_mode(mode) -> str:
    """The lower-cased fine-tuning mode, or a ConfigError (a ValueError) naming the valid ones."""
    return check_choice(FinetuneMode, mode, "mode")


def check_branch(branch) -> str:
    """The lower-cased BN branch, or a ConfigError (a ValueError) naming the valid ones."""
    return check_choice(Branch, branch, "branch")
