"""The learning rate of every update of short runs, against the reference scripts' schedulers
(``tests/parity/schedules.npz``, ``scripts/parity/make_vectors.py``): pre-training's
``cosine_annealing`` in a ``LambdaLR`` stepped before each batch (``train_simCLR.py``),
fine-tuning's ``MultiStepLR`` stepped before each epoch (``train_trades.py``, defaults and the
README command).
acl-tf's schedules come from the ``*_official`` presets, evaluated at the optimizer's iteration
count of each update."""

import numpy as np
import pytest

import parity_helpers as ph
from acl_tf.configs import FinetuneConfig, PretrainConfig
from acl_tf.configs.loader import load_config
from acl_tf.optimizers import build_finetune_optimizer, build_pretrain_optimizer

RTOL = 1e-6


@pytest.fixture(scope="module")
def vec():
    return ph.load("schedules")


def _rates(optimizer, steps):
    schedule = optimizer._learning_rate
    if not callable(schedule):
        return np.full(steps, float(schedule))
    return np.array([float(schedule(i)) for i in range(steps)])


@pytest.mark.parametrize("run", ["pretrain", "pretrain_long"])
def test_pretraining_schedule_matches_reference(vec, run):
    config = load_config(PretrainConfig, "pretrain", "cifar10_official")
    epochs, per_epoch = int(vec[f"{run}/epochs"]), int(vec[f"{run}/steps_per_epoch"])
    assert config.optimizer.learning_rate == float(vec[f"{run}/base_lr"])
    optimizer = build_pretrain_optimizer(config.optimizer, config.batch_size, per_epoch, epochs)
    ref = vec[f"{run}/lr"]
    ours = _rates(optimizer, len(ref))
    ph.check_close(f"schedule {run} ({epochs} epochs x {per_epoch} steps)", ours, ref, RTOL)
    assert ours[0] > 0 and ours[-1] == pytest.approx(1e-6)


@pytest.mark.parametrize("run,preset", [("finetune", "cifar10_official"),
                                        ("finetune_readme", "cifar10_official_public")])
def test_finetuning_schedule_matches_reference(vec, run, preset):
    config = load_config(FinetuneConfig, "finetune", preset)
    epochs, per_epoch = int(vec[f"{run}/epochs"]), int(vec[f"{run}/steps_per_epoch"])
    assert (config.epochs, config.optimizer.learning_rate) == (epochs, float(vec[f"{run}/base_lr"]))
    ref = vec[f"{run}/lr"]
    ours = _rates(build_finetune_optimizer(config.optimizer, per_epoch), len(ref))
    ph.check_close(f"schedule {run} ({preset})", ours, ref, RTOL)


def test_paper_finetuning_preset_drops_one_epoch_later_than_the_reference_code(vec):
    """cifar10_paper's decay_epochs [15, 20] read as the paper words it (15 epochs at 0.1); the
    reference's 15,20 trains 14."""
    config = load_config(FinetuneConfig, "finetune", "cifar10_paper")
    per_epoch = int(vec["finetune/steps_per_epoch"])
    ref = vec["finetune/lr"].reshape(-1, per_epoch)[:, 0]
    ours = _rates(build_finetune_optimizer(config.optimizer, per_epoch),
                  len(ref) * per_epoch).reshape(-1, per_epoch)[:, 0]
    differ = np.flatnonzero(~np.isclose(ours, ref)) + 1      # 1-based epochs
    assert differ.tolist() == [15, 20]
