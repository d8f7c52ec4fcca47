"""Compares single-device and 2-replica training on a CPU split into 2 logical devices.

    python tests/distribute_worker.py ntxent
    python tests/distribute_worker.py pretrain --variant=ds [--dtype=float64] [--sync_bn=1]
    python tests/distribute_worker.py trades [--dtype=float64] [--sync_bn=1]
    python tests/distribute_worker.py semisup [--dtype=float64] [--sync_bn=1]

TensorFlow's devices can be configured only once per process, before it initialises, and pytest
runs every test file in one process: ``tests/test_distribute.py`` therefore runs this script in a
subprocess. The last line of stdout is a JSON report.

``pretrain`` trains the same model from the same weights on the same global batches twice - on
one device (the default strategy) and under ``MirroredStrategy`` over the two logical CPUs (each
replica gets half of every batch) - and reports the largest differences of the logged losses and
of every weight (trainable ones, and the BN moving statistics). ``trades`` does the same for
TRADES fine-tuning (AFF: the normal-start KL attack, then CE + beta * KL with training-mode BN)
and ``semisup`` for the semi-supervised student (PGD on the label / pseudo-label from the uniform
start, then CE + distillation + TRADES KL on mixed labelled and unlabelled batches).
``--dtype=float64`` runs the
models in float64: a width-4 ResNet-18 on a few images turns float32 rounding (different
summation orders on 1 and 2 devices) into visible weight differences within a step or two (a
relative 1e-6 nudge of its weights moves a step's update by ~1e-3 on one device alone), which
would hide what the comparison is about: that the two computations are the same function.

``ntxent`` checks the building blocks under the real collectives: the loss and the weight
gradient (summed over replicas) of :func:`acl_tf.losses.nt_xent_cross_replica` against
single-device :func:`acl_tf.losses.nt_xent`, and :func:`acl_tf.attacks.replica_random_init`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = PROJECT_ROOT / "acl_tf" / "data" / "sample" / "cifar10"
DEVICES = ["/cpu:0", "/cpu:1"]


def _mirrored():
    strategy = tf.distribute.MirroredStrategy(DEVICES)
    assert strategy.num_replicas_in_sync == 2
    return strategy


def _shards(strategy, array):
    """A PerReplica value: replica r gets rows r*n/2 .. (r+1)*n/2 - 1 of ``array``."""
    half = len(array) // strategy.num_replicas_in_sync

    def fn(context):
        r = context.replica_id_in_sync_group
        return array[r * half:(r + 1) * half]

    return strategy.experimental_distribute_values_from_function(fn)


def _local(strategy, value):
    return [np.asarray(v) for v in strategy.experimental_local_results(value)]


def ntxent() -> dict:
    from acl_tf.attacks import PGDConfig, random_init, replica_random_init
    from acl_tf.losses import nt_xent, nt_xent_cross_replica

    rng = np.random.default_rng(0)
    x_a, x_b = (rng.normal(size=(8, 5)).astype(np.float32) for _ in range(2))
    w_init = rng.normal(size=(5, 3)).astype(np.float32)
    w = tf.Variable(w_init)
    with tf.GradientTape() as tape:
        loss, acc = nt_xent(x_a @ w, x_b @ w, 0.5, return_accuracy=True)
    grad = tape.gradient(loss, w).numpy()

    strategy = _mirrored()
    with strategy.scope():
        w2 = tf.Variable(w_init)

    def step(a, b):
        with tf.GradientTape() as tape:
            local_loss, local_acc = nt_xent_cross_replica(a @ w2, b @ w2, 0.5,
                                                          return_accuracy=True)
            scaled = local_loss / strategy.num_replicas_in_sync
        grad = tape.gradient(scaled, w2)
        return local_loss, local_acc, tf.distribute.get_replica_context().all_reduce("sum", grad)

    losses, accs, grads = tf.function(lambda a, b: strategy.run(step, args=(a, b)))(
        _shards(strategy, x_a), _shards(strategy, x_b))

    # Random starts of a stacked pair [v1; v2] (4 + 4 rows per replica, 8 + 8 in all).
    images = rng.uniform(size=(16, 4, 4, 3)).astype(np.float32)
    config = PGDConfig(random_start="uniform")
    seed = tf.constant([3, 7], tf.int64)
    single_start = random_init(tf.constant(images), config, seed).numpy()
    v1, v2 = images[:8], images[8:]

    def start_fn(a, b):
        return replica_random_init(tf.concat([a, b], 0), config, seed, groups=2)

    starts = _local(strategy, tf.function(lambda a, b: strategy.run(start_fn, args=(a, b)))(
        _shards(strategy, v1), _shards(strategy, v2)))
    # Reassemble [v1 of replica 0, v1 of replica 1, v2 of replica 0, v2 of replica 1].
    mirrored_start = np.concatenate([starts[0][:4], starts[1][:4], starts[0][4:], starts[1][4:]])
    return {"loss_single": float(loss), "loss_mirrored": float(np.mean(_local(strategy, losses))),
            "acc_single": float(acc), "acc_mirrored": float(np.mean(_local(strategy, accs))),
            "grad_max": float(np.abs(grad).max()),
            "grad_diff": float(np.abs(grad - _local(strategy, grads)[0]).max()),
            "start_diff": float(np.abs(single_start - mirrored_start).max()),
            "start_moved": float(np.abs(single_start - images).max())}


def _weight_diffs(model_a, model_b, initial) -> dict:
    """Largest absolute difference over all weights (and where), and how far training moved."""
    worst, name, moved = 0.0, "", 0.0
    for wa, wb, w0 in zip(model_a.weights, model_b.weights, initial):
        if wa.path.split("/", 1)[-1] != wb.path.split("/", 1)[-1]:  # the models' names differ
            raise AssertionError(f"weight order differs: {wa.path} vs {wb.path}")
        a, b = np.asarray(wa.numpy()), np.asarray(wb.numpy())
        diff = float(np.max(np.abs(a - b)))
        moved = max(moved, float(np.max(np.abs(a - w0))))
        if diff > worst:
            worst, name = diff, wa.path
    return {"max_weight_diff": worst, "worst_weight": name, "weights_moved": moved}


def _fit(model, dataset, steps: int):
    """One epoch of ``steps`` steps: (the last logged values, seconds)."""
    tic = time.time()
    history = model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0).history
    return {k: float(v[-1]) for k, v in history.items()}, time.time() - tic


def _compare(train, **settings) -> dict:
    """``train(strategy, initial)`` -> (model, logs, initial weights, seconds) on one device,
    then under MirroredStrategy from the same weights; the report of their differences (the
    losses compared are the logged values whose name ends in ``loss``)."""
    single, single_logs, initial, single_s = train(tf.distribute.get_strategy())
    strategy = _mirrored()
    mirrored, mirrored_logs, _, mirrored_s = train(strategy, initial)
    loss_diffs = {k: abs(single_logs[k] - mirrored_logs[k]) for k in single_logs}
    return {**settings, "replicas": strategy.num_replicas_in_sync,
            "single_logs": single_logs, "mirrored_logs": mirrored_logs,
            "max_loss_diff": max(loss_diffs[k] for k in loss_diffs if k.endswith("loss")),
            "loss_diffs": loss_diffs, "seconds": {"single": single_s, "mirrored": mirrored_s},
            **_weight_diffs(single, mirrored, initial)}


def pretrain(variant: str, sync_bn: bool, steps: int, batch_size: int, dtype: str,
             attack_steps: int, image_size: int = 32, overrides=()) -> dict:
    from acl_tf.configs import PretrainConfig, load_config
    from acl_tf.data import load
    from acl_tf.data.augment import make_pretrain_dataset
    from acl_tf.models import set_synchronized_bn
    from acl_tf.optimizers import build_pretrain_optimizer as build_optimizer
    from acl_tf.tasks.pretrain import StreamSchedule, build_pretrainer

    keras.config.set_dtype_policy(dtype)
    # The smoke config's LARS (lr 1.0) with its uniform random start; the single-device model
    # uses synchronised BN too (a no-op on one device) so that both compute the same moments.
    config = load_config(PretrainConfig, "pretrain", "smoke", [
        f"variant={variant}", "model.width=4", "model.head_dim=16", "model.sync_bn=true",
        f"batch_size={batch_size}", f"attack.steps={attack_steps}",
        f"augment.image_size={image_size}", f"data.image_size={image_size}", *overrides])
    data = load(str(SAMPLE_DIR), "train", limit=batch_size * steps)

    def train(strategy, initial=None):
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            model = build_pretrainer(config)
            if not sync_bn:
                set_synchronized_bn(model, False)
            model.compile(optimizer=build_optimizer(config.optimizer, batch_size, steps, 2))
        if initial is not None:
            model.set_weights(initial)
        if config.dynamic_schedules:   # the last epoch's weights: far from ACL's (1, 1)
            values = StreamSchedule(config).values(config.epochs - 1)
            model.stream_weights.assign([values["clean_weight"], values["adv_weight"]])
        start = [w.numpy() for w in model.weights]
        dataset = make_pretrain_dataset(data.images, data.labels, batch_size=batch_size,
                                        config=config.augment_at(config.epochs),
                                        seed=config.seed, epoch=0,
                                        with_original=config.uses_air)
        logs, seconds = _fit(model, dataset, steps)
        return model, logs, start, seconds

    return _compare(train, variant=variant, sync_bn=sync_bn, dtype=dtype, steps=steps,
                    batch_size=batch_size, attack_steps=attack_steps, overrides=list(overrides))


def trades(sync_bn: bool, steps: int, batch_size: int, dtype: str, attack_steps: int) -> dict:
    from acl_tf.configs import FinetuneConfig, load_config
    from acl_tf.data import load
    from acl_tf.data.augment import make_finetune_dataset
    from acl_tf.models import set_synchronized_bn
    from acl_tf.optimizers import build_finetune_optimizer
    from acl_tf.tasks.finetune import build_finetuner

    keras.config.set_dtype_policy(dtype)
    # A randomly initialised width-4 dual-BN encoder fine-tuned with AFF on its adv branch: the
    # TRADES attack (x + 0.001 N(0, 1) start) and SGD with momentum and coupled L2.
    config = load_config(FinetuneConfig, "finetune", "smoke", [
        "mode=aff", "bn=adv", "model.width=4", "model.sync_bn=true", f"batch_size={batch_size}",
        f"attack.steps={attack_steps}", "drop_remainder=true"])
    data = load(str(SAMPLE_DIR), "train", limit=batch_size * steps)

    def train(strategy, initial=None):
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            model = build_finetuner(config)
            if not sync_bn:
                set_synchronized_bn(model, False)
            model.compile(optimizer=build_finetune_optimizer(config.optimizer, steps))
        if initial is not None:
            model.set_weights(initial)
        start = [w.numpy() for w in model.weights]
        dataset = make_finetune_dataset(data.images, data.labels, batch_size=batch_size,
                                        seed=config.seed, epoch=0, drop_remainder=True)
        logs, seconds = _fit(model, dataset, steps)
        return model, logs, start, seconds

    return _compare(train, mode="aff", sync_bn=sync_bn, dtype=dtype, steps=steps,
                    batch_size=batch_size, attack_steps=attack_steps)


def semisup(sync_bn: bool, steps: int, batch_size: int, dtype: str, attack_steps: int) -> dict:
    from acl_tf.attacks import PGDConfig
    from acl_tf.data import load
    from acl_tf.models import Classifier, build_encoder, set_synchronized_bn
    from acl_tf.trainers.semisup import SemisupStudent

    keras.config.set_dtype_policy(dtype)
    data = load(str(SAMPLE_DIR), "train", limit=batch_size * steps)
    rng = np.random.default_rng(0)
    n = len(data)
    # 3 of every 8 images labelled (first in each batch, as the student's batches are), the
    # others with soft pseudo-labels only.
    is_labelled = np.tile(np.arange(batch_size) < 3 * batch_size // 8, steps)
    targets = rng.dirichlet(np.ones(10), size=n)
    batches = {"images": data.to_float().astype(dtype), "targets": targets.astype(dtype),
               "labels": np.where(is_labelled, data.labels, -1).astype(np.int64),
               "is_labelled": is_labelled}

    def train(strategy, initial=None):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            classifier = Classifier(build_encoder("resnet18", 4, dual_bn=True), 10,
                                    branch="adv", freeze_encoder=False, name="classifier")
            set_synchronized_bn(classifier, sync_bn)
            model = SemisupStudent(classifier, beta=6.0, seed=0,
                                   attack=PGDConfig(steps=attack_steps, random_start="uniform"))
            model(np.zeros((2, 32, 32, 3), dtype), training=False)
            model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        if initial is not None:
            model.set_weights(initial)
        start = [w.numpy() for w in model.weights]
        dataset = tf.data.Dataset.from_tensor_slices(batches).batch(batch_size, drop_remainder=True)
        logs, seconds = _fit(model, dataset.map(lambda b: (b,)), steps)
        return model, logs, start, seconds

    return _compare(train, mode="semisup", sync_bn=sync_bn, dtype=dtype, steps=steps,
                    batch_size=batch_size, attack_steps=attack_steps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["ntxent", "pretrain", "trades", "semisup"])
    parser.add_argument("--variant", default="ds")
    parser.add_argument("--sync_bn", type=int, default=1,
                        help="0: the 2-replica model normalises with per-replica statistics.")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--attack_steps", type=int, default=2)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--image_size", type=int, default=32,
                        help="pretrain: side of the augmented views (random resized crops).")
    parser.add_argument("--set", action="append", default=[],
                        help="pretrain: a config override field=value (repeatable).")
    args = parser.parse_args(argv)
    if args.mode == "ntxent":
        report = ntxent()
    elif args.mode in ("trades", "semisup"):
        run = trades if args.mode == "trades" else semisup
        report = run(bool(args.sync_bn), args.steps, args.batch_size, args.dtype,
                     args.attack_steps)
    else:
        report = pretrain(args.variant, bool(args.sync_bn), args.steps, args.batch_size,
                          args.dtype, args.attack_steps, args.image_size, args.set)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
