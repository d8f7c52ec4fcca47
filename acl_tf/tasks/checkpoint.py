"""Training checkpoints that record each variable's path, checked before every restore.

Keras 3 hides layers kept in Python lists from TensorFlow's object graph (only SavedModel export
sees them), so ``tf.train.Checkpoint(model=model)`` would silently skip most weights and BN
statistics. A checkpoint therefore holds the model's and the optimizer's variables flat, each
under a key made from its Keras ``variable.path``:

* ``model_variables/<path>``: every ``model.weights`` entry, ``<path>`` relative to the model
  (its own name, which Keras numbers ``finetuner_1``, ``finetuner_2``... when a process builds
  several, is left out);
* ``optimizer_state/<path>``: every ``model.optimizer.variables`` entry (slot names carry the
  model variable's path with ``_`` for ``/``; the model's own name is left out there too, and so
  is the number Keras 3.15+ appends to an optimizer's automatic name: ``sgd_2/iteration`` is
  keyed ``sgd/iteration``);
* ``epoch``: the number of finished epochs; and any extra trackables the caller adds.

Before restoring, the model's (path, shape) list is compared with the checkpoint's; the first
difference is a :class:`CheckpointError` naming the variable (and both shapes when they differ),
never a positional restore into the wrong variables.

Checkpoints written before this layout (acl-tf up to the run-directory contract: ``weights/0``,
``weights/1``, ..., ``optimizer_variables/0``, ... matched by position) are still restored when
they hold as many variables as the model and every shape matches position by position, with a
warning that names the legacy layout; the run's next checkpoint is written by path. (Refusing
them would throw away finished epochs of the very same model; the count and shape check catches
a different architecture, and the variable order of an unchanged model is deterministic.)

The encoder layout (``layout_version`` of :mod:`acl_tf.models.resnet`: the padding of the
stride-2 convolutions) is not a variable, so the checkpoints could not tell it: a run trained in
one layout would restore into the other without error and silently compute other features.
Every save therefore records the model's layout beside the checkpoints
(``checkpoints/encoder_layout.json``, :func:`acl_tf.core.run_dir.write_encoder_layout`), and a
restore into a model of another layout is a :class:`CheckpointError`. Checkpoints without that
record were written by an acl-tf that did not keep it:

* those in the legacy positional layout predate ``layout_version`` 2, so they are layout 1;
* a layout-1 model restores them: acl-tf builds one only from a ``.keras`` file of that layout
  (fine-tuning from an old encoder), and checkpoints of such a run are layout 1 whichever acl-tf
  wrote them (a resume must build its model from the same config and file);
* a layout-2 model refuses them: they may be either layout (layout 2 came before the record),
  and the error says how to record the layout the run was started with.

Pre-training rebuilds a resumed run in the layout :func:`run_layout` finds (recorded, or 1 for
legacy positional checkpoints); other models are built in layout 2 unless they start from a
layout-1 encoder file, and a mismatch is refused rather than continued in the other layout.

A corrupt or truncated checkpoint (unreadable index, data shorter than the index says, a
checksum mismatch) is skipped for the one before it, with a warning naming the bad file; when
none is left that is a :class:`CheckpointError`. Saves are atomic: the checkpoint is written into
``checkpoints/ckpt-N_temp_save/``, then its data and, last, its index are renamed into
``checkpoints/``; TensorFlow's state file is rewritten atomically after that.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf
from absl import logging

from acl_tf.core import run_dir as rd
from acl_tf.core.errors import CheckpointError
from acl_tf.models.resnet import LAYOUT_VERSION, LEGACY_LAYOUT_VERSION

MODEL = "model_variables"
OPTIMIZER = "optimizer_state"
EPOCH = "epoch"
LEGACY_MODEL = "weights"                  # the positional layout of earlier acl-tf versions
LEGACY_OPTIMIZER = "optimizer_variables"
_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
_SKIPPED = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/")
_LEGACY_KEY = re.compile(r"^(weights|optimizer_variables)/(\d+)/\.ATTRIBUTES/VARIABLE_VALUE$")


# -- keys ------------------------------------------------------------------------------------------
def escape(name: str) -> str:
    """TensorFlow's escaping of an object-graph edge name in a checkpoint key."""
    return name.replace(".", "..").replace("/", ".S")


def unescape(name: str) -> str:
    out, i = [], 0
    while i < len(name):
        if name[i] == "." and i + 1 < len(name):
            out.append("." if name[i + 1] == "." else "/" if name[i + 1] == "S" else name[i:i + 2])
            i += 2
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def _relative(path: str, model_name: str) -> str:
    """``path`` without the model's own (possibly numbered) name."""
    head, sep, rest = path.partition("/")
    if sep and head == model_name:
        return rest
    if sep and rest.startswith(model_name + "_"):    # optimizer slot: opt/<model>_<layer>_..._m
        return f"{head}/{rest[len(model_name) + 1:]}"
    return path


def _unique(paths: Sequence[str]) -> List[str]:
    seen: Dict[str, int] = {}
    out = []
    for path in paths:
        seen[path] = seen.get(path, 0) + 1
        out.append(path if seen[path] == 1 else f"{path}#{seen[path]}")
    return out


def _snake_case(name: str) -> str:
    """Keras' snake case of a class name (``SGD`` -> ``sgd``, ``LossScaleOptimizer`` ->
    ``loss_scale_optimizer``), the stem of an optimizer's automatic name."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def optimizer_names(optimizer) -> Dict[str, str]:
    """``{name: name in checkpoint keys}`` for ``optimizer`` (and the one a loss-scale optimizer
    wraps). Keras 3.15+ names an optimizer built without ``name=`` ``sgd``, ``sgd_1``,
    ``sgd_2``... in the order a process builds them (earlier versions gave each class one fixed
    name); the key drops that number, as it drops the model's, so that a resume in a new process
    or a second model in the same one finds the same keys."""
    out = {}
    for opt in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        name = getattr(opt, "name", None)
        if not isinstance(name, str):
            continue
        stem, sep, number = name.rpartition("_")
        numbered = sep and number.isdigit() and stem == _snake_case(type(opt).__name__)
        out[name] = stem if numbered else name
    return out


def variable_paths(variables, model_name: str,
                   renames: Optional[Dict[str, str]] = None) -> List[str]:
    """The checkpoint paths of ``variables``: Keras paths relative to the model, made unique
    (a repeated path gets ``#2``, ``#3``...). ``renames`` (an optimizer's
    :func:`optimizer_names`) replaces the name at the head of a path."""
    renames = renames or {}
    paths = []
    for v in variables:
        head, sep, rest = _relative(getattr(v, "path", None) or v.name, model_name).partition("/")
        paths.append(f"{renames.get(head, head)}{sep}{rest}" if sep else head)
    return _unique(paths)


def _shape(variable) -> Tuple[int, ...]:
    return tuple(int(d) for d in variable.shape)


def encoder_layout(model: keras.Model) -> Optional[int]:
    """The ``layout_version`` of the encoder in ``model`` (:mod:`acl_tf.models.resnet`), None
    for a model without one."""
    versions = {layer.layout_version for layer in model._flatten_layers(include_self=True)
                if isinstance(getattr(layer, "layout_version", None), int)}
    if len(versions) > 1:
        raise CheckpointError(f"{model.name} mixes encoder layouts {sorted(versions)}: its "
                              "checkpoints could not record which one it computes with.")
    return versions.pop() if versions else None


# -- the checkpoint of a model -----------------------------------------------------------------
class ModelCheckpoint:
    """The variables of a compiled Keras model (and its optimizer) as one checkpoint.

    ``save(n)`` writes ``run_dir/checkpoints/ckpt-n`` atomically and keeps the newest ``keep``;
    ``restore_latest(run_dir)`` restores the newest readable checkpoint of ``run_dir`` after
    checking it against the model, and returns its number (None when there is none).
    """

    def __init__(self, model: keras.Model, epoch: tf.Variable, run_dir, keep: int = 3,
                 extra_trackables: Optional[dict] = None):
        self.model, self.epoch, self.run_dir = model, epoch, Path(run_dir)
        self.keep = max(1, int(keep))
        self.extra = dict(extra_trackables or {})
        for name in self.extra:
            if name in (MODEL, OPTIMIZER, EPOCH, LEGACY_MODEL, LEGACY_OPTIMIZER):
                raise ValueError(f"extra trackable {name!r} clashes with the checkpoint layout")
        # Optimizer slots exist only after build(): build them so that a restore fills them in
        # place (inside the model's strategy, so that they are mirrored like the weights).
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)
        self.layout = encoder_layout(model)
        self.weights = list(model.weights)
        self.optimizer_variables = list(model.optimizer.variables)
        self.weight_paths = variable_paths(self.weights, model.name)
        self.optimizer_paths = variable_paths(self.optimizer_variables, model.name,
                                              optimizer_names(model.optimizer))
        self.checkpoint = tf.train.Checkpoint(
            **{MODEL: dict(zip(self.weight_paths, self.weights)),
               OPTIMIZER: dict(zip(self.optimizer_paths, self.optimizer_variables)),
               EPOCH: epoch}, **self.extra)

    # -- the expected contents --------------------------------------------------------------------
    def expected(self) -> List[Tuple[str, str, Tuple[int, ...]]]:
        """(checkpoint key, path, shape) of every model and optimizer variable, in model order."""
        out = []
        for group, paths, variables in ((MODEL, self.weight_paths, self.weights),
                                        (OPTIMIZER, self.optimizer_paths,
                                         self.optimizer_variables)):
            out += [(f"{group}/{escape(p)}{_VALUE}", p, _shape(v))
                    for p, v in zip(paths, variables)]
        return out

    def _own(self, key: str) -> bool:
        """Whether ``key`` of a checkpoint belongs to the model or optimizer (not to the epoch
        counter, the extra trackables or TensorFlow's bookkeeping)."""
        return key.startswith((f"{MODEL}/", f"{OPTIMIZER}/", f"{LEGACY_MODEL}/",
                               f"{LEGACY_OPTIMIZER}/"))

    # -- checks --------------------------------------------------------------------------------------
    def check(self, prefix, shapes: Dict[str, List[int]]) -> bool:
        """Compares the checkpoint's variables (``shapes``: key -> shape, as
        ``tf.train.load_checkpoint(prefix).get_variable_to_shape_map()`` gives) with the
        model's; raises :class:`CheckpointError` on the first difference. Returns True for the
        legacy positional layout."""
        if any(k.startswith(f"{MODEL}/") for k in shapes):
            self._check_by_path(prefix, shapes)
            return False
        if any(_LEGACY_KEY.match(k) for k in shapes):
            self._check_legacy(prefix, shapes)
            return True
        raise CheckpointError(
            f"{prefix}.index holds no model variables acl-tf would have written (neither "
            f"{MODEL}/... nor the legacy {LEGACY_MODEL}/0/...): it is not a checkpoint of this "
            "kind of run; point --model_dir at the run's own directory.")

    def _check_by_path(self, prefix, shapes) -> None:
        if EPOCH + _VALUE not in shapes:
            raise CheckpointError(f"{prefix}.index has no epoch counter ({EPOCH}); it was not "
                                  "written by acl-tf's training loop.")
        expected = self.expected()
        for key, path, shape in expected:
            if key not in shapes:
                group = "optimizer variable" if key.startswith(OPTIMIZER) else "variable"
                raise CheckpointError(
                    f"{prefix}: the model's {group} {path!r} (shape {list(shape)}) is not in "
                    "the checkpoint: it was written by a different model or optimizer; resume "
                    "with the run's own config or choose another --model_dir.")
            if tuple(shapes[key]) != shape:
                raise CheckpointError(
                    f"{prefix}: variable {path!r} has shape {list(shape)} in the model but "
                    f"{list(shapes[key])} in the checkpoint; resume with the run's own config "
                    "(model width, classes, head) or choose another --model_dir.")
        known = {key for key, _, _ in expected}
        for key in sorted(shapes):
            if self._own(key) and key not in known:
                group, _, rest = key.partition("/")
                path = unescape(rest[:-len(_VALUE)] if rest.endswith(_VALUE) else rest)
                raise CheckpointError(
                    f"{prefix}: the checkpoint's {'optimizer ' if group == OPTIMIZER else ''}"
                    f"variable {path!r} (shape {list(shapes[key])}) is not in the model: it "
                    "was written by a different model or optimizer; resume with the run's own "
                    "config or choose another --model_dir.")

    def _check_legacy(self, prefix, shapes) -> None:
        for group, paths, variables in ((LEGACY_MODEL, self.weight_paths, self.weights),
                                        (LEGACY_OPTIMIZER, self.optimizer_paths,
                                         self.optimizer_variables)):
            saved = {int(m.group(2)): shapes[k] for k in shapes
                     if (m := _LEGACY_KEY.match(k)) and m.group(1) == group}
            what = "model" if group == LEGACY_MODEL else "optimizer"
            if len(saved) != len(variables) or set(saved) != set(range(len(variables))):
                raise CheckpointError(
                    f"{prefix} (legacy positional layout) holds {len(saved)} {what} variables, "
                    f"the model has {len(variables)}: it was written for a different model or "
                    "optimizer; resume with the run's own config or start a new --model_dir.")
            for i, (path, variable) in enumerate(zip(paths, variables)):
                if tuple(saved[i]) != _shape(variable):
                    raise CheckpointError(
                        f"{prefix} (legacy positional layout): {what} variable {i} has shape "
                        f"{list(saved[i])} in the checkpoint but the model's {path!r} has "
                        f"{list(_shape(variable))}; it was written for a different model; "
                        "resume with the run's own config or start a new --model_dir.")
        if f"{EPOCH}{_VALUE}" not in shapes:
            raise CheckpointError(f"{prefix}.index has no epoch counter ({EPOCH}).")

    def check_layout(self, prefix, legacy: bool = False) -> None:
        """Raises :class:`CheckpointError` unless checkpoint ``prefix`` (``legacy``: in the
        positional layout) was computed with the model's encoder layout (module docstring)."""
        if self.layout is None:
            return
        run_dir = Path(prefix).parent.parent
        record = rd.encoder_layout_file(run_dir)
        recorded = rd.read_encoder_layout(run_dir)
        if recorded is None and legacy:
            recorded, source = LEGACY_LAYOUT_VERSION, (
                "its legacy positional format is older than layout_version "
                f"{LAYOUT_VERSION}")
        else:
            source = f"recorded in {record}"
        if recorded == self.layout or (recorded is None
                                       and self.layout == LEGACY_LAYOUT_VERSION):
            return
        same = ("Both layouts have the same variables, so the restore would succeed and the run "
                "would silently go on computing other features than it trained with")
        if recorded is None:
            raise CheckpointError(
                f"{prefix}: the run's checkpoints do not record their encoder layout ({record} "
                "is missing): they were written by an acl-tf that did not record it, in "
                f"layout_version {LEGACY_LAYOUT_VERSION} (before acl-tf matched PyTorch's "
                f"padding) or {LAYOUT_VERSION} (this model's). {same} if it was layout "
                f"{LEGACY_LAYOUT_VERSION}. If the run was started by an acl-tf whose encoders "
                f'record layout_version {LAYOUT_VERSION} (its .keras files hold '
                f'"layout_version": {LAYOUT_VERSION}), write {{"layout_version": '
                f"{LAYOUT_VERSION}}} to {record} and resume again; if it was started before, "
                "this acl-tf cannot resume it (it builds new models in layout "
                f"{LAYOUT_VERSION}): start a new run in another --model_dir.")
        if recorded == LEGACY_LAYOUT_VERSION and self.layout == LAYOUT_VERSION:
            advice = (f"acl-tf pretrain --resume rebuilds a layout-{LEGACY_LAYOUT_VERSION} run in "
                      "its layout; other models are built in layout "
                      f"{LAYOUT_VERSION} unless they start from an encoder file of layout "
                      f"{LEGACY_LAYOUT_VERSION} (the weights cannot be converted): resume with "
                      "the command and encoder the run started from, or start a new run in "
                      "another --model_dir")
        else:
            advice = ("resume with the encoder the run started from (the same config and "
                      "encoder file) or choose another --model_dir")
        raise CheckpointError(
            f"{prefix} was computed with encoder layout_version {recorded} ({source}), but the "
            f"model to restore it into has layout_version {self.layout}. {same}; {advice}.")

    # -- restore -----------------------------------------------------------------------------------
    def _legacy_checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(**{LEGACY_MODEL: list(self.weights),
                                      LEGACY_OPTIMIZER: list(self.optimizer_variables),
                                      EPOCH: self.epoch}, **self.extra)

    def restore(self, prefix) -> None:
        """Checks, verifies (every tensor read, checksums included) and restores one checkpoint.
        Raises :class:`CheckpointError` for a model mismatch and ``_Unreadable`` for a corrupt
        file."""
        prefix = str(prefix)
        try:
            reader = tf.train.load_checkpoint(prefix)
            shapes = reader.get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError, IndexError, OSError) as err:
            raise _Unreadable(f"{prefix}.index", err) from err
        legacy = self.check(prefix, shapes)
        self.check_layout(prefix, legacy)
        try:
            for key in shapes:
                reader.get_tensor(key)
        except (tf.errors.OpError, ValueError, IndexError, OSError) as err:
            data = sorted(Path(prefix).parent.glob(Path(prefix).name + ".data-*"))
            raise _Unreadable(", ".join(str(d) for d in data) or f"{prefix}.data-*", err) from err
        if legacy:
            logging.warning(
                "%s was written in the legacy positional checkpoint layout (weights/0, "
                "weights/1, ... of acl-tf before the run-directory contract): restoring it "
                "position by position (count and every shape match); the next checkpoint is "
                "saved by variable path.", prefix)
            self._legacy_checkpoint().read(prefix).assert_existing_objects_matched()
        else:
            self.checkpoint.read(prefix).assert_existing_objects_matched()

    def restore_latest(self, run_dir) -> Optional[int]:
        """Restores the newest readable checkpoint of ``run_dir``; returns its number, or None
        (with a warning) when ``run_dir`` holds no checkpoint."""
        numbers = rd.checkpoint_numbers(run_dir)
        if not numbers:
            logging.warning("--resume: %s holds no checkpoint; starting afresh",
                            rd.checkpoints_dir(run_dir))
            return None
        bad = []
        for number in reversed(numbers):
            prefix = rd.checkpoint_prefix(run_dir, number)
            try:
                self.restore(prefix)
            except _Unreadable as err:
                bad.append(err.file)
                logging.warning("checkpoint %s is unreadable (%s: %s): %s", prefix, err.file,
                                err.cause, "trying the one before" if number != numbers[0]
                                else "no earlier checkpoint left")
                continue
            return number
        raise CheckpointError(
            f"No readable checkpoint left in {rd.checkpoints_dir(run_dir)}: "
            f"{'; '.join(bad)} corrupt or truncated. Restore them from a backup, or start "
            "afresh in a new --model_dir.")

    # -- save -----------------------------------------------------------------------------------------
    def save(self, number: int) -> Path:
        """Writes checkpoint ``number`` atomically into ``run_dir/checkpoints``, updates the
        state file and deletes all but the newest ``keep`` (and any numbered past ``number``: the
        corrupt ones a resume skipped); returns its prefix."""
        folder = rd.checkpoints_dir(self.run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = rd.checkpoint_name(number)
        staging = folder / f"{name}{rd.TEMP_MARK}_save"
        shutil.rmtree(staging, ignore_errors=True)
        self.checkpoint.write(str(staging / name))
        if self.layout is not None:   # before the index: no checkpoint without its layout
            rd.write_encoder_layout(self.run_dir, self.layout)
        # An existing checkpoint of that number (one found corrupt) disappears first, index first.
        rd.remove_checkpoint(self.run_dir, number)
        for data in sorted(staging.glob(f"{name}.data-*")):
            os.replace(data, folder / data.name)
        os.replace(staging / f"{name}.index", rd.index_file(self.run_dir, number))
        shutil.rmtree(staging, ignore_errors=True)
        # Checkpoints numbered past this one can only be corrupt ones the restore skipped.
        numbers = [n for n in rd.checkpoint_numbers(self.run_dir) if n <= number]
        for newer in rd.checkpoint_numbers(self.run_dir)[len(numbers):]:
            rd.remove_checkpoint(self.run_dir, newer)
        for old in numbers[:-self.keep]:
            rd.remove_checkpoint(self.run_dir, old)
        rd.write_checkpoint_state(self.run_dir, numbers[-self.keep:])
        return rd.checkpoint_prefix(self.run_dir, number)


class _Unreadable(Exception):
    """A checkpoint file that cannot be read (internal: restore_latest falls back past it)."""

    def __init__(self, file: str, cause: BaseException):
        super().__init__(f"{file}: {cause}")
        self.file, self.cause = file, cause


def run_layout(run_dir) -> Optional[int]:
    """The encoder layout a resumed run must be built in: the one recorded beside its
    checkpoints, :data:`LEGACY_LAYOUT_VERSION` for a run whose latest checkpoint is in the
    legacy positional format (older than layout 2), None when neither says (build the current
    layout; :meth:`ModelCheckpoint.check_layout` then decides)."""
    recorded = rd.read_encoder_layout(run_dir)
    if recorded is not None:
        return recorded
    latest = rd.latest_checkpoint(run_dir)
    if latest is None:
        return None
    try:
        keys = tf.train.load_checkpoint(str(latest)).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError, IndexError, OSError):
        return None      # unreadable: the restore reports it (or falls back past it)
    return LEGACY_LAYOUT_VERSION if any(_LEGACY_KEY.match(k) for k in keys) else None
