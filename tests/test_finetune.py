"""Supervised fine-tuning: optimizer, schedule, data, train steps of AFF/ALF/SLF, model selection,
the runner with resume, the CLIs and their errors."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from acl_tf.attacks import PGDConfig, pgd_linf
from acl_tf.configs import ConfigError, FinetuneConfig, load_config, to_dict
from acl_tf.data.augment import make_finetune_dataset, random_crop_with_padding
from acl_tf.losses import trades_kl
from acl_tf.models import Classifier, ResNet18
from acl_tf.optimizers import SGDL2, piecewise_epochs
from acl_tf.tasks.selection import ModelSelection, read_metrics, validation_accuracy
from acl_tf.trainers.finetuner import Finetuner

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(PROJECT_ROOT, "data", "cifar10_sample")

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 1, (8, 16, 16, 3)).astype(np.float32)
LABELS = RNG.integers(0, 10, 8).astype(np.int64)


# -- optimizer and schedule --------------------------------------------------------------------
def torch_sgd_reference(w, grads, lrs, momentum, wd, nesterov=False):
    """torch.optim.SGD(momentum, weight_decay, dampening=0) by hand."""
    w, buf = np.array(w, np.float64), None
    for g, lr in zip(grads, lrs):
        d = np.asarray(g, np.float64) + wd * w
        buf = d.copy() if buf is None else momentum * buf + d
        w = w - lr * (d + momentum * buf if nesterov else buf)
    return w


@pytest.mark.parametrize("momentum,wd,nesterov", [(0.9, 2e-4, False), (0.9, 0.1, True),
                                                  (0.0, 0.1, False)])
def test_sgd_l2_matches_torch_sgd(momentum, wd, nesterov):
    w0 = [1.0, -2.0, 0.5]
    grads = [[0.1, 0.2, -0.3], [-0.4, 0.0, 0.2], [0.3, -0.1, 0.0], [0.05, 0.05, 0.05]]
    # Rate 0.1 for two steps, then 0.01: the momentum buffer must not carry the old rate.
    schedule = piecewise_epochs(0.1, steps_per_epoch=2, decay_epochs=[1])
    var = keras.Variable(np.array(w0, np.float32))
    opt = SGDL2(schedule, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    for g in grads:
        opt.apply([tf.constant(g, tf.float32)], [var])
    expected = torch_sgd_reference(w0, grads, [0.1, 0.1, 0.01, 0.01], momentum, wd, nesterov)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5)


def test_sgd_l2_is_coupled_not_keras_decoupled():
    """With a zero gradient, coupled L2 with momentum decays through the buffer."""
    var = keras.Variable(np.array([1.0], np.float32))
    opt = SGDL2(0.1, momentum=0.9, weight_decay=0.5)
    for _ in range(2):
        opt.apply([tf.zeros([1])], [var])
    # step 1: d = 0.5, b = 0.5, w = 0.95; step 2: d = 0.475, b = 0.925, w = 0.8575
    assert float(var.numpy()[0]) == pytest.approx(0.8575, rel=1e-6)
    restored = SGDL2.from_config(opt.get_config())
    assert (restored.momentum, restored.l2, restored.nesterov) == (0.9, 0.5, False)


def test_piecewise_schedule_boundaries():
    lr = piecewise_epochs(0.1, steps_per_epoch=10, decay_epochs=(15, 20))
    values = {step: float(lr(step)) for step in (0, 149, 150, 199, 200, 10_000)}
    assert values == pytest.approx({0: 0.1, 149: 0.1, 150: 0.01, 199: 0.01, 200: 0.001,
                                    10_000: 0.001})
    assert piecewise_epochs(0.1, 10, ()) == 0.1
    for bad in ([0], [20, 15], [5, 5]):
        with pytest.raises(ValueError, match="decay_epochs"):
            piecewise_epochs(0.1, 10, bad)


def test_schedule_seen_by_the_optimizer_drops_at_the_epoch_boundary():
    """The first step of epoch 16 (iterations = 15 * steps) already uses the decayed rate."""
    steps = 4
    var = keras.Variable(np.array([0.0], np.float32))
    opt = SGDL2(piecewise_epochs(0.1, steps, (15, 20)), momentum=0.0)
    opt.build([var])
    moves = []
    for iteration in (15 * steps - 1, 15 * steps):
        opt.iterations.assign(iteration)
        before = float(var.numpy()[0])
        opt.apply([tf.ones([1])], [var])
        moves.append(before - float(var.numpy()[0]))
    assert moves == pytest.approx([0.1, 0.01])


# -- data --------------------------------------------------------------------------------------
def test_random_crop_with_padding_is_a_window_of_the_padded_image():
    image = tf.constant(RNG.uniform(0.1, 1, (8, 8, 3)), tf.float32)
    padded = np.pad(image.numpy(), [(4, 4), (4, 4), (0, 0)])
    offsets = set()
    for s in range(40):
        crop = random_crop_with_padding(image, tf.constant([s, 1], tf.int64)).numpy()
        assert crop.shape == (8, 8, 3)
        matches = [(i, j) for i in range(9) for j in range(9)
                   if np.array_equal(crop, padded[i:i + 8, j:j + 8])]
        assert matches, "the crop is not a window of the zero-padded image"
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets vary with the seed
    np.testing.assert_array_equal(random_crop_with_padding(image, tf.constant([3, 1])),
                                  random_crop_with_padding(image, tf.constant([3, 1])))


def test_finetune_dataset_is_reproducible_per_epoch_and_keeps_pairs():
    images = (RNG.uniform(0, 255, (10, 8, 8, 3))).astype(np.uint8)
    labels = np.arange(10)

    def collect(epoch, augment=True):
        ds = make_finetune_dataset(images, labels, batch_size=4, seed=1, epoch=epoch,
                                   augment=augment)
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
        return np.concatenate(xs), np.concatenate(ys)

    x0, y0 = collect(0)
    x0b, y0b = collect(0)
    x1, y1 = collect(1)
    np.testing.assert_array_equal(x0, x0b)
    np.testing.assert_array_equal(y0, y0b)
    assert sorted(y0) == list(range(10)) and not np.array_equal(y0, y1)
    plain, plain_labels = collect(0, augment=False)
    np.testing.assert_allclose(plain, images[plain_labels] / 255.0, atol=1e-6)
    assert x0.dtype == np.float32 and x0.shape == (10, 8, 8, 3)
    with pytest.raises(ValueError, match="uint8"):
        make_finetune_dataset(images.astype(np.float32), labels, batch_size=4, seed=0)


# -- the three train steps ---------------------------------------------------------------------
def make_finetuner(mode, weight_decay=2e-4, attack_steps=2, branch="adv"):
    keras.utils.set_random_seed(1)
    classifier = Classifier(ResNet18(width=4), 10, branch=branch,
                            freeze_encoder=mode != "aff")
    model = Finetuner(classifier, mode=mode, attack=PGDConfig(steps=attack_steps))
    model(IMAGES[:2], training=False)
    model.compile(optimizer=SGDL2(0.1, momentum=0.9, weight_decay=weight_decay))
    return model


def short(variable):
    """``classifier/...`` whatever scope the classifier was built in."""
    return re.sub(r"^.*?classifier[^/]*/", "classifier/", variable.path)


def snapshot(model):
    return {short(v): v.numpy().copy() for v in model.classifier.weights}


def changed(before, model):
    return {short(v) for v in model.classifier.weights
            if not np.array_equal(before[short(v)], v.numpy())}


@pytest.mark.parametrize("mode", ["aff", "alf", "slf"])
def test_train_step_updates_exactly_the_right_weights(mode):
    model = make_finetuner(mode)
    before = snapshot(model)
    for _ in range(2):  # the linear layer starts at zero: the encoder gets gradients from step 2
        logs = model.train_step((tf.constant(IMAGES), tf.constant(LABELS)))
    assert np.isfinite(float(logs["loss"]))
    assert ("adv_acc" in logs) == (mode != "slf")
    moved = changed(before, model)
    fc = {"classifier/fc/kernel", "classifier/fc/bias"}
    assert fc <= moved
    if mode != "aff":
        assert moved == fc, f"{mode.upper()} changed encoder weights: {sorted(moved - fc)[:5]}"
        return
    encoder = {p for p in before if p.startswith("classifier/resnet18/")}
    adv = {p for p in encoder if "/adv/" in p}
    normal = {p for p in encoder if "/normal/" in p}
    convs = {p for p in encoder if p.endswith("/kernel")}
    assert convs <= moved, "AFF must train every convolution"
    assert adv <= moved, "AFF trains the adv BN (gamma/beta) and updates its statistics"
    assert not normal & moved, "the unused normal BN must be neither trained nor decayed"


def test_linear_modes_train_only_the_fc_layer_under_fit():
    model = make_finetuner("alf", attack_steps=1)
    before = snapshot(model)
    model.fit(tf.data.Dataset.from_tensor_slices((IMAGES, LABELS)).batch(4), epochs=1,
              verbose=0)
    assert changed(before, model) == {"classifier/fc/kernel", "classifier/fc/bias"}
    assert [short(v) for v in model.trainable_variables] == ["classifier/fc/kernel",
                                                           "classifier/fc/bias"]


def test_aff_attack_uses_inference_mode_bn_on_its_branch():
    model = make_finetuner("aff", attack_steps=3, branch="normal")
    clf = model.classifier
    clf.fc.kernel.assign(np.random.default_rng(2).normal(0, 1, clf.fc.kernel.shape))
    clf(IMAGES * 0.5, training=True, branch="adv")  # give the adv BN statistics of its own
    before = snapshot(model)
    x, seed = tf.constant(IMAGES), tf.constant([5, 0], tf.int64)
    x_adv = model.adversarial_examples(x, tf.constant(LABELS), seed).numpy()
    assert changed(before, model) == set(), "the attack changed weights or BN statistics"

    def reference(training, branch):
        clean = clf(x, training=False, branch=branch)
        return pgd_linf(lambda z: trades_kl(clean, clf(z, training=training, branch=branch),
                                            "sum"), x, model.attack, seed=seed).numpy()

    np.testing.assert_allclose(x_adv, reference(False, "normal"), atol=1e-6)
    assert np.abs(x_adv - x.numpy()).max() <= 8 / 255 + 1e-6
    # The comparison can fail: training-mode BN or the other branch give another x'.
    assert not np.allclose(x_adv, reference(True, "normal"), atol=1e-6)
    assert not np.allclose(x_adv, reference(False, "adv"), atol=1e-6)


def test_finetuner_checks_and_round_trip(tmp_path):
    frozen = Classifier(ResNet18(width=4), 10, freeze_encoder=True)
    with pytest.raises(ValueError, match="freeze_encoder=False"):
        Finetuner(frozen, mode="aff")
    with pytest.raises(ValueError, match="Unknown fine-tuning mode 'full'"):
        Finetuner(frozen, mode="full")
    assert Finetuner(Classifier(ResNet18(width=4), 10), mode="aff").attack == PGDConfig(
        steps=10, random_start="normal")
    assert Finetuner(frozen, mode="alf").attack == PGDConfig(steps=10, random_start="uniform")
    model = make_finetuner("aff")
    path = tmp_path / "finetuner.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert (loaded.mode, loaded.beta, loaded.attack) == (model.mode, model.beta, model.attack)
    np.testing.assert_allclose(loaded(IMAGES, training=False), model(IMAGES, training=False),
                               atol=1e-6)


# -- validation and model selection ------------------------------------------------------------
def test_validation_accuracy_clean_matches_predictions():
    model = make_finetuner("slf").classifier
    model.fc.kernel.assign(np.random.default_rng(3).normal(0, 1, model.fc.kernel.shape))
    images = (IMAGES * 255).astype(np.uint8)
    predictions = np.argmax(model(images.astype(np.float32) / 255, training=False), axis=1)
    expected = float(np.mean(predictions == LABELS))
    none = PGDConfig(steps=0, random_start="none")
    result = validation_accuracy(model, images, LABELS, none, batch_size=3)
    assert result == {"acc": pytest.approx(expected), "adv_acc": pytest.approx(expected),
                      "count": 8}
    attack = PGDConfig(steps=3, epsilon=0.3)
    attacked = validation_accuracy(model, images, LABELS, attack, batch_size=8, seed=1)
    again = validation_accuracy(model, images, LABELS, attack, batch_size=8, seed=1)
    assert attacked == again and attacked["acc"] == pytest.approx(expected)
    assert attacked["adv_acc"] <= attacked["acc"]


def test_model_selection_keeps_the_best_epoch(tmp_path):
    model = make_finetuner("slf").classifier
    images = (IMAGES * 255).astype(np.uint8)
    selection = ModelSelection(model, images, LABELS, PGDConfig(steps=1), tmp_path,
                               info={"mode": "slf"})
    for epoch, (acc, adv) in enumerate([(0.5, 0.2), (0.6, 0.4), (0.9, 0.4)], 1):
        selection.pending[epoch] = {"val_acc": acc, "val_adv_acc": adv}
        model.fc.bias.assign(np.full(10, float(epoch), np.float32))
        selection.commit(epoch)
    record = read_metrics(tmp_path)
    assert record["best_epoch"] == 2 and record["select_by"] == "val_adv_acc"  # ties: earlier
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    best = keras.saving.load_model(tmp_path / "best.keras", compile=False)
    last = keras.saving.load_model(tmp_path / "last.keras", compile=False)
    assert float(best.fc.bias.numpy()[0]) == 2.0 and float(last.fc.bias.numpy()[0]) == 3.0

    (tmp_path / "clean").mkdir()
    clean = ModelSelection(model, images, LABELS, PGDConfig(steps=1), tmp_path / "clean",
                           select_by="clean")
    for epoch, acc in enumerate([0.5, 0.9], 1):
        clean.pending[epoch] = {"val_acc": acc, "val_adv_acc": 0.0}
        clean.commit(epoch)
    assert read_metrics(tmp_path / "clean")["best_epoch"] == 2
    # An uncommitted finished epoch is measured on catch-up; committed ones are left alone.
    clean.catch_up(2)
    assert len(read_metrics(tmp_path / "clean")["epochs"]) == 2
    clean.catch_up(3)
    entry = read_metrics(tmp_path / "clean")["epochs"][-1]
    assert entry["epoch"] == 3 and 0 <= entry["val_acc"] <= 1


# -- configs -----------------------------------------------------------------------------------
def test_test_limit_takes_a_class_balanced_subset(monkeypatch):
    """CIFAR-10's test TFRecord is sorted by class: its first 2,000 images are classes 0-3."""
    from acl_tf import data as data_lib
    from acl_tf.tasks import finetune

    labels = np.repeat(np.arange(10), 30)              # sorted by class, like the file
    images = np.zeros((300, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(300) % 256
    sorted_split = data_lib.ImageData(images=images, labels=labels, ids=np.arange(300).astype(str),
                                      num_classes=10)
    monkeypatch.setattr(finetune, "load_split", lambda config, split, limit=None: sorted_split)
    config = load_config(FinetuneConfig, "finetune", "smoke", ["test_limit=50"])
    test = finetune.load_test_split(config)
    assert len(test) == 50 and np.bincount(test.labels, minlength=10).tolist() == [5] * 10
    assert list(test.labels) == sorted(test.labels)     # file order kept
    again = finetune.load_test_split(config)
    assert np.array_equal(again.ids, test.ids)          # the same images every time
    whole = load_config(FinetuneConfig, "finetune", "smoke", [])
    assert len(finetune.load_test_split(whole)) == 300
    with pytest.raises(ConfigError, match="test_limit must be a positive multiple"):
        load_config(FinetuneConfig, "finetune", "smoke", ["test_limit=55"])


def test_named_configs():
    paper = load_config(FinetuneConfig, "finetune", "cifar10_paper")
    assert (paper.epochs, paper.optimizer.decay_epochs, paper.batch_size) == (25, (15, 20), 128)
    assert (paper.attack.steps, paper.attack.random_start, paper.alf_attack.random_start,
            paper.eval_attack.steps, paper.trades_beta, paper.val_size) == (
        10, "normal", "uniform", 20, 6.0, 5000)
    assert paper.optimizer.weight_decay == 2e-4 and paper.optimizer.momentum == 0.9
    public = load_config(FinetuneConfig, "finetune", "cifar10_public")
    assert (public.epochs, public.optimizer.decay_epochs) == (100, (40, 60))
    smoke = load_config(FinetuneConfig, "finetune", "smoke", ["mode=ALF", "bn=normal"])
    assert (smoke.mode, smoke.bn, smoke.freeze_encoder, smoke.model.width) == (
        "alf", "normal", True, 8)
    assert to_dict(smoke)["optimizer"]["decay_epochs"] == [1]


@pytest.mark.parametrize("override,message", [
    ("mode=full", "Unknown fine-tuning mode"), ("bn=clean", "Unknown BN branch"),
    ("val_size=55", "multiple of data.num_classes"), ("select_by=loss", "select_by"),
    ("optimizer.decay_epochs=[20,15]", "decay_epochs"), ("epochs=0", "epochs"),
])
def test_bad_config_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(FinetuneConfig, "finetune", "smoke", [override])


# -- runner, CLI, resume -----------------------------------------------------------------------
TINY = ["data.limit=120", "val_size=20", "epochs=2", "eval_batch_size=200", "eval_attack.steps=2"]


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A tiny DS pre-training run (width 4) made with run_pretraining."""
    from acl_tf.configs import PretrainConfig
    from acl_tf.tasks.pretrain import run_pretraining

    run_dir = tmp_path_factory.mktemp("pretrained")
    config = load_config(PretrainConfig, "pretrain", "smoke", [
        f"data.source={SAMPLE_DIR}", "model.width=4", "model.head_dim=16", "data.limit=64",
        "epochs=1", "batch_size=32", "attack.steps=1"])
    run_pretraining(config, run_dir, verbose=0)
    assert (run_dir / "encoder.keras").exists()
    return run_dir


def run_cli(module, *args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_aff_smoke_on_pretrained_encoder(pretrained_dir, tmp_path):
    out = tmp_path / "aff"
    result = run_cli("acl_tf.finetune", "--config=smoke", f"--pretrained={pretrained_dir}",
                     "--mode=aff", "--bn=adv", f"--model_dir={out}",
                     *[f"--set={s}" for s in TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("best.keras", "last.keras", "metrics.json", "history.json", "config.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["mode"] == "aff" and metrics["bn"] == "adv" and metrics["finished"]
    assert metrics["best_epoch"] == max(metrics["epochs"], key=lambda e: e["val_adv_acc"])["epoch"]
    assert 0 <= metrics["test"]["adv_acc"] <= 1 and metrics["test"]["count"] == 200
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["width"] == 4  # from the encoder, not the smoke config's 8
    history = json.loads((out / "history.json").read_text())
    assert {"loss", "acc", "adv_acc", "val_acc", "val_adv_acc"} <= set(history[-1])
    best = keras.saving.load_model(out / "best.keras", compile=False)
    assert isinstance(best, Classifier) and best.branch == "adv" and not best.freeze_encoder
    assert "best epoch" in result.stdout
    exported = metrics["saved_model"]
    assert exported and os.path.isfile(os.path.join(exported, "saved_model.pb"))
    assert os.path.dirname(exported) == str(out / "saved_model")


@pytest.mark.slow
def test_resume_after_a_crash(tmp_path):
    """RI + SLF: crash after epoch 1, lose its model selection files, resume to the end."""
    from acl_tf.tasks.finetune import run_finetuning

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("simulated crash")

    config = load_config(FinetuneConfig, "finetune", "smoke", TINY + [
        f"data.source={SAMPLE_DIR}", "mode=slf", "model.width=4", "evaluate_test=false",
        "export=false"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_finetuning(config, tmp_path, callbacks=[Crash()], verbose=0)
    first = read_metrics(tmp_path)["epochs"]
    assert [e["epoch"] for e in first] == [1]
    # As if the crash had come between the checkpoint and the model selection files.
    for name in ("metrics.json", "best.keras", "last.keras"):
        (tmp_path / name).unlink()
    from acl_tf.tasks.fit import RunDirError

    with pytest.raises(RunDirError, match="--resume"):
        run_finetuning(config, tmp_path, verbose=0)
    _, metrics = run_finetuning(config, tmp_path, resume=True, verbose=0)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][0] == first[0]  # re-measured from the restored checkpoint
    assert [h["epoch"] for h in json.loads((tmp_path / "history.json").read_text())] == [1, 2]
    assert (tmp_path / "best.keras").exists() and (tmp_path / "last.keras").exists()
    assert "test" not in metrics and metrics["finished"] and metrics["saved_model"] is None
    assert not (tmp_path / "saved_model").exists()


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


def test_pretrained_and_width_errors(pretrained_dir, tmp_path):
    from acl_tf.cli.finetune import resolve_config

    def resolve(pretrained, overrides=()):
        return resolve_config("smoke", list(overrides), "aff", "adv", pretrained,
                              tmp_path / "run", False)

    assert resolve(str(pretrained_dir)).model.width == 4
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no encoder.keras"):
        resolve(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="model.width mismatch.*width=4"):
        resolve(str(pretrained_dir), ["model.width=8"])
    with pytest.raises(ConfigError, match="not an encoder"):
        resolve(str(pretrained_dir / "pretrainer.keras"))


@pytest.mark.e2e
def test_cli_reports_bad_input(tmp_path):
    result = run_cli("acl_tf.finetune", "--config=smoke", "--mode=full",
                     f"--model_dir={tmp_path / 'x'}")
    assert result.returncode == 2 and "Unknown fine-tuning mode 'full'" in result.stderr
    result = run_cli("acl_tf.linear_eval", "--config=smoke", f"--pretrained={tmp_path}/none",
                     f"--model_dir={tmp_path / 'y'}")
    assert result.returncode == 2 and "does not exist" in result.stderr
