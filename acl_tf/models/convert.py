"""PyTorch state dicts of the reference code -> acl-tf models (the mapping only; no PyTorch).

:func:`convert_state_dict` takes a state dict as a plain ``{key: numpy array}`` mapping and returns
acl-tf models holding its weights: the encoder (:class:`~acl_tf.models.ResNet18` or
:class:`~acl_tf.models.WideResNet`), and the projection head or the linear classifier when the
state dict has one. Reading a ``.pt`` file (PyTorch needed) and writing the models are
:mod:`acl_tf.tasks.import_checkpoint`'s job.

Layouts (``format``):

``multi_bn``
    The reference ACL ResNet-18 with one BN per branch (``models/resnet_multi_bn.py`` of the ACL
    code; DynACL's pre-training and its dual-BN DynACL++ model use the same file). Every BN is a
    ``batch_norm_multiple`` whose ``bn_list`` holds one ``BatchNorm`` per name of
    ``bn_names = ['normal', 'pgd']``: ``<bn>.bn_list.0.*`` is the ``normal`` BN, which becomes
    acl-tf's ``normal`` branch, ``<bn>.bn_list.1.*`` the ``pgd`` BN, which becomes the ``adv``
    branch. A checkpoint with ``bn_list.0`` only (``bn_names = ['normal']``: the reference's
    pre-training without ``--ACL_DS``) gives a single-BN encoder. Keys: ``conv1``, ``bn1``,
    ``layer{1-4}.{0,1}.{conv1,bn1,conv2,bn2}``, ``layer{2-4}.0.downsample.{conv,bn}``.
``single_bn``
    The reference's single-BN ResNet-18 (``models/resnet.py``, torchvision's key names): what the
    reference's ``cvt_state_dict`` makes of a pre-trained model for fine-tuning, the TRADES/AFF
    fine-tuned classifiers of ``train_trades.py`` and DynACL++'s single-BN models. Keys as above
    with plain BNs (``bn1.weight``) and ``downsample.0`` / ``downsample.1``.
``trades_wrn``
    TRADES' WideResNet (``models/wideresnet.py`` of the TRADES code; 34-10 is its published
    CIFAR-10 model): ``conv1``, ``block{1-3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}``, the
    final ``bn1`` and ``fc``. Depth and widening factor are read from the keys. Single BN, no
    input normalisation.

What follows the encoder: ``fc.fc1``, ``fc.bn1``, ... (the reference's ``proj_head``, 2 or 3
layers, BN per branch as in the encoder) becomes a :class:`~acl_tf.models.ProjectionHead`;
``fc.weight`` / ``fc.bias`` (an ``nn.Linear``) becomes the ``fc`` layer of a
:class:`~acl_tf.models.Classifier`; neither means an encoder alone.

Arrays: convolution kernels OIHW -> HWIO, linear weights (out, in) -> (in, out), BN ``weight``,
``bias``, ``running_mean``, ``running_var`` -> ``gamma``, ``beta``, ``moving_mean``,
``moving_variance`` (PyTorch's BN epsilon 1e-5 is acl-tf's too). Floats become float32.

Input normalisation: the reference ResNet-18 normalises inside the model with the buffers
``normalize.mean`` / ``normalize.std`` (ImageNet's constants, ``resnet_multi_bn.py`` L232-233);
acl-tf's encoders default to CIFAR-10's. The imported encoder takes the checkpoint's buffers, or
the reference's ImageNet constants when a ResNet-18 state dict has none; TRADES' WideResNet
normalises nothing (mean 0, std 1). ``mean`` / ``std`` arguments override this (e.g. for a model
trained with the normalisation switched off).

Every key of the state dict is either imported or an error: unknown keys, missing keys and shape
mismatches are one :class:`StateDictMismatch` (a :class:`~acl_tf.core.errors.CheckpointError`)
that lists all of them. Exceptions, both reported in :attr:`Converted.skipped`: a BN's
``num_batches_tracked`` (PyTorch's step counter, used only with ``momentum=None``; acl-tf's BN has
a fixed momentum and no counter), and TRADES' ``sub_block1.*``, a block the WideResNet builds but
its forward never calls.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np

from acl_tf.core.errors import CheckpointError
from acl_tf.models.classifier import Classifier
from acl_tf.models.dual_bn import DualBatchNormalization
from acl_tf.models.heads import ProjectionHead
# (IMAGENET_MEAN / IMAGENET_STD: the reference ResNet-18's normalisation, re-exported)
from acl_tf.models.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet18, WideResNet

__all__ = ["FORMATS", "IMAGENET_MEAN", "IMAGENET_STD", "Converted", "StateDictMismatch",
           "convert_state_dict", "detect_format", "select_prefix", "strip_prefix"]

FORMATS = ("multi_bn", "single_bn", "trades_wrn")
NO_NORMALIZATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
DATA_PARALLEL_PREFIX = "module."

_BN_FIELDS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
              ("running_var", "moving_variance"))
_COUNTER = "num_batches_tracked"
_NORMALIZE = ("normalize.mean", "normalize.std")
_UNUSED_WRN = "sub_block1."
_BRANCH_INDEX = re.compile(r"\.bn_list\.(\d+)\.")
_WRN_BLOCK = re.compile(r"^block1\.layer\.(\d+)\.")


class StateDictMismatch(CheckpointError):
    """A state dict that does not fit the model its layout describes.

    Attributes ``unknown`` (keys the layout has no place for), ``missing`` (keys it needs) and
    ``mismatched`` (``(key, checkpoint shape, expected shape)``, shapes in PyTorch's layout) list
    every problem found, not only the first.
    """

    def __init__(self, what: str, unknown: Sequence[str] = (), missing: Sequence[str] = (),
                 mismatched: Sequence[Tuple[str, tuple, tuple]] = ()):
        self.unknown, self.missing = sorted(unknown), sorted(missing)
        self.mismatched = sorted(mismatched)
        parts = [f"{what} does not fit:"]
        if self.unknown:
            parts.append(f"{len(self.unknown)} unknown key(s) (nothing to import them into):")
            parts += [f"  {key}" for key in self.unknown]
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s):")
            parts += [f"  {key}" for key in self.missing]
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} shape mismatch(es) (PyTorch layout):")
            parts += [f"  {key}: checkpoint {tuple(got)}, expected {tuple(want)}"
                      for key, got, want in self.mismatched]
        super().__init__("\n".join(parts))


@dataclasses.dataclass
class Converted:
    """What :func:`convert_state_dict` made of a state dict.

    ``encoder`` always; ``head`` (a :class:`ProjectionHead`) when the state dict has the
    reference's projection head, ``classifier`` (a :class:`Classifier` around ``encoder``) when it
    has a linear ``fc``. ``imported``: the keys read, ``skipped``: key -> why it was not (see the
    module docstring), ``normalization``: where ``mean`` / ``std`` came from.
    """

    format: str
    encoder: keras.Model
    head: Optional[ProjectionHead]
    classifier: Optional[Classifier]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    normalization: str
    imported: List[str]
    skipped: Dict[str, str]

    @property
    def dual_bn(self) -> bool:
        return bool(self.encoder.dual_bn)

    def summary(self) -> dict:
        """A JSON-able description (architecture, normalisation, what was read and skipped)."""
        enc = self.encoder
        arch = ({"arch": "resnet18", "width": enc.width} if isinstance(enc, ResNet18) else
                {"arch": f"wrn{enc.depth}_{enc.widen_factor}", "depth": enc.depth,
                 "widen_factor": enc.widen_factor})
        out = {"format": self.format, **arch, "dual_bn": self.dual_bn,
               "mean": list(self.mean), "std": list(self.std),
               "normalization": self.normalization,
               "head": None if self.head is None else {
                   "hidden_dim": self.head.hidden_dim, "output_dim": self.head.output_dim,
                   "num_layers": self.head.num_layers},
               "num_classes": None if self.classifier is None else self.classifier.num_classes,
               "keys_imported": len(self.imported), "keys_skipped": dict(self.skipped)}
        return out


# -- key prefixes ---------------------------------------------------------------------------------
def strip_prefix(state_dict: Mapping[str, np.ndarray],
                 prefix: str = DATA_PARALLEL_PREFIX) -> Tuple[Dict[str, np.ndarray], bool]:
    """``state_dict`` with ``prefix`` (``module.``: what ``nn.DataParallel`` adds) removed from
    the keys that have it; returns it and whether any key had it. Two keys that become one are a
    :class:`~acl_tf.core.errors.CheckpointError`."""
    out: Dict[str, np.ndarray] = {}
    found = False
    for key, value in state_dict.items():
        new = key[len(prefix):] if key.startswith(prefix) else key
        found = found or new != key
        if new in out:
            raise CheckpointError(f"the state dict has {new!r} both with and without the "
                                  f"{prefix!r} prefix.")
        out[new] = value
    return out, found


def select_prefix(state_dict: Mapping[str, np.ndarray],
                  prefix: str) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """The entries under ``prefix`` (removed from their keys) and the keys outside it, e.g.
    ``encoder_k.`` for the momentum encoder of DynACL's whole-model checkpoint (it holds
    ``encoder_q.*`` and ``encoder_k.*``; DynACL evaluates ``encoder_k``)."""
    inside = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    outside = sorted(k for k in state_dict if not k.startswith(prefix))
    if not inside:
        raise CheckpointError(f"no key of the state dict starts with {prefix!r}; its keys start "
                              f"with {sorted({k.split('.')[0] + '.' for k in state_dict})}.")
    return inside, outside


def detect_format(keys: Iterable[str]) -> str:
    """The layout (:data:`FORMATS`) that keys without the ``module.`` prefix belong to."""
    keys = list(keys)
    roots = {k.split(".")[0] for k in keys}
    if {"encoder_q", "encoder_k"} & roots:
        raise CheckpointError(
            "this state dict holds DynACL's two momentum encoders (encoder_q.*, encoder_k.*): "
            "choose one with key_prefix='encoder_k.' (--key_prefix=encoder_k., the encoder "
            "DynACL evaluates).")
    if any(k.startswith("block1.layer.") for k in keys):
        return "trades_wrn"
    if any(".bn_list." in k for k in keys):
        return "multi_bn"
    if any(k.startswith("layer1.") for k in keys):
        return "single_bn"
    raise CheckpointError(
        f"cannot tell the layout of this state dict (keys begin {sorted(roots)[:12]}): expected "
        f"the reference ResNet-18 (layer1.*, with bn_list.* for multi-BN) or TRADES' WideResNet "
        f"(block1.layer.*). Pass the format explicitly, one of {FORMATS}.")


# -- the plan: torch key -> Keras variable ---------------------------------------------------------
class _Plan:
    """Torch key -> (Keras variable, transform) of one model, built from the model itself."""

    def __init__(self):
        self.entries: Dict[str, Tuple[object, str]] = {}
        self.counters: set = set()     # num_batches_tracked keys a mapped BN may bring

    def add(self, key: str, variable, transform: str = "same"):
        self.entries[key] = (variable, transform)

    def conv(self, key: str, layer):
        self.add(f"{key}.weight", layer.kernel, "conv")

    def linear(self, key: str, layer):
        self.add(f"{key}.weight", layer.kernel, "linear")
        if layer.use_bias:
            self.add(f"{key}.bias", layer.bias)

    def bn(self, key: str, layer: DualBatchNormalization, multi: bool):
        """``key.bn_list.{0,1}.*`` (multi-BN layout: normal, pgd) or ``key.*`` (single BN)."""
        if multi:
            branches = [(f"{key}.bn_list.0", layer.bn_normal)]
            if layer.dual:
                branches.append((f"{key}.bn_list.1", layer.bn_adv))
        else:
            branches = [(key, layer.bn_normal)]
        for prefix, bn in branches:
            for torch_name, keras_name in _BN_FIELDS:
                self.add(f"{prefix}.{torch_name}", getattr(bn, keras_name))
            self.counters.add(f"{prefix}.{_COUNTER}")


def _torch_shape(shape: tuple, transform: str) -> tuple:
    shape = tuple(int(s) for s in shape)
    if transform == "conv":        # HWIO -> OIHW
        return (shape[3], shape[2], shape[0], shape[1])
    if transform == "linear":      # (in, out) -> (out, in)
        return shape[::-1]
    return shape


def _to_keras(value: np.ndarray, transform: str) -> np.ndarray:
    if transform == "conv":
        return np.transpose(value, (2, 3, 1, 0))
    if transform == "linear":
        return np.transpose(value)
    return value


def _resnet_plan(plan: _Plan, encoder: ResNet18, multi: bool):
    plan.conv("conv1", encoder.stem_conv)
    plan.bn("bn1", encoder.stem_bn, multi)
    for index, block in enumerate(encoder.blocks):
        key = f"layer{index // 2 + 1}.{index % 2}"
        plan.conv(f"{key}.conv1", block.conv1)
        plan.bn(f"{key}.bn1", block.bn1, multi)
        plan.conv(f"{key}.conv2", block.conv2)
        plan.bn(f"{key}.bn2", block.bn2, multi)
        if block.shortcut_conv is not None:
            conv, bn = ("downsample.conv", "downsample.bn") if multi else \
                ("downsample.0", "downsample.1")
            plan.conv(f"{key}.{conv}", block.shortcut_conv)
            plan.bn(f"{key}.{bn}", block.shortcut_bn, multi)


def _wrn_plan(plan: _Plan, encoder: WideResNet):
    n = (encoder.depth - 4) // 6
    plan.conv("conv1", encoder.stem_conv)
    for index, block in enumerate(encoder.blocks):
        key = f"block{index // n + 1}.layer.{index % n}"
        plan.bn(f"{key}.bn1", block.bn1, False)
        plan.conv(f"{key}.conv1", block.conv1)
        plan.bn(f"{key}.bn2", block.bn2, False)
        plan.conv(f"{key}.conv2", block.conv2)
        if block.shortcut_conv is not None:
            plan.conv(f"{key}.convShortcut", block.shortcut_conv)
    plan.bn("bn1", encoder.final_bn, False)


def _head_plan(plan: _Plan, head: ProjectionHead, multi: bool):
    for i, (dense, bn) in enumerate(zip(head.dense, head.bns), start=1):
        plan.linear(f"fc.fc{i}", dense)
        plan.bn(f"fc.bn{i}", bn, multi)


# -- reading the architecture off the keys ---------------------------------------------------------
def _shape(state_dict, key, rank) -> Optional[tuple]:
    value = state_dict.get(key)
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None and len(shape) == rank else None


def _channels(state_dict, keys) -> Optional[int]:
    """The output channels of the first of ``keys`` present (so that one missing or misshapen
    array does not make every other one look wrong)."""
    for key in keys:
        value = state_dict.get(key)
        if value is not None and value.ndim in (1, 4):
            return int(value.shape[0])
    return None


def _floats(array: np.ndarray) -> tuple:
    """Python floats; float32 values as their shortest decimal (0.485, not 0.48500001430511475),
    which is the same float32 again inside the model."""
    if array.dtype == np.float32:
        return tuple(float(str(v)) for v in array)
    return tuple(float(v) for v in array)


def _normalization(state_dict, fmt, mean, std):
    """``(mean, std, where from, the keys read, missing keys, shape mismatches)``; with a problem
    (reported with the others) the defaults stand in."""
    present = [k for k in _NORMALIZE if k in state_dict]
    if fmt == "trades_wrn":
        default, default_name = NO_NORMALIZATION, "none (TRADES' WideResNet normalises nothing)"
        present = []         # such keys are unknown to this layout
    else:
        default = (IMAGENET_MEAN, IMAGENET_STD)
        default_name = "the reference's ImageNet constants (the state dict has no normalize.*)"
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither.")
    wrong = [(k, tuple(state_dict[k].shape), (3,)) for k in present
             if tuple(state_dict[k].shape) != (3,)]
    missing = [k for k in _NORMALIZE if k not in present] if len(present) == 1 else []
    if mean is not None:
        return (tuple(float(m) for m in mean), tuple(float(s) for s in std), "given", present,
                missing, wrong)
    if len(present) == 2 and not wrong:
        return (_floats(state_dict["normalize.mean"]), _floats(state_dict["normalize.std"]),
                "the checkpoint's normalize.mean / normalize.std", present, [], [])
    return default[0], default[1], default_name, present, missing, wrong


def _build(state_dict, fmt, mean, std, branch):
    """The models a state dict of layout ``fmt`` describes, built (weights not yet set)."""
    multi = fmt == "multi_bn"
    probe = np.zeros((1, 32, 32, 3), np.float32)
    if fmt == "trades_wrn":
        blocks = {int(m.group(1)) for k in state_dict if (m := _WRN_BLOCK.match(k))}
        n = max(blocks) + 1 if blocks else 5
        channels = _channels(state_dict, ["block1.layer.0.conv1.weight",
                                          "block1.layer.0.conv2.weight",
                                          "block1.layer.0.bn2.weight"])
        widen = max(channels // 16, 1) if channels else 10
        encoder = WideResNet(depth=6 * n + 4, widen_factor=widen, dual_bn=False, mean=mean,
                             std=std)
        dual = False
    else:
        channels = _channels(state_dict, ["conv1.weight", "bn1.weight", "bn1.bn_list.0.weight",
                                          "layer1.0.conv1.weight", "layer1.0.conv2.weight"])
        branches = {int(m.group(1)) for k in state_dict if (m := _BRANCH_INDEX.search(k))}
        dual = multi and 1 in branches
        encoder = ResNet18(width=channels or 64, dual_bn=dual, mean=mean, std=std)
    features = encoder(probe, training=False)

    head = classifier = None
    if any(k.startswith(("fc.fc", "fc.bn")) for k in state_dict) and fmt != "trades_wrn":
        first = _shape(state_dict, "fc.fc1.weight", 2)
        layers = 3 if any(k.startswith(("fc.fc3.", "fc.bn3.")) for k in state_dict) else 2
        last = _shape(state_dict, f"fc.fc{layers}.weight", 2)
        hidden = first[0] if first else encoder.feature_dim
        head = ProjectionHead(hidden, last[0] if last else hidden, num_layers=layers,
                              dual_bn=dual, name="head")
        head(features, training=False)
    elif "fc.weight" in state_dict or "fc.bias" in state_dict:
        weight = _shape(state_dict, "fc.weight", 2)
        bias = _shape(state_dict, "fc.bias", 1)
        classes = weight[0] if weight else bias[0] if bias else 10
        classifier = Classifier(encoder, classes, branch=branch, name="classifier")
        classifier(probe, training=False)
    return encoder, head, classifier


def convert_state_dict(state_dict: Mapping[str, np.ndarray], format: str = "auto", *,
                       mean: Optional[Sequence[float]] = None,
                       std: Optional[Sequence[float]] = None, branch: str = "adv") -> Converted:
    """acl-tf models holding the weights of a reference PyTorch state dict.

    Args:
        state_dict: key -> array (NumPy, or anything ``np.asarray`` takes), the keys without the
            ``module.`` prefix (:func:`strip_prefix`).
        format: ``multi_bn``, ``single_bn``, ``trades_wrn`` (module docstring) or ``auto``
            (:func:`detect_format`).
        mean, std: the encoder's input normalisation; default: the checkpoint's (module
            docstring).
        branch: the BN branch a classifier uses by default (the reference tests on ``pgd``,
            acl-tf's ``adv``).

    Returns:
        :class:`Converted`.

    Raises:
        StateDictMismatch: unknown or missing keys, or arrays of the wrong shape (all listed).
        CheckpointError: a layout that cannot be told (``auto``) or values that are no arrays.
        ValueError: an unknown ``format``.
    """
    fmt = detect_format(state_dict) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {format!r}; expected 'auto' or one of {FORMATS}.")
    arrays: Dict[str, np.ndarray] = {}
    bad = []
    for key, value in state_dict.items():
        try:
            arrays[key] = np.asarray(value)
        except Exception:  # noqa: BLE001 - anything that is no array
            bad.append(key)
        else:
            if arrays[key].dtype == object:
                bad.append(key)
    if bad:
        raise CheckpointError(f"state dict entries that are no arrays: {sorted(bad)}")

    mean, std, normalization, norm_keys, norm_missing, norm_wrong = _normalization(
        arrays, fmt, mean, std)
    encoder, head, classifier = _build(arrays, fmt, mean, std, branch)
    multi = fmt == "multi_bn"
    plan = _Plan()
    if fmt == "trades_wrn":
        _wrn_plan(plan, encoder)
    else:
        _resnet_plan(plan, encoder, multi)
    if head is not None:
        _head_plan(plan, head, multi)
    if classifier is not None:
        plan.linear("fc", classifier.fc)

    skipped: Dict[str, str] = {}
    unknown = []
    for key in arrays:
        if key in plan.entries or key in norm_keys:
            continue
        if key in plan.counters:
            skipped[key] = "BN step counter (num_batches_tracked): acl-tf's BN has none"
        elif fmt == "trades_wrn" and key.startswith(_UNUSED_WRN):
            skipped[key] = "TRADES' WideResNet builds sub_block1 but its forward never uses it"
        else:
            unknown.append(key)
    missing = [key for key in plan.entries if key not in arrays] + norm_missing
    mismatched = list(norm_wrong)
    for key, (variable, transform) in plan.entries.items():
        if key in arrays:
            want = _torch_shape(variable.shape, transform)
            if tuple(arrays[key].shape) != want:
                mismatched.append((key, tuple(arrays[key].shape), want))
    if unknown or missing or mismatched:
        what = f"the state dict, read as {fmt} ({_describe(encoder, head, classifier)})"
        raise StateDictMismatch(what, unknown, missing, mismatched)

    for key, (variable, transform) in plan.entries.items():
        variable.assign(_to_keras(arrays[key], transform).astype(variable.dtype))
    return Converted(format=fmt, encoder=encoder, head=head, classifier=classifier,
                     mean=tuple(mean), std=tuple(std), normalization=normalization,
                     imported=sorted(list(plan.entries) + norm_keys), skipped=skipped)


def _describe(encoder, head, classifier) -> str:
    if isinstance(encoder, ResNet18):
        what = f"ResNet-18 width {encoder.width}"
    else:
        what = f"WideResNet-{encoder.depth}-{encoder.widen_factor}"
    what += ", dual BN" if encoder.dual_bn else ", single BN"
    if head is not None:
        what += f", {head.num_layers}-layer projection head"
    if classifier is not None:
        what += f", linear fc of {classifier.num_classes} classes"
    return what
