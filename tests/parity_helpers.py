"""What the parity tests (``tests/test_parity_*.py``) and their generator share.

The vectors in ``tests/parity/*.npz`` were computed by the reference PyTorch code
(``scripts/parity/make_vectors.py``). A full-width ResNet-18 has 11M weights, too many to store
in a fixture, so no weight tensor is stored: the generator and the tests both derive the weights
from a seed with :func:`reference_weights` (NumPy's legacy ``RandomState``, whose streams NumPy
keeps stable across versions), in the reference's ``state_dict`` layout (key names, OIHW
convolutions, ``(out, in)`` linear weights). A fixture records the keys, shapes, kinds and seed,
and a SHA-256 digest of the arrays the generator used; :func:`check_digest` fails a test whose
regenerated weights are not those bytes.

Importing this module needs NumPy only (the generator runs it without TensorFlow); the functions
that touch acl-tf models import Keras when called.

Key layout of the reference models and where each key goes in acl-tf:

===========================================  =================================================
reference key                                 acl-tf variable
===========================================  =================================================
``conv1.weight`` (OIHW)                       ``encoder.stem_conv.kernel`` (HWIO)
``bn1.bn_list.{i}.{weight,bias,running_*}``   ``encoder.stem_bn.<branch i>.{gamma,beta,moving_*}``
``bn1.{weight,...}`` (single-BN ResNet)        ``encoder.stem_bn.<branch>``
``layer{s}.{b}.conv{1,2}.weight``             ``encoder.blocks[2(s-1)+b].conv{1,2}.kernel``
``layer{s}.{b}.bn{1,2}...``                   ``encoder.blocks[...].bn{1,2}``
``layer{s}.{b}.downsample.conv.weight``       ``encoder.blocks[...].shortcut_conv.kernel``
  (``downsample.0.weight`` single-BN)
``layer{s}.{b}.downsample.bn...``             ``encoder.blocks[...].shortcut_bn``
  (``downsample.1...`` single-BN)
``fc.fc{k}.weight`` / ``fc.fc1.bias``         ``head.dense[k-1].kernel`` (transposed) / ``.bias``
``fc.bn{k}...``                               ``head.bns[k-1]``
``fc.weight`` / ``fc.bias`` (classifier)      ``classifier.fc.kernel`` (transposed) / ``.bias``
``normalize.mean`` / ``normalize.std``        the encoder's ``mean`` / ``std`` constants
===========================================  =================================================

The multi-BN reference keeps one BN per name in ``bn_list`` (index = position in ``bn_names``);
acl-tf's :class:`~acl_tf.models.DualBatchNormalization` has ``normal`` and ``adv`` sub-layers
(a single-BN layer has one, serving both names). ``num_batches_tracked`` has no counterpart
(PyTorch uses it only when ``momentum=None``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

PARITY_DIR = Path(__file__).resolve().parent / "parity"

#: Kinds of state_dict entries and how :func:`reference_weights` draws them.
KINDS = ("conv", "linear_weight", "linear_bias", "bn_weight", "bn_bias", "bn_mean", "bn_var",
         "count", "buffer")

#: Tensors of more entries than this are stored (and compared) at :data:`SAMPLES` entries drawn
#: by :func:`sample_indices`, and by their norm.
FULL_SIZE = 64
SAMPLES = 64


# -- weights, shared with the generator ----------------------------------------------------------
def _shape(shape) -> tuple:
    """A shape given as a tuple or as the fixtures store it (``"64,3,3,3"``; ``""``: scalar)."""
    if isinstance(shape, (str, np.str_)):
        return tuple(int(s) for s in str(shape).split(",") if s)
    return tuple(int(s) for s in shape)


def _draw(rng: np.random.RandomState, kind: str, shape) -> np.ndarray:
    if kind == "conv":             # Kaiming-normal fan-out, as the reference initialises
        out, _, kh, kw = shape
        return rng.standard_normal(shape) * np.sqrt(2.0 / (out * kh * kw))
    if kind == "linear_weight":    # nn.Linear's default range U(+-1/sqrt(fan_in))
        bound = 1.0 / np.sqrt(shape[1])
        return rng.uniform(-bound, bound, shape)
    if kind == "linear_bias":
        return rng.uniform(-0.1, 0.1, shape)
    # BN parameters and statistics away from their initial 1/0, so that every one matters.
    if kind == "bn_weight":
        return rng.uniform(0.5, 1.5, shape)
    if kind in ("bn_bias", "bn_mean"):
        return 0.1 * rng.standard_normal(shape)
    if kind == "bn_var":
        return rng.uniform(0.5, 1.5, shape)
    raise ValueError(f"no recipe for kind {kind!r}")


def reference_weights(keys, shapes, kinds, seed: int, buffers=None) -> dict:
    """The state_dict of the vectors: ``{key: float32 array}`` (``count`` entries int64 zeros,
    ``buffer`` entries taken from ``buffers``), drawn in key order from ``RandomState(seed)``."""
    rng = np.random.RandomState(int(seed))
    weights = {}
    for key, shape, kind in zip(keys, shapes, kinds):
        kind, shape = str(kind), _shape(shape)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} of {key!r}")
        if kind == "count":
            weights[key] = np.zeros(shape, np.int64)
        elif kind == "buffer":
            weights[key] = np.asarray(buffers[key], np.float32)
        else:
            weights[key] = _draw(rng, kind, shape).astype(np.float32)
    return weights


def draw_input(kind: str, seed: int, shape) -> np.ndarray:
    """An input of the vectors, float32: ``images`` quantised like CIFAR-10 (k / 255, 0 and 1
    included), ``uniform`` draws in [0, 1) (what ``torch.rand_like`` would give a random start)
    or ``normal`` N(0, 1) draws (``torch.randn``)."""
    rng = np.random.RandomState(int(seed))
    shape = _shape(shape)
    if kind == "images":
        return (rng.randint(0, 256, shape) / 255.0).astype(np.float32)
    if kind == "uniform":
        return rng.uniform(0.0, 1.0, shape).astype(np.float32)
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    raise ValueError(f"unknown input kind {kind!r}")


def input_entries(name: str, kind: str, seed: int, shape) -> dict:
    """The npz entries that describe input ``name`` (regenerated by :func:`input_of`)."""
    value = draw_input(kind, seed, shape)
    return {f"{name}.kind": np.array(kind), f"{name}.seed": np.int64(seed),
            f"{name}.shape": np.array(",".join(map(str, value.shape))),
            f"{name}.digest": np.array(digest({name: value}))}


def input_of(fixture: dict, name: str) -> np.ndarray:
    """Input ``name`` of ``fixture``, regenerated and checked against the generator's digest."""
    value = draw_input(str(fixture[f"{name}.kind"]), int(fixture[f"{name}.seed"]),
                       str(fixture[f"{name}.shape"]))
    if digest({name: value}) != str(fixture[f"{name}.digest"]):
        raise AssertionError(f"regenerated input {name!r} differs from the generator's")
    return value


def digest(weights: dict) -> str:
    """SHA-256 of the keys and bytes of ``weights`` (in key order)."""
    h = hashlib.sha256()
    for key, value in weights.items():
        h.update(key.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def sample_indices(size: int, index: int) -> np.ndarray:
    """Flat indices (reference layout) at which a tensor of ``size`` entries is stored: all of
    them up to :data:`FULL_SIZE`, else :data:`SAMPLES` drawn with the key's position ``index``."""
    if size <= FULL_SIZE:
        return np.arange(size)
    return np.sort(np.random.RandomState(10_000 + index).choice(size, SAMPLES, replace=False))


def pack(prefix: str, arrays: dict, keys, dtype=np.float32) -> dict:
    """npz entries ``prefix/key`` (values at :func:`sample_indices`, as ``dtype``) and
    ``prefix_norm/key``."""
    out = {}
    for i, key in enumerate(keys):
        if key not in arrays:
            continue
        flat = np.asarray(arrays[key], np.float64).ravel()
        out[f"{prefix}/{key}"] = flat[sample_indices(flat.size, i)].astype(dtype)
        out[f"{prefix}_norm/{key}"] = np.float64(np.linalg.norm(flat))
    return out


def stored(fixture: dict, prefix: str, key: str, keys, value) -> tuple:
    """(reference values, ``value``'s values) at the entries stored for ``key`` under ``prefix``
    (``value`` in the reference layout; ``keys`` all state_dict keys, in order)."""
    flat = np.asarray(value, np.float64).ravel()
    return (fixture[f"{prefix}/{key}"].astype(np.float64),
            flat[sample_indices(flat.size, list(keys).index(key))])


def bn_samples(key: str, batch: int, size: int = 32) -> int:
    """Values a BN of the CIFAR ResNet-18 (``size`` x ``size`` input) averages over: batch x
    height x width (the projection head's BN: the batch)."""
    if key.startswith("fc."):
        return batch
    stage = key.split(".")[0]
    side = size // {"layer2": 2, "layer3": 4, "layer4": 8}.get(stage, 1)
    return batch * side * side


def compare_stats(fixture: dict, prefix: str, mapping: dict, weights: dict, batch: int,
                  keep: float = 0.9, only=lambda key: True) -> dict:
    """Worst relative difference (max abs / max abs reference value, per tensor) of the moving
    statistics of ``mapping`` from the reference's running statistics ``prefix/KEY``.

    PyTorch averages the *unbiased* batch variance into ``running_var``, acl-tf the biased one
    (docs/parity.md). With ``old = keep * initial`` (``keep`` = 0.9 per training pass: 0.81 after
    two) the reference's ``old + (1 - 0.9) * v_unbiased`` terms become acl-tf's by the factor
    (n - 1) / n, n = :func:`bn_samples`: ``converted = old + (ref - old) * (n - 1) / n``.

    Returns ``{"running_mean": ..., "running_var": ..., "running_var_unconverted": ...}``.
    """
    keys = list(weights)
    worst = {"running_mean": 0.0, "running_var": 0.0, "running_var_unconverted": 0.0}
    for key, var in mapping.items():
        kind = key.rsplit(".", 1)[-1]
        if kind not in ("running_mean", "running_var") or not only(key):
            continue
        ref, ours = stored(fixture, prefix, key, keys, var.numpy())
        if kind == "running_var":
            worst["running_var_unconverted"] = max(
                worst["running_var_unconverted"], float(np.max(np.abs(ours - ref) / ref)))
            _, old = stored(fixture, prefix, key, keys, keep * weights[key].astype(np.float64))
            n = bn_samples(key, batch)
            ref = old + (ref - old) * (n - 1) / n
        worst[kind] = max(worst[kind], float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref))))
    return worst


# -- comparing, and recording what was measured -------------------------------------------------
def record(name: str, **values) -> None:
    """Appends a measurement to the JSON-lines file ``$PARITY_REPORT`` if set (how the table of
    measured differences in docs/parity.md is made: ``PARITY_REPORT=FILE pytest
    tests/test_parity_*.py``)."""
    path = os.environ.get("PARITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"name": name, **values}) + "\n")


def check_close(name: str, ours, ref, rtol: float) -> float:
    """Asserts max |ours - ref| <= ``rtol`` * max |ref| (records both); returns the ratio."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (name, ours.shape, ref.shape)
    diff = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = diff / max(scale, 1e-30)
    record(name, max_abs=diff, max_ref=scale, rel=rel, tol=rtol)
    assert rel <= rtol, (f"{name}: max abs diff {diff:.3g} = {rel:.3g} x max |ref| {scale:.3g} "
                         f"> {rtol}")
    return rel


# -- reading a fixture ---------------------------------------------------------------------------
def load(name: str) -> dict:
    """The arrays of ``tests/parity/<name>.npz`` (a dict; strings decoded)."""
    with np.load(PARITY_DIR / f"{name}.npz", allow_pickle=False) as data:
        return {k: (str(v) if v.dtype.kind == "U" and v.ndim == 0 else v) for k, v in data.items()}


def weights_of(fixture: dict, prefix: str = "model") -> dict:
    """The reference state_dict of ``fixture``: regenerated from its seed, with the few tensors
    the fixture stores (``prefix.override/KEY``) in place of the drawn ones."""
    keys = [str(k) for k in fixture[f"{prefix}.keys"]]
    buffers = {k: fixture[f"{prefix}.buffer/{k}"] for k, kind in
               zip(keys, fixture[f"{prefix}.kinds"]) if str(kind) == "buffer"}
    weights = reference_weights(keys, fixture[f"{prefix}.shapes"], fixture[f"{prefix}.kinds"],
                                int(fixture[f"{prefix}.seed"]), buffers)
    marker = f"{prefix}.override/"
    weights.update({k[len(marker):]: v for k, v in fixture.items() if k.startswith(marker)})
    return weights


def check_digest(fixture: dict, weights: dict, prefix: str = "model") -> None:
    expected = str(fixture[f"{prefix}.digest"])
    got = digest(weights)
    if got != expected:
        raise AssertionError(f"regenerated weights differ from the generator's ({got[:12]} != "
                             f"{expected[:12]}): NumPy's RandomState stream changed?")


def nchw_to_nhwc(x):
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def pairs_to_views(x):
    """Reference batches interleave the two views of each image ([a0, b0, a1, b1, ...]);
    acl-tf stacks them ([a0, a1, ...; b0, b1, ...])."""
    return np.concatenate([x[0::2], x[1::2]], axis=0)


def views_to_pairs(x):
    """Inverse of :func:`pairs_to_views`."""
    half = len(x) // 2
    out = np.empty_like(x)
    out[0::2], out[1::2] = x[:half], x[half:]
    return out


# -- reference keys -> acl-tf variables ----------------------------------------------------------
_BN_ATTR = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
            "running_var": "moving_variance"}


def _bn_variable(dual_bn, rest: str, branches):
    """The variable of DualBatchNormalization ``dual_bn`` named by the key tail ``rest``
    (``bn_list.{i}.weight`` or ``weight``); None for ``num_batches_tracked``."""
    match = re.fullmatch(r"(?:bn_list\.(\d+)\.)?(\w+)", rest)
    index, param = match.groups()
    if param == "num_batches_tracked":
        return None
    branch = branches[int(index or 0)]
    layer = dual_bn.bn_adv if branch == "adv" else dual_bn.bn_normal
    return getattr(layer, _BN_ATTR[param])


def keras_variable(key: str, encoder, head=None, fc=None, branches=("normal", "adv")):
    """The acl-tf variable of reference key ``key`` (module docstring), or None (no
    counterpart). ``branches[i]`` is the acl-tf branch of the reference's ``bn_list.{i}``
    (a single-BN key uses ``branches[0]``)."""
    if key.startswith("fc."):
        tail = key[3:]
        if head is None:
            return {"weight": fc.kernel, "bias": fc.bias}[tail]
        match = re.fullmatch(r"fc(\d)\.(weight|bias)", tail)
        if match:
            dense = head.dense[int(match.group(1)) - 1]
            return dense.kernel if match.group(2) == "weight" else dense.bias
        match = re.fullmatch(r"bn(\d)\.(.+)", tail)
        return _bn_variable(head.bns[int(match.group(1)) - 1], match.group(2), branches)
    if key.startswith("normalize."):
        return None
    if key == "conv1.weight":
        return encoder.stem_conv.kernel
    match = re.fullmatch(r"bn1\.(.+)", key)
    if match:
        return _bn_variable(encoder.stem_bn, match.group(1), branches)
    match = re.fullmatch(r"layer(\d)\.(\d)\.(.+)", key)
    if not match:
        raise KeyError(f"unknown reference key {key!r}")
    block = encoder.blocks[2 * (int(match.group(1)) - 1) + int(match.group(2))]
    rest = match.group(3)
    if rest in ("conv1.weight", "conv2.weight"):
        return getattr(block, rest.split(".")[0]).kernel
    if rest in ("downsample.conv.weight", "downsample.0.weight"):
        return block.shortcut_conv.kernel
    match = re.fullmatch(r"(bn1|bn2|downsample\.bn|downsample\.1)\.(.+)", rest)
    if not match:
        raise KeyError(f"unknown reference key {key!r}")
    layer = {"bn1": block.bn1, "bn2": block.bn2}.get(match.group(1), block.shortcut_bn)
    return _bn_variable(layer, match.group(2), branches)


def to_keras(value: np.ndarray) -> np.ndarray:
    """A reference tensor in Keras layout: OIHW -> HWIO, (out, in) -> (in, out)."""
    if value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2:
        return value.T
    return value


def to_reference(value: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_keras`."""
    if value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))
    if value.ndim == 2:
        return value.T
    return value


def variable_map(keys, encoder, head=None, fc=None, branches=("normal", "adv")) -> dict:
    """``{reference key: acl-tf variable}`` for every key that has one."""
    out = {}
    for key in keys:
        var = keras_variable(key, encoder, head, fc, branches)
        if var is not None:
            out[key] = var
    return out


def load_into(weights: dict, encoder, head=None, fc=None, branches=("normal", "adv"),
              unassigned=()) -> dict:
    """Assigns the reference state_dict ``weights`` to the acl-tf layers (built); checks that the
    encoder's normalisation constants are the reference's and that every acl-tf variable of the
    layers received a value, except those whose path contains one of ``unassigned`` (e.g.
    ``"/normal/"``: the branch a single-BN reference model has no values for). Returns
    :func:`variable_map`."""
    mapping = variable_map(weights, encoder, head, fc, branches)
    for key, var in mapping.items():
        value = to_keras(weights[key])
        if tuple(var.shape) != value.shape:
            raise ValueError(f"{key}: reference shape {value.shape} != acl-tf {tuple(var.shape)}")
        var.assign(value)
    if "normalize.mean" in weights:
        # The encoder must normalise as the reference (ImageNet's mean/std); its constants are
        # then set to the reference's float32 buffers exactly, which matters in float64 only
        # (there the rounding of the constants, ~1e-8, is the only difference left and can turn
        # one ReLU of millions).
        np.testing.assert_allclose(encoder.normalize.mean, weights["normalize.mean"], rtol=1e-6)
        np.testing.assert_allclose(encoder.normalize.std, weights["normalize.std"], rtol=1e-6)
        encoder.normalize.mean = tuple(float(m) for m in weights["normalize.mean"])
        encoder.normalize.std = tuple(float(s) for s in weights["normalize.std"])
    assigned = {id(v) for v in mapping.values()}
    layers = [layer for layer in (encoder, head, fc) if layer is not None]
    missing = [v.path for layer in layers for v in layer.weights if id(v) not in assigned
               and not any(part in v.path for part in unassigned)]
    if missing:
        raise AssertionError(f"acl-tf variables without a reference value: {missing[:5]}")
    return mapping


def compare_packed(fixture: dict, prefix: str, keras_arrays: dict, keys, skip=()) -> dict:
    """Max abs and max relative difference between the reference's ``prefix`` entries and
    ``keras_arrays`` (``{key: array in Keras layout}``), over the stored indices and the norms.
    ``keys``: all keys of the state_dict, in order (a key's position picks its indices);
    ``skip``: keys not compared.

    Returns ``{"abs": ..., "rel": ..., "norm_rel": ..., "scale": ..., "worst": key}`` where
    ``rel`` is each tensor's max abs difference over its max abs reference value."""
    worst = {"abs": 0.0, "rel": 0.0, "norm_rel": 0.0, "scale": 0.0, "worst": None}
    for i, key in enumerate(keys):
        name = f"{prefix}/{key}"
        if name not in fixture or key in skip:
            continue
        ref = fixture[name].astype(np.float64)
        flat = to_reference(np.asarray(keras_arrays[key], np.float64)).ravel()
        ours = flat[sample_indices(flat.size, i)]
        diff = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        rel = diff / max(scale, 1e-30)
        ref_norm = float(fixture[f"{prefix}_norm/{key}"])
        norm_rel = abs(float(np.linalg.norm(flat)) - ref_norm) / max(ref_norm, 1e-30)
        if rel > worst["rel"]:
            worst.update(rel=rel, worst=key)
        worst["abs"] = max(worst["abs"], diff)
        worst["scale"] = max(worst["scale"], scale)
        worst["norm_rel"] = max(worst["norm_rel"], norm_rel)
    return worst
