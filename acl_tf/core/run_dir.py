"""The run-directory contract: what every training run writes, under which name, and the checks
made before a run starts in (or resumes from) a directory.

A run directory (``--model_dir``) holds:

=====================  ==========================================================================
``config.json``        the resolved, typed config of the run (written first)
``checkpoints/``       one checkpoint per epoch (``ckpt-N.index`` + ``ckpt-N.data-*``, N = the
                       epoch), the last few kept, TensorFlow's ``checkpoint`` state file and
                       ``encoder_layout.json``: ``{"layout_version": N}``, the encoder layout
                       (:mod:`acl_tf.models.resnet`) the checkpoints were computed with
``logs/``              TensorBoard summaries
``history.json``       one entry per finished epoch
``training_curves.png``  the history, redrawn every epoch
``encoder.keras``      pre-training: the encoder with both BN branches
``pretrainer.keras``   pre-training: encoder + projection head
``best.keras``         fine-tuning: the epoch selected on the validation split
``last.keras``         fine-tuning: the last epoch
``metrics.json``       fine-tuning / semi-supervised: selection and test metrics
``saved_model/N/``     the exported SavedModel, version N
``pseudo_labels.npz``  semi-supervised: the soft pseudo-labels of every training image
``teacher/``, ``student/``  semi-supervised: the two training runs, each a run directory
``linear_separability.{json,md}``  linear evaluation: one row per protocol (runs in sub-folders)
``imported.json``      an imported PyTorch checkpoint: its source, layout and what was read
=====================  ==========================================================================

Library code, command lines and pipeline components name these files through the constants
below, never through string literals.

A checkpoint exists once its ``ckpt-N.index`` does: a save writes into a ``ckpt-N_temp*``
directory and moves the data file(s), then the index, into ``checkpoints/`` (see
:mod:`acl_tf.tasks.checkpoint`), so a run killed while saving leaves the previous checkpoint in
force and a leftover that :func:`remove_partial_saves` deletes on the next start.

A run that fails before its first checkpoint (a config error, missing data, ...) leaves nothing
behind: inside :func:`cleanup_on_failure`, what :func:`prepare` / :func:`make_dir` created is
removed again (never anything that existed before).

This module needs no TensorFlow: it finds checkpoints by reading the directory.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

from absl import logging

from acl_tf.core.errors import RunDirError
from acl_tf.core.io import write_text_atomic

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
HISTORY = "history.json"
CURVES = "training_curves.png"
ENCODER = "encoder.keras"
PRETRAINER = "pretrainer.keras"
BEST = "best.keras"
LAST = "last.keras"
METRICS = "metrics.json"
SAVED_MODEL = "saved_model"
PSEUDO_LABELS = "pseudo_labels.npz"
TEACHER = "teacher"
STUDENT = "student"
LINEAR_SUMMARY = "linear_separability.json"
LINEAR_TABLE = "linear_separability.md"
IMPORTED = "imported.json"

CHECKPOINT_STATE = "checkpoint"     # TensorFlow's state file (tf.train.latest_checkpoint reads it)
ENCODER_LAYOUT = "encoder_layout.json"   # in checkpoints/: the encoder layout_version of the run
CHECKPOINT_PREFIX = "ckpt"          # checkpoint N is checkpoints/ckpt-N.{index,data-*}
TEMP_MARK = "_temp"                 # ckpt-N_temp*: a save in progress (TF's own and ours)

_INDEX = re.compile(r"^ckpt-(\d+)\.index$")
_DATA = re.compile(r"^ckpt-(\d+)\.data-\d+-of-\d+$")


# -- checkpoints, found by reading the directory ----------------------------------------------------
def checkpoints_dir(run_dir) -> Path:
    return Path(run_dir) / CHECKPOINTS


def checkpoint_name(number: int) -> str:
    """``ckpt-N``: the prefix of checkpoint ``number`` inside ``checkpoints/``."""
    return f"{CHECKPOINT_PREFIX}-{int(number)}"


def checkpoint_prefix(run_dir, number: int) -> Path:
    """``run_dir/checkpoints/ckpt-N``: what TensorFlow's checkpoint readers take."""
    return checkpoints_dir(run_dir) / checkpoint_name(number)


def index_file(run_dir, number: int) -> Path:
    return checkpoints_dir(run_dir) / f"{checkpoint_name(number)}.index"


def data_files(run_dir, number: int) -> List[Path]:
    """The ``ckpt-N.data-K-of-M`` shards of checkpoint ``number`` that are present."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if (m := _DATA.match(p.name)) and int(m.group(1)) == int(number))


def checkpoint_numbers(run_dir) -> List[int]:
    """The numbers N of the checkpoints in ``run_dir/checkpoints`` (those with a ``ckpt-N.index``),
    oldest first."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _INDEX.match(p.name)))


def latest_checkpoint(run_dir) -> Optional[Path]:
    """The prefix of the newest checkpoint in ``run_dir`` (None if there is none)."""
    numbers = checkpoint_numbers(run_dir)
    return checkpoint_prefix(run_dir, numbers[-1]) if numbers else None


def has_checkpoint(run_dir) -> bool:
    return bool(checkpoint_numbers(run_dir))


def write_checkpoint_state(run_dir, numbers) -> None:
    """Writes TensorFlow's ``checkpoints/checkpoint`` state file (atomically) listing ``numbers``,
    the last one the latest, so that ``tf.train.latest_checkpoint`` and TensorBoard find them."""
    numbers = [int(n) for n in numbers]
    if not numbers:
        return
    lines = [f'model_checkpoint_path: "{checkpoint_name(numbers[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{checkpoint_name(n)}"' for n in numbers]
    write_text_atomic(checkpoints_dir(run_dir) / CHECKPOINT_STATE, "\n".join(lines) + "\n")


def encoder_layout_file(run_dir) -> Path:
    """``run_dir/checkpoints/encoder_layout.json``: the encoder layout of the run's checkpoints."""
    return checkpoints_dir(run_dir) / ENCODER_LAYOUT


def read_encoder_layout(run_dir) -> Optional[int]:
    """The encoder ``layout_version`` recorded beside the checkpoints of ``run_dir``; None when
    none is recorded (checkpoints of an acl-tf that did not record it, or of a model without an
    encoder). A file that cannot be read is a :class:`RunDirError`."""
    path = encoder_layout_file(run_dir)
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())["layout_version"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"layout_version {value!r} is not an integer")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunDirError(f"{path} cannot be read ({err!r}): it should hold "
                          '{"layout_version": N}, the encoder layout the run\'s checkpoints were '
                          "computed with.") from err
    return value


def write_encoder_layout(run_dir, layout_version: int) -> None:
    """Records (atomically) the encoder ``layout_version`` of the run's checkpoints."""
    write_text_atomic(encoder_layout_file(run_dir),
                      json.dumps({"layout_version": int(layout_version)}) + "\n")


def remove_checkpoint(run_dir, number: int) -> None:
    """Deletes checkpoint ``number``: its index first (the checkpoint is gone from then on), then
    its data."""
    index_file(run_dir, number).unlink(missing_ok=True)
    for path in data_files(run_dir, number):
        path.unlink(missing_ok=True)


def remove_partial_saves(run_dir) -> List[Path]:
    """Deletes what a save killed midway left in ``run_dir/checkpoints``: ``ckpt-N_temp*``
    directories (TensorFlow's and :mod:`acl_tf.tasks.checkpoint`'s) and data files whose index was
    never written. Returns the paths removed (each also logged as a warning)."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    indexed = set(checkpoint_numbers(run_dir))
    removed = []
    for path in sorted(folder.iterdir()):
        partial = (path.name.startswith(f"{CHECKPOINT_PREFIX}-") and TEMP_MARK in path.name)
        orphan = (m := _DATA.match(path.name)) is not None and int(m.group(1)) not in indexed
        if not (partial or orphan):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        logging.warning("removed %s, left by a checkpoint save that did not finish", path)
        removed.append(path)
    return removed


# -- preparing a run directory ----------------------------------------------------------------------
def _flat(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flat(item, f"{prefix}{key}.")
    else:
        yield prefix[:-1], value


def _first_difference(saved, config) -> str:
    """``field: saved X, now Y`` for the first field in which two configs differ."""
    if not (dataclasses.is_dataclass(saved) and dataclasses.is_dataclass(config)):
        return f"saved {saved!r}, now {config!r}"
    old, new = dict(_flat(dataclasses.asdict(saved))), dict(_flat(dataclasses.asdict(config)))
    for key in list(new) + [k for k in old if k not in new]:
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            return (f"field {key}: saved {json.dumps(old.get(key, '<absent>'))}, "
                    f"now {json.dumps(new.get(key, '<absent>'))}")
    return f"saved {json.dumps(dataclasses.asdict(saved))}"


def check(model_dir, config, resume: bool, read_config: Callable[[Path], Any]) -> Path:
    """The checks made before a run starts in ``model_dir``; creates and writes nothing.

    * ``model_dir`` must be a directory (or not exist yet);
    * existing checkpoints are never started over: without ``resume`` that is a
      :class:`RunDirError` (pass ``--resume`` or choose another directory);
    * on ``resume`` the saved ``config.json`` (read with ``read_config(path)``) must equal
      ``config``; the error names the first differing field.
    """
    model_dir = Path(model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise RunDirError(f"--model_dir {str(model_dir)!r} is a file; pass a directory (new or a "
                          "run directory to --resume).")
    if has_checkpoint(model_dir) and not resume:
        raise RunDirError(f"{model_dir} already holds checkpoints; pass --resume to continue "
                          "that run or choose another --model_dir.")
    config_file = model_dir / CONFIG
    if resume and config_file.exists():
        saved = read_config(config_file)
        if saved != config:
            raise RunDirError(f"--resume: the config differs from {config_file} "
                              f"({_first_difference(saved, config)}); resume with the same "
                              "config or choose another --model_dir.")
    return model_dir


def prepare(model_dir, config, resume: bool, *, read_config: Callable[[Path], Any],
            write_config: Callable[[Any, Path], None], write: bool = True) -> Path:
    """Runs :func:`check`, then creates ``model_dir`` (:func:`make_dir`), removes the leftovers
    of a killed save (:func:`remove_partial_saves`) and writes ``config.json`` with
    ``write_config(config, path)``. With ``write=False`` (a non-chief worker of a multi-worker job)
    only the checks run, so that every worker fails alike, and nothing is written."""
    model_dir = check(model_dir, config, resume, read_config)
    if not write:
        return model_dir
    make_dir(model_dir)
    remove_partial_saves(model_dir)
    write_config(config, model_dir / CONFIG)
    return model_dir


# -- undoing a run that failed before its first checkpoint -----------------------------------------
@dataclasses.dataclass(frozen=True)
class _Made:
    run_dir: Path
    root: Optional[Path]          # the topmost directory created (None: run_dir existed)
    before: frozenset             # run_dir's entries before, when it existed

    def holds_checkpoint(self) -> bool:
        # The run's own checkpoints and those of its sub-runs (semisup: teacher/, student/).
        return any(self.run_dir.glob(f"{CHECKPOINTS}/{CHECKPOINT_PREFIX}-*.index")) or any(
            self.run_dir.glob(f"*/{CHECKPOINTS}/{CHECKPOINT_PREFIX}-*.index"))

    def undo(self) -> None:
        if not self.run_dir.is_dir() or self.holds_checkpoint():
            return
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            logging.warning("removed %s: the run failed before its first checkpoint", self.root)
            return
        for path in sorted(self.run_dir.iterdir()):
            if path.name in self.before:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            logging.warning("removed %s: the run failed before its first checkpoint", path)


_MADE: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("acl_tf_run_dirs_made",
                                                                       default=None)


def make_dir(path) -> Path:
    """``mkdir -p path``; inside :func:`cleanup_on_failure` it also records what it creates (the
    directory and missing parents, or, for an existing directory, the entries it holds now)."""
    path = Path(path)
    root = None
    if not path.exists():
        root = path.absolute()
        while not root.parent.exists() and root.parent != root:
            root = root.parent
    before = frozenset(p.name for p in path.iterdir()) if path.is_dir() else frozenset()
    path.mkdir(parents=True, exist_ok=True)
    made = _MADE.get()
    if made is not None:
        made.append(_Made(path, root, before))
    return path


@contextlib.contextmanager
def cleanup_on_failure() -> Iterator[None]:
    """Context manager and decorator (``@cleanup_on_failure()``) of a run: if the block raises
    while no checkpoint has been written to a directory that :func:`prepare` / :func:`make_dir`
    made inside it, what they created is removed (a whole directory they created, or, in a
    directory that existed, the entries that were not there before) and the error propagates.
    Nested blocks hand what they made to the enclosing one when they succeed."""
    made: list = []
    outer = _MADE.get()
    token = _MADE.set(made)
    try:
        yield
    except BaseException:
        for record in reversed(made):
            record.undo()
        raise
    finally:
        _MADE.reset(token)
    if outer is not None:
        outer.extend(made)
