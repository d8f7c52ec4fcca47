"""The semi-supervised routine (acl_tf.tasks.semisup): the vanilla routine in process with
resume, the student's checks of its pseudo-labels, missing inputs and flag errors."""

import os

import pytest

from acl_tf.configs import ConfigError, SemisupConfig, load_config
from acl_tf.data.pseudo_labels import PseudoLabelError

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(PROJECT_ROOT, "acl_tf", "data", "sample", "cifar10")


TINY = ["data.limit=200", "val_size=20", "labels_per_class=3", "label_fraction=null",
        "teacher.epochs=2", "teacher.batch_size=16", "student.batch_size=32",
        "student.attack.steps=1", "eval_attack.steps=2", "eval_batch_size=200"]


@pytest.mark.slow
def test_vanilla_routine_in_process_and_resume(tmp_path):
    """Without pre-training (vanilla UAT++): the whole routine, then resume skips every step."""
    from acl_tf.tasks.semisup import run_semisup

    config = load_config(SemisupConfig, "semisup", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "model.width=4", "teacher.epochs=1", "evaluate_test=false"])
    summary = run_semisup(config, tmp_path, verbose=0)
    assert summary["pretrained"] is None
    assert "teacher_test_accuracy" not in summary and "student_test_accuracy" not in summary
    assert 0.0 <= summary["pseudo_label_accuracy"] <= 1.0
    assert summary["student_best_epoch"] == 1 and summary["teacher_best_epoch"] == 1
    assert summary["num_labelled"] == 30 and summary["num_unlabelled"] == 150
    stamp = (tmp_path / "pseudo_labels.npz").stat().st_mtime_ns
    assert run_semisup(config, tmp_path, resume=True, verbose=0) == summary
    assert (tmp_path / "pseudo_labels.npz").stat().st_mtime_ns == stamp
    # A finished step is not overwritten without --resume.
    from acl_tf.tasks.fit import RunDirError
    from acl_tf.tasks.semisup import run_student

    with pytest.raises(RunDirError, match="--resume"):
        run_semisup(config, tmp_path, step="student", verbose=0)
    # The student refuses pseudo-labels made for another split or temperature.

    other = load_config(SemisupConfig, "semisup", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "model.width=4", "labels_per_class=4"])
    with pytest.raises(ConfigError, match="another label split"):
        run_student(other, tmp_path, verbose=0)
    hot = load_config(SemisupConfig, "semisup", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "model.width=4", "temperature=2"])
    with pytest.raises(ConfigError, match="T=1 but the config has temperature=2"):
        run_student(hot, tmp_path, verbose=0)
    fewer = load_config(SemisupConfig, "semisup", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "model.width=4", "data.limit=150"])
    with pytest.raises(PseudoLabelError, match="labels 200 images but the training data has 150"):
        run_student(fewer, tmp_path, verbose=0)


def test_missing_inputs_and_flag_errors(tmp_path):
    from acl_tf.cli.semisup import resolve_config
    from acl_tf.tasks.semisup import run_semisup

    config = load_config(SemisupConfig, "semisup", "smoke")
    with pytest.raises(ConfigError, match="No teacher classifier"):
        run_semisup(config, tmp_path, step="pseudo_label")
    with pytest.raises(PseudoLabelError, match="pseudo_labels.npz' does not exist"):
        run_semisup(config, tmp_path, step="student")
    with pytest.raises(ConfigError, match="--teacher is an input of --step=pseudo_label"):
        run_semisup(config, tmp_path, step="student", teacher="x.keras")
    with pytest.raises(ValueError, match="Unknown step"):
        run_semisup(config, tmp_path, step="distill")
    with pytest.raises(ConfigError, match="not both"):
        resolve_config("smoke", [], label_fraction=0.1, labels_per_class=3, model_dir=tmp_path)
    resolved = resolve_config("smoke", [], labels_per_class=3, model_dir=tmp_path)
    assert (resolved.labels_per_class, resolved.label_fraction) == (3, None)
