"""The run-directory contract (acl_tf.core.run_dir): checkpoints found by reading the directory,
the checks before a run, leftovers of killed saves, and the undo of a run that fails before its
first checkpoint. No TensorFlow here: checkpoints are empty files with the right names."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from acl_tf.core import run_dir as rd
from acl_tf.core.errors import AclTfError, RunDirError


@dataclasses.dataclass
class Inner:
    width: int = 4


@dataclasses.dataclass
class Config:
    epochs: int = 2
    model: Inner = dataclasses.field(default_factory=Inner)


def write_config(config, path):
    Path(path).write_text(json.dumps(dataclasses.asdict(config)))


def read_config(path):
    values = json.loads(Path(path).read_text())
    return Config(epochs=values["epochs"], model=Inner(**values["model"]))


def prepare(model_dir, config=None, resume=False, write=True):
    return rd.prepare(model_dir, config or Config(), resume, write=write,
                      read_config=read_config, write_config=write_config)


def touch_checkpoint(run_dir, number, shards=1):
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ckpt-{number}.index").write_bytes(b"i")
    for k in range(shards):
        (folder / f"ckpt-{number}.data-{k:05d}-of-{shards:05d}").write_bytes(b"d")


def test_the_module_needs_no_tensorflow():
    code = ("import sys; import acl_tf.core.run_dir, acl_tf.core.errors, acl_tf.core.io; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]


def test_file_names():
    assert (rd.CONFIG, rd.CHECKPOINTS, rd.HISTORY, rd.CURVES) == (
        "config.json", "checkpoints", "history.json", "training_curves.png")
    assert (rd.BEST, rd.LAST, rd.METRICS, rd.SAVED_MODEL, rd.PSEUDO_LABELS) == (
        "best.keras", "last.keras", "metrics.json", "saved_model", "pseudo_labels.npz")
    assert rd.checkpoint_prefix("/r", 12) == Path("/r/checkpoints/ckpt-12")


def test_checkpoints_are_found_by_their_index_files(tmp_path):
    assert rd.checkpoint_numbers(tmp_path) == [] and rd.latest_checkpoint(tmp_path) is None
    for n in (2, 10, 9):
        touch_checkpoint(tmp_path, n)
    # No index: not a checkpoint (a save that never finished).
    (tmp_path / "checkpoints" / "ckpt-11.data-00000-of-00001").write_bytes(b"d")
    (tmp_path / "checkpoints" / "ckpt-3_temp").mkdir()
    assert rd.checkpoint_numbers(tmp_path) == [2, 9, 10]   # numeric, not lexical, order
    assert rd.latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "ckpt-10"
    assert rd.has_checkpoint(tmp_path)
    touch_checkpoint(tmp_path, 4, shards=2)
    assert [p.name for p in rd.data_files(tmp_path, 4)] == [
        "ckpt-4.data-00000-of-00002", "ckpt-4.data-00001-of-00002"]


def test_state_file_is_tensorflows_format(tmp_path):
    touch_checkpoint(tmp_path, 3)
    rd.write_checkpoint_state(tmp_path, [2, 3])
    text = (tmp_path / "checkpoints" / "checkpoint").read_text()
    assert text.splitlines() == ['model_checkpoint_path: "ckpt-3"',
                                 'all_model_checkpoint_paths: "ckpt-2"',
                                 'all_model_checkpoint_paths: "ckpt-3"']


def test_remove_checkpoint_and_partial_saves(tmp_path):
    touch_checkpoint(tmp_path, 1)
    touch_checkpoint(tmp_path, 2, shards=2)
    folder = tmp_path / "checkpoints"
    (folder / "ckpt-3_temp").mkdir()
    (folder / "ckpt-3_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    (folder / "ckpt-4_temp_save").mkdir()
    (folder / "ckpt-5.data-00000-of-00001").write_bytes(b"orphan")
    rd.write_checkpoint_state(tmp_path, [1, 2])
    removed = rd.remove_partial_saves(tmp_path)
    assert sorted(p.name for p in removed) == ["ckpt-3_temp", "ckpt-4_temp_save",
                                               "ckpt-5.data-00000-of-00001"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
        "ckpt-2.data-00000-of-00002", "ckpt-2.data-00001-of-00002", "ckpt-2.index"]
    rd.remove_checkpoint(tmp_path, 2)
    assert rd.checkpoint_numbers(tmp_path) == [1] and not rd.data_files(tmp_path, 2)
    assert rd.remove_partial_saves(tmp_path / "nowhere") == []


# -- prepare / check ------------------------------------------------------------------------------
def test_prepare_creates_the_directory_and_writes_the_config(tmp_path):
    out = prepare(tmp_path / "a" / "run", Config(epochs=5))
    assert out == tmp_path / "a" / "run"
    assert read_config(out / "config.json") == Config(epochs=5)


def test_prepare_without_write_only_checks(tmp_path):
    prepare(tmp_path / "run", write=False)
    assert not (tmp_path / "run").exists()
    touch_checkpoint(tmp_path / "run", 1)
    with pytest.raises(RunDirError, match="--resume"):
        prepare(tmp_path / "run", write=False)


def test_existing_checkpoints_need_resume(tmp_path):
    prepare(tmp_path)
    touch_checkpoint(tmp_path, 1)
    with pytest.raises(RunDirError, match="already holds checkpoints; pass --resume") as err:
        prepare(tmp_path)
    assert isinstance(err.value, AclTfError) and str(tmp_path) in str(err.value)
    assert prepare(tmp_path, resume=True) == tmp_path


def test_resume_names_the_first_differing_field(tmp_path):
    prepare(tmp_path, Config(epochs=2, model=Inner(width=4)))
    with pytest.raises(RunDirError, match=r"config differs .*field model\.width: saved 4, now 8"):
        prepare(tmp_path, Config(epochs=2, model=Inner(width=8)), resume=True)
    with pytest.raises(RunDirError, match=r"field epochs: saved 2, now 3"):
        prepare(tmp_path, Config(epochs=3, model=Inner(width=8)), resume=True)
    # Nothing was overwritten by the refused runs.
    assert read_config(tmp_path / "config.json") == Config(epochs=2, model=Inner(width=4))


def test_model_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        prepare(tmp_path / "f")


def test_prepare_removes_leftovers_of_a_killed_save(tmp_path):
    touch_checkpoint(tmp_path, 1)
    (tmp_path / "checkpoints" / "ckpt-2_temp").mkdir()
    prepare(tmp_path, resume=True)
    assert not (tmp_path / "checkpoints" / "ckpt-2_temp").exists()
    assert rd.checkpoint_numbers(tmp_path) == [1]


# -- undo of a failed run --------------------------------------------------------------------------
class Refused(Exception):
    pass


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")

    @rd.cleanup_on_failure()
    def run(model_dir):
        prepare(model_dir)
        (Path(model_dir) / "logs").mkdir()
        raise Refused("bad data")

    with pytest.raises(Refused):
        run(tmp_path / "new" / "deeper" / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]   # "new/" went too


def test_in_an_existing_directory_only_new_entries_go(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    with pytest.raises(Refused):
        with rd.cleanup_on_failure():
            prepare(tmp_path)
            (tmp_path / "logs").mkdir()
            raise Refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]


def test_a_resumed_run_keeps_its_existing_config(tmp_path):
    prepare(tmp_path / "run")
    with pytest.raises(Refused):
        with rd.cleanup_on_failure():
            prepare(tmp_path / "run", resume=True)   # no checkpoint yet: starts afresh
            raise Refused
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]


def test_a_run_with_a_checkpoint_is_kept(tmp_path):
    with pytest.raises(Refused):
        with rd.cleanup_on_failure():
            prepare(tmp_path / "run")
            touch_checkpoint(tmp_path / "run", 1)
            raise Refused
    assert rd.checkpoint_numbers(tmp_path / "run") == [1]
    assert (tmp_path / "run" / "config.json").exists()


def test_refused_resume_over_checkpoints_removes_nothing(tmp_path):
    prepare(tmp_path / "run")
    touch_checkpoint(tmp_path / "run", 1)
    with pytest.raises(RunDirError):
        with rd.cleanup_on_failure():
            prepare(tmp_path / "run")
    assert rd.checkpoint_numbers(tmp_path / "run") == [1]


def test_nested_runs(tmp_path):
    """A sub-run (semisup teacher) with checkpoints keeps the parent it lives in; a finished
    sub-run without checkpoints is handed to the enclosing block and undone with it."""
    out = tmp_path / "out"
    with pytest.raises(Refused):
        with rd.cleanup_on_failure():
            rd.make_dir(out)
            with rd.cleanup_on_failure():
                prepare(out / "teacher")
                touch_checkpoint(out / "teacher", 1)
            raise Refused      # e.g. the pseudo-label step
    assert rd.checkpoint_numbers(out / "teacher") == [1]

    other = tmp_path / "other"
    with pytest.raises(Refused):
        with rd.cleanup_on_failure():
            rd.make_dir(other)
            with rd.cleanup_on_failure():
                prepare(other / "student")
            raise Refused
    assert not other.exists()


def test_success_and_no_context_keep_everything(tmp_path):
    with rd.cleanup_on_failure():
        prepare(tmp_path / "a")
    assert (tmp_path / "a" / "config.json").exists()
    prepare(tmp_path / "b")   # outside any block: nothing recorded, nothing undone
    assert (tmp_path / "b" / "config.json").exists()
