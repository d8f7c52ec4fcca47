"""Linear separability (acl_tf.tasks.linear_eval): SLF / ALF runs per BN branch and their table."""

import json
import os

import pytest
from pretrain_helpers import tiny_pretraining_run

from acl_tf.configs import FinetuneConfig, load_config
from acl_tf.tasks.selection import read_metrics

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(PROJECT_ROOT, "acl_tf", "data", "sample", "cifar10")


TINY = ["data.limit=120", "val_size=20", "epochs=2", "eval_batch_size=200", "eval_attack.steps=2"]


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A tiny DS pre-training run (width 4) made with run_pretraining."""
    return tiny_pretraining_run(tmp_path_factory.mktemp("pretrained"))


@pytest.mark.slow
def test_linear_separability_table(pretrained_dir, tmp_path):
    from acl_tf.tasks.linear_eval import run_linear_separability

    config = load_config(FinetuneConfig, "finetune", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "epochs=1", "export=false"])
    rows = run_linear_separability(config, tmp_path, pretrained=str(pretrained_dir),
                                   protocols=(("slf", "adv"), ("alf", "normal")))
    assert [(r["protocol"], r["bn"]) for r in rows] == [("SLF", "adv"), ("ALF", "normal")]
    table = (tmp_path / "linear_separability.md").read_text()
    assert "| SLF | adv |" in table and "| ALF | normal |" in table and "PGD-2" in table
    saved = json.loads((tmp_path / "linear_separability.json").read_text())
    assert saved["rows"] == rows
    for row in rows:
        metrics = read_metrics(row["run_dir"])
        assert (row["ta"], row["ra"]) == (metrics["test"]["acc"], metrics["test"]["adv_acc"])
        assert metrics["mode"] == row["protocol"].lower()
