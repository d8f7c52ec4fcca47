"""A tiny pre-training run shared by the fine-tuning, linear-evaluation and encoder tests, and the
tiny pretrain overrides of the pretrain task and CLI tests."""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "acl_tf" / "data" / "sample" / "cifar10"

# Overrides of the ``smoke`` pretrain config for a run of seconds (the pretrain task and CLI tests).
TINY = ["model.width=4", "model.head_dim=16", "data.limit=64", "batch_size=32",
        "attack.steps=1", "log_every_steps=1"]


def tiny_pretraining_run(run_dir) -> Path:
    """A DS pre-training run (width 4, 64 images, one epoch) made with run_pretraining in
    ``run_dir``; returns it (it holds ``encoder.keras`` and ``pretrainer.keras``)."""
    from acl_tf.configs import PretrainConfig, load_config
    from acl_tf.tasks.pretrain import run_pretraining

    config = load_config(PretrainConfig, "pretrain", "smoke", [
        f"data.source={SAMPLE_DIR}", "model.width=4", "model.head_dim=16", "data.limit=64",
        "epochs=1", "batch_size=32", "attack.steps=1"])
    run_pretraining(config, run_dir, verbose=0)
    assert (Path(run_dir) / "encoder.keras").exists()
    return Path(run_dir)
