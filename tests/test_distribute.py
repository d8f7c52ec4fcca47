"""Distributed training: strategies, cross-replica NT-Xent, replica-independent random starts,
2-replica equivalence with single-device training, multi-worker pre-training and XLA tracing.

The tests that need two devices run ``tests/distribute_worker.py`` in a subprocess (TensorFlow's
devices can only be split before it initialises, and pytest runs every test file in one
process); the multi-worker test starts two pre-training processes on loopback ports.
"""

import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import pytest
import tensorflow as tf
from conftest import PROJECT_ROOT

from acl_tf import distribute
from acl_tf.attacks import PGDConfig, pgd_linf, random_init, replica_random_init
from acl_tf.configs import ConfigError, ModelConfig, PretrainConfig, load_config
from acl_tf.losses import nt_xent, nt_xent_cross_replica, nt_xent_global
from acl_tf.models import DualBatchNormalization, build_encoder

WORKER = PROJECT_ROOT / "tests" / "distribute_worker.py"


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _run_worker(*args, timeout=420):
    proc = subprocess.run([sys.executable, str(WORKER), *args], cwd=PROJECT_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- strategies and roles -----------------------------------------------------------------------
def test_make_strategy_default_and_mirrored():
    assert distribute.make_strategy("default") is tf.distribute.get_strategy()
    mirrored = distribute.make_strategy("Mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync >= 1


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "horovod"}, "Unknown distribution strategy 'horovod'"),
    ({"name": "mirrored", "tpu_address": "grpc://10.0.0.2:8470"}, "only used with the 'tpu'"),
    ({"name": "default", "devices": ["/cpu:0"]}, "only used with the 'mirrored'"),
])
def test_make_strategy_rejects_bad_requests(kwargs, message):
    with pytest.raises(distribute.StrategyError, match=message):
        distribute.make_strategy(**kwargs)


def test_malformed_tf_config_is_named(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster: worker}")
    with pytest.raises(distribute.StrategyError, match="TF_CONFIG is not valid JSON"):
        distribute.make_strategy("multi_worker")


@pytest.mark.parametrize("task_type, task_id, has_chief, expected", [
    (None, None, False, True),
    ("chief", 0, True, True),
    ("worker", 0, False, True),
    ("worker", 0, True, False),
    ("worker", 1, False, False),
    ("evaluator", 0, False, False),
])
def test_chief_rule(task_type, task_id, has_chief, expected):
    assert distribute.is_chief_task(task_type, task_id, has_chief) is expected


def test_task_write_dir(tmp_path, monkeypatch):
    assert distribute.is_chief()
    with distribute.task_write_dir(tmp_path / "run") as write_dir:
        assert write_dir == tmp_path / "run"
    # A non-chief worker writes to a temporary directory that is removed afterwards.
    monkeypatch.setattr(distribute, "is_chief", lambda strategy=None: False)
    monkeypatch.setattr(distribute, "task_type_and_id", lambda strategy=None: ("worker", 1))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with distribute.task_write_dir(tmp_path / "run") as write_dir:
        assert write_dir.parent == tmp_path / "tmp" and write_dir.is_dir()
        (write_dir / "encoder.keras").write_text("x")
    assert not write_dir.exists() and not (tmp_path / "run").exists()


def test_single_replica_helpers_are_identities():
    x = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    assert distribute.num_replicas() == 1
    assert distribute.replica_id() == 0
    assert distribute.all_gather(x) is x
    assert distribute.step_outputs({"loss": x[0, 0]})["loss"].shape == ()


def test_batch_must_split_evenly_over_replicas(tmp_path):
    from acl_tf.tasks.pretrain import run_pretraining

    config = load_config(PretrainConfig, "pretrain", "smoke", ["batch_size=10"])
    three_replicas = types.SimpleNamespace(num_replicas_in_sync=3)
    with pytest.raises(ConfigError, match="multiple of the 3 replicas"):
        run_pretraining(config, tmp_path / "run", strategy=three_replicas)
    assert not (tmp_path / "run").exists()


# -- NT-Xent with global negatives --------------------------------------------------------------
def _numpy_shard_nt_xent(z_a, z_b, rows, temperature):
    """Reference: loss and accuracy of the anchors of images ``rows`` against all 2N views."""
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z_a)
    losses, hits = [], []
    for view in (0, 1):
        for i in rows:
            anchor = view * n + i
            positive = (1 - view) * n + i
            logits = z @ z[anchor] / temperature
            others = [j for j in range(2 * n) if j != anchor]
            log_norm = np.log(np.sum(np.exp(logits[others])))
            losses.append(log_norm - logits[positive])
            hits.append(others[int(np.argmax(logits[others]))] == positive)
    return float(np.mean(losses)), float(np.mean(hits))


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_nt_xent_global_matches_numpy_reference(shards):
    rng = np.random.default_rng(shards)
    z_a, z_b = (rng.normal(size=(8, 6)).astype(np.float32) for _ in range(2))
    local = 8 // shards
    values = []
    for r in range(shards):
        rows = slice(r * local, (r + 1) * local)
        loss, acc = nt_xent_global(z_a[rows], z_b[rows], z_a, z_b, r * local, 0.5,
                                   return_accuracy=True)
        ref_loss, ref_acc = _numpy_shard_nt_xent(z_a, z_b, range(r * local, (r + 1) * local),
                                                 0.5)
        np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
        assert float(acc) == pytest.approx(ref_acc)
        values.append(float(loss))
    # The mean over the shards is the single-device loss of the whole batch.
    np.testing.assert_allclose(np.mean(values), float(nt_xent(z_a, z_b, 0.5)), rtol=1e-5)


def test_nt_xent_global_gradient_sums_to_single_device_gradient():
    """Summed over shards (candidates = the full batch, as after an all-gather) the gradient of
    the shard losses / R equals the gradient of the single-device loss."""
    rng = np.random.default_rng(0)
    z_a = tf.Variable(rng.normal(size=(8, 4)).astype(np.float32))
    z_b = tf.Variable(rng.normal(size=(8, 4)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        single = nt_xent(z_a, z_b, 0.5)
        sharded = tf.add_n([nt_xent_global(z_a[r * 2:r * 2 + 2], z_b[r * 2:r * 2 + 2], z_a, z_b,
                                           r * 2, 0.5) for r in range(4)]) / 4
    for var in (z_a, z_b):
        np.testing.assert_allclose(tape.gradient(sharded, var), tape.gradient(single, var),
                                   atol=1e-6)


def test_nt_xent_cross_replica_is_nt_xent_on_one_replica():
    rng = np.random.default_rng(1)
    z_a, z_b = (rng.normal(size=(4, 3)).astype(np.float32) for _ in range(2))
    loss, acc = nt_xent_cross_replica(z_a, z_b, 0.2, return_accuracy=True)
    ref_loss, ref_acc = nt_xent(z_a, z_b, 0.2, return_accuracy=True)
    assert float(loss) == float(ref_loss) and float(acc) == float(ref_acc)
    with pytest.raises(ValueError, match="temperature must be positive"):
        nt_xent_global(z_a, z_b, z_a, z_b, 0, temperature=0.0)


# -- attacks ------------------------------------------------------------------------------------
def test_replica_random_init_on_one_replica_is_random_init():
    x = tf.constant(np.random.default_rng(2).uniform(size=(6, 4, 4, 3)), tf.float32)
    seed = tf.constant([1, 2], tf.int64)
    for start in ("uniform", "normal"):
        config = PGDConfig(random_start=start)
        np.testing.assert_array_equal(replica_random_init(x, config, seed, groups=2),
                                      random_init(x, config, seed))
    assert replica_random_init(x, PGDConfig(random_start="none"), None) is x
    with pytest.raises(ValueError, match="stateless seed"):
        replica_random_init(x, PGDConfig(), None)


def test_pgd_unrolled_equals_while_loop_and_takes_a_start():
    w = tf.constant(np.random.default_rng(3).normal(size=(5, 1)), tf.float32)
    x = tf.constant(np.random.default_rng(4).uniform(size=(3, 5)), tf.float32)

    def loss_fn(x_adv):
        return tf.reduce_sum(tf.sin(3.0 * x_adv @ w))

    config = PGDConfig(epsilon=0.1, step_size=0.03, steps=4)
    seed = tf.constant([5, 6], tf.int64)
    looped = pgd_linf(loss_fn, x, config, seed=seed)
    unrolled = pgd_linf(loss_fn, x, config, seed=seed, unroll=True)
    np.testing.assert_array_equal(looped, unrolled)
    start = x + 0.5  # outside the ball: projected back onto it
    np.testing.assert_allclose(pgd_linf(loss_fn, x, PGDConfig(epsilon=0.1, steps=0),
                                        x_start=start), tf.clip_by_value(x + 0.1, 0.0, 1.0))


# -- synchronised BN ----------------------------------------------------------------------------
def test_sync_bn_reaches_every_bn_of_both_branches():
    from acl_tf.tasks.pretrain import build_pretrainer

    assert ModelConfig().sync_bn is False
    plain = build_encoder("resnet18", width=2, dual_bn=True)
    bns = [layer for layer in plain._flatten_layers() if isinstance(layer, DualBatchNormalization)]
    assert bns and not any(bn.bn_adv.synchronized or bn.bn_normal.synchronized for bn in bns)
    config = load_config(PretrainConfig, "pretrain", "smoke",
                         ["model.width=2", "model.head_dim=4", "model.sync_bn=true"])
    model = build_pretrainer(config)
    bns = [layer for layer in model._flatten_layers() if isinstance(layer, DualBatchNormalization)]
    assert len(bns) == 20 + 3  # ResNet-18: stem + 8 blocks x 2 + 3 shortcuts; head: 3
    assert all(bn.synchronized and bn.bn_normal.synchronized and bn.bn_adv.synchronized
               for bn in bns)


# -- TPU readiness: the train steps lower to XLA -------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ds", "s2s"])
def test_train_step_is_xla_compilable(variant):
    from acl_tf.data import load
    from acl_tf.data.augment import make_pretrain_dataset
    from acl_tf.optimizers import build_pretrain_optimizer as build_optimizer
    from acl_tf.tasks.pretrain import build_pretrainer

    config = load_config(PretrainConfig, "pretrain", "smoke",
                         [f"variant={variant}", "model.width=4", "model.head_dim=8",
                          "batch_size=4", "attack.steps=2"])
    data = load(str(PROJECT_ROOT / "acl_tf" / "data" / "sample" / "cifar10"), "train", limit=4)
    dataset = make_pretrain_dataset(data.images, data.labels, batch_size=4,
                                    config=config.augment, seed=0)
    # drop_remainder: every batch has the same static shape (what a TPU compiles for).
    assert all(spec.shape.is_fully_defined() for spec in tf.nest.flatten(dataset.element_spec))
    model = build_pretrainer(config)
    model.compile(optimizer=build_optimizer(config.optimizer, 4, 1, 2), jit_compile=True)
    model.optimizer.build(model.trainable_variables)
    batch = next(iter(dataset))
    step = tf.function(model.train_step, jit_compile=True)
    graph = step.get_concrete_function(batch).graph.as_graph_def()
    ops = {node.op for node in graph.node}
    ops |= {node.op for fn in graph.library.function for node in fn.node_def}
    assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    hlo = step.experimental_get_compiler_ir(batch)(stage="hlo")  # raises if an op has no XLA kernel
    assert "ENTRY" in hlo


# -- 2 replicas vs one device (subprocess on a CPU split into 2 logical devices) -----------------
@pytest.mark.slow
def test_mirrored_nt_xent_gradient_and_random_start_match_single_device():
    report = _run_worker("ntxent")
    assert report["loss_mirrored"] == pytest.approx(report["loss_single"], abs=1e-6)
    assert report["acc_mirrored"] == report["acc_single"]
    # all_gather's gradient (all-reduce + slice) gives the single-device weight gradient.
    assert report["grad_diff"] <= 1e-6 * max(1.0, report["grad_max"])
    assert report["start_moved"] > 0.01 and report["start_diff"] == 0.0


@pytest.mark.slow
def test_mirrored_ds_step_equals_single_device_step():
    """One DS step (LARS, PGD from the uniform start, sync BN) on 2 replicas of 4 images and on
    one device with the same 8: same losses and weights (models in float64, see the worker's
    docstring). The step is DynACL's with the code's momentum encoder, which runs everything
    ACL's DS step does and more: stream weights of the last epoch of a 2-epoch run, the second
    views through the EMA key encoder in the attack and both streams, the EMA update. Measured:
    loss 5e-7, weights 3.5e-6 after moves of 1.5, key encoder included; ACL's plain DS step
    measured the same way gave loss 5e-7, weights 3e-6, and a DynACL-AIR step loss 2e-7, weights
    3e-6 (AIR's regulariser is checked under the same collectives in tests/test_losses_air.py).
    1 PGD step and 16-pixel views keep the test short; the all-gathered attack loss, the unrolled
    loop and the random start are there. One step, because a second one starts from weights
    that differ by those 3e-6 and its PGD sign step may then flip a pixel whose gradient is ~0,
    which moves the adversarial loss by ~2e-3: a discontinuity of the attack, not a replica
    difference."""
    report = _run_worker("pretrain", "--variant=ds", "--steps=1", "--attack_steps=1",
                         "--image_size=16", "--dtype=float64", "--sync_bn=1",
                         "--set=method=dynacl", "--set=dynamic.momentum_encoder=true",
                         "--set=dynamic.reload_every=1")
    assert report["replicas"] == 2
    assert report["weights_moved"] > 0.1, report
    assert report["max_loss_diff"] <= 1e-5, report
    assert report["max_weight_diff"] <= 1e-4, report


@pytest.mark.slow
def test_mirrored_trades_steps_equal_single_device_steps():
    """Two AFF (TRADES) steps (2-step KL attack from the normal start, SGD with momentum and L2,
    sync BN) on 2 replicas of 4 images and on one device with the same 8 (float64; measured:
    weights equal to ~2e-15 after moves of ~2)."""
    report = _run_worker("trades", "--steps=2", "--attack_steps=2", "--dtype=float64",
                         "--sync_bn=1")
    assert report["replicas"] == 2
    assert report["weights_moved"] > 0.01, report
    assert report["max_loss_diff"] <= 1e-5, report
    assert report["max_weight_diff"] <= 1e-6, report


@pytest.mark.slow
def test_mirrored_semisup_student_steps_equal_single_device_steps():
    """Two semi-supervised student steps (2-step PGD on label / pseudo-label from the uniform
    start, CE + distillation + TRADES KL on batches of 3 labelled and 5 unlabelled images, sync
    BN) on 2 replicas and on one device (float64; measured: weights equal to ~2e-15 after moves
    of ~3.6; without synchronised BN they differ by ~0.7, so the comparison has teeth)."""
    report = _run_worker("semisup", "--steps=2", "--attack_steps=2", "--dtype=float64",
                         "--sync_bn=1")
    assert report["replicas"] == 2
    assert report["weights_moved"] > 0.01, report
    assert report["single_logs"]["distill_unlabelled"] > 0, report
    assert report["max_loss_diff"] <= 1e-5, report
    assert report["max_weight_diff"] <= 1e-6, report


def test_semisup_on_replicas_needs_batches_that_split_evenly(tmp_path):
    from acl_tf.configs import SemisupConfig
    from acl_tf.tasks.semisup import run_student, run_teacher

    config = load_config(SemisupConfig, "semisup", "smoke",
                         ["teacher.batch_size=15", "student.batch_size=15"])
    two_replicas = types.SimpleNamespace(num_replicas_in_sync=2)
    with pytest.raises(ConfigError, match="teacher.batch_size \\(15\\)"):
        run_teacher(config, tmp_path, strategy=two_replicas)
    with pytest.raises(ConfigError, match="student.batch_size \\(15\\)"):
        run_student(config, tmp_path, strategy=two_replicas)
    assert not any(tmp_path.iterdir())


# -- multi-worker pre-training on loopback ports ------------------------------------------------
@pytest.mark.slow
@pytest.mark.e2e
def test_multi_worker_pretraining_chief_writes(tmp_path):
    import portpicker

    ports = [portpicker.pick_unused_port() for _ in range(2)]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    model_dir = tmp_path / "run"
    worker_tmp = tmp_path / "worker1_tmp"
    worker_tmp.mkdir()
    cmd = [sys.executable, "-m", "acl_tf.pretrain", "--strategy=multi_worker", "--config=smoke",
           f"--model_dir={model_dir}", "--set=model.width=4", "--set=model.head_dim=8",
           "--set=batch_size=8", "--set=data.limit=32", "--set=epochs=1",
           "--set=attack.steps=1", "--set=log_every_steps=1"]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = _env(TF_CONFIG=tf_config, **({"TMPDIR": str(worker_tmp)} if index else {}))
        procs.append(subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=420)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for index, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"worker {index}:\n{log[-4000:]}"
    chief_log, worker_log = logs
    assert "num_workers = 2" in chief_log
    # Both workers took part in the same synchronous steps: the same (all-reduced) losses.
    def losses(log):
        return [line.split(" loss ")[1].split()[0] for line in log.splitlines()
                if "step 4/4 loss" in line]
    assert losses(chief_log) and losses(chief_log) == losses(worker_log)
    # Only the chief wrote the run directory; the other worker's temporary one is gone.
    assert "not the chief" not in chief_log and "worker 1 is not the chief" in worker_log
    assert not any(worker_tmp.iterdir())
    for name in ("encoder.keras", "pretrainer.keras", "config.json", "history.json"):
        assert (model_dir / name).is_file(), name
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-1")
    history = json.loads((model_dir / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["loss"])


# -- command line ---------------------------------------------------------------------------------
def test_cli_rejects_unknown_strategy_and_misplaced_tpu(tmp_path):
    base = [sys.executable, "-m", "acl_tf.pretrain", "--config=smoke",
            f"--model_dir={tmp_path / 'run'}"]
    proc = subprocess.run(base + ["--strategy=horovod"], cwd=PROJECT_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--strategy" in proc.stderr
    proc = subprocess.run(base + ["--strategy=mirrored", "--tpu=grpc://10.0.0.2:8470"],
                          cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "only used with the 'tpu' strategy" in proc.stderr
    assert not (tmp_path / "run").exists()
    proc = subprocess.run([sys.executable, "-m", "acl_tf.finetune", "--config=smoke",
                           f"--model_dir={tmp_path / 'ft'}", "--strategy=default",
                           "--tpu=local"], cwd=PROJECT_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "only used with the 'tpu' strategy" in proc.stderr
    assert not (tmp_path / "ft").exists()
    proc = subprocess.run([sys.executable, "-m", "acl_tf.semisup", "--config=smoke",
                           f"--model_dir={tmp_path / 'semi'}", "--strategy=mirrored",
                           "--tpu=local"], cwd=PROJECT_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "only used with the 'tpu' strategy" in proc.stderr
    assert not (tmp_path / "semi").exists()


def test_finetuning_on_replicas_needs_even_static_batches(tmp_path):
    from acl_tf.configs import FinetuneConfig
    from acl_tf.tasks.finetune import run_finetuning

    config = load_config(FinetuneConfig, "finetune", "smoke", ["batch_size=32"])
    two_replicas = types.SimpleNamespace(num_replicas_in_sync=2)
    with pytest.raises(ConfigError, match="drop_remainder true"):
        run_finetuning(config, tmp_path / "run", strategy=two_replicas)
    assert not (tmp_path / "run").exists()
