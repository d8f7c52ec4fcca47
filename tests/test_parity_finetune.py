"""Parity of fine-tuning and its evaluation with the reference PyTorch code.

Vectors (``scripts/parity/make_vectors.py``): ``trades_step.npz`` (one iteration of
``train_trades.py``'s ``train`` with its defaults: the TRADES loss of ``trades.py`` from a stored
x + 0.001 N(0, 1) start, SGD with momentum and coupled weight decay) and ``pgd20.npz``
(``utils.eval_adv_test``, PGD-20 from a stored uniform start, on the seeded classifier). The
reference fine-tunes a single-BN ResNet-18 (the pre-trained ``bn_list.<bnNameCnt>`` copied into
it); acl-tf's classifier here is the ``cifar10_official`` preset's, dual-BN on the ``adv``
branch, which receives the reference's BN values (the ``normal`` branch must stay untouched).
Tolerances and measured differences: docs/parity.md, "Parity vectors".
"""

import numpy as np
import pytest
import tensorflow as tf

import parity_helpers as ph
from acl_tf import attacks
from acl_tf.attacks import model_loss_fn, pgd_linf
from acl_tf.configs import FinetuneConfig
from acl_tf.configs.loader import load_config
from acl_tf.losses import cross_entropy

# Tolerances per precision (docs/parity.md). In float32 the 10- and 20-step classification
# attacks are chaotic: a sign step taken differently where the gradient is ~0 (float rounding of
# either framework) moves the next gradients, and the two x' end up apart on a share of the
# pixels that grows with the steps; in float64 they coincide. The step's loss, gradients and
# update are compared from the reference's x' (see tests/test_parity_pretrain.py for the
# gradient tolerance of 1e-2 in float32: a ReLU input rounding to the other side of 0).
TOLERANCES = {
    "float32": {"pixels": 0.3, "logits": 1e-4, "loss": 1e-5, "grad": 3e-2, "norm": 5e-3,
                "update": 3e-2, "stats": 1e-4, "accuracy": 2 / 16},
    # float64: exact to rounding, but the loss is read from the float32 ``loss`` metric and the
    # optimizer's learning rate is a float32 variable (0.1 -> 0.10000000149).
    "float64": {"pixels": 0.0, "logits": 1e-12, "loss": 2e-7, "grad": 1e-10, "norm": 1e-12,
                "update": 1e-7, "stats": 1e-12, "accuracy": 0.0},
}
VECTORS = {"float32": "", "float64": "_f64"}


def _official(vec, preset="cifar10_official"):
    from acl_tf.optimizers import build_finetune_optimizer
    from acl_tf.tasks.finetune import build_finetuner

    config = load_config(FinetuneConfig, "finetune", preset)
    model = build_finetuner(config)
    weights = ph.weights_of(vec)
    ph.check_digest(vec, weights)
    classifier = model.classifier
    assert classifier.branch == "adv"
    mapping = ph.load_into(weights, classifier.encoder, fc=classifier.fc, branches=("adv",),
                           unassigned=("/normal/",))
    model.compile(optimizer=build_finetune_optimizer(config.optimizer, 1))
    return config, model, weights, mapping


def _inject(monkeypatch, draws):
    """The attacks' random draws (``attacks.random_noise``) are ``draws`` (N(0, 1) for the
    TRADES start, uniform [0, 1) for PGD-20) turned into noise as the reference does; acl-tf's
    own code decides what to do with the start (``project_start``)."""
    def noise(shape, config, seed=None, dtype=tf.float32):
        # In the reference's precision: float32 arithmetic on float32 tensors, double on double.
        real = np.dtype(tf.as_dtype(dtype).name).type
        if config.random_start == "normal":
            return tf.constant(real(config.normal_std) * draws.astype(real), dtype)
        eps = real(config.epsilon)
        return tf.constant(draws.astype(real) * eps * real(2) - eps, dtype)

    monkeypatch.setattr(attacks, "random_noise", noise)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_trades_step_matches_reference(monkeypatch, restore_policy, precision):
    import keras

    keras.config.set_dtype_policy(precision)
    tol = TOLERANCES[precision]
    vec = ph.load("trades_step" + VECTORS[precision])
    config, model, weights, mapping = _official(vec)
    assert config.trades_beta == float(vec["beta"]) and config.attack.steps == int(vec["steps"])
    assert not config.attack.project_start
    x = ph.nchw_to_nhwc(ph.input_of(vec, "x")).astype(precision)
    y = vec["y"]
    _inject(monkeypatch, ph.nchw_to_nhwc(ph.input_of(vec, "noise")))
    ref_x_adv = ph.nchw_to_nhwc(vec["x_adv"]).astype(precision)
    captured = {}
    attack = model.adversarial_examples

    def recording_attack(*args):
        captured["x_adv"] = attack(*args).numpy()
        return tf.constant(ref_x_adv)          # the step goes on from the reference's x'

    apply = model.apply_gradients

    def recording_apply(grads, variables):
        captured["grads"] = {id(v): g for g, v in zip(grads, variables) if g is not None}
        apply(grads, variables)

    monkeypatch.setattr(model, "adversarial_examples", recording_attack)
    monkeypatch.setattr(model, "apply_gradients", recording_apply)
    before = {id(v): v.numpy().astype(np.float64) for v in model.weights}
    lr = float(model.optimizer.learning_rate)
    logs = model.train_step((tf.constant(x), tf.constant(y)))

    differ = float(np.mean(np.abs(captured["x_adv"] - ref_x_adv) > 1e-6))
    name = f"trades step {precision}"
    ph.record(f"{name}: fraction of pixels of x' that differ", rel=differ, tol=tol["pixels"])
    assert differ <= tol["pixels"]
    ph.check_close(f"{name}: learning rate", lr, float(vec["lr"]), 1e-7)
    ph.check_close(f"{name}: loss", float(logs["loss"]), float(vec["loss"]), tol["loss"])
    if "trades_repo_loss" in vec:      # TRADES' own trades_loss gave the same
        assert float(vec["trades_repo_loss"]) == pytest.approx(float(vec["loss"]), rel=1e-6)

    keys = list(weights)
    grads = {k: captured["grads"][id(v)].numpy() for k, v in mapping.items()
             if id(v) in captured["grads"]}
    assert set(grads) == {k for k in keys if f"grad/{k}" in vec}
    worst = ph.compare_packed(vec, "grad", grads, keys)
    ph.record(f"{name}: gradients (worst tensor)", max_abs=worst["abs"], rel=worst["rel"],
              norm_rel=worst["norm_rel"], worst=worst["worst"], tol=tol["grad"])
    assert worst["rel"] <= tol["grad"] and worst["norm_rel"] <= tol["norm"], worst
    updates = {k: v.numpy().astype(np.float64) - before[id(v)] for k, v in mapping.items()
               if k in grads}
    worst = ph.compare_packed(vec, "update", updates, keys)
    ph.record(f"{name}: SGD update w' - w (worst tensor)", max_abs=worst["abs"],
              rel=worst["rel"], norm_rel=worst["norm_rel"], worst=worst["worst"],
              tol=tol["update"])
    assert worst["rel"] <= tol["update"] and worst["norm_rel"] <= tol["update"], worst

    # Two training passes (clean, adversarial) each update the moving statistics.
    worst = ph.compare_stats(vec, "stats", mapping, weights, len(x), keep=0.81)
    worst = max(worst["running_mean"], worst["running_var"])
    ph.record(f"{name}: BN moving statistics (worst)", rel=worst, tol=tol["stats"])
    assert worst <= tol["stats"]
    untouched = [v for v in model.weights if "/normal/" in v.path]
    assert untouched and all(np.array_equal(v.numpy(), before[id(v)]) for v in untouched)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_pgd20_evaluation_matches_reference(monkeypatch, restore_policy, precision):
    """The model-selection attack of the official preset (PGD-20, uniform start, unprojected as
    the reference) from the reference's start: x', the logits there, and the accuracy (acl-tf
    counts an example only if it is also correct clean; the reference counts x' alone).

    In float64 the first 4 of the 16 images are attacked (the attack treats every example on its
    own: inference-mode BN, a per-example loss), to keep the slow double-precision run short."""
    import keras

    from acl_tf.tasks.selection import validation_accuracy

    keras.config.set_dtype_policy(precision)
    tol = TOLERANCES[precision]
    vec = ph.load("pgd20" + VECTORS[precision])
    config, model, _, _ = _official(vec)
    attack = config.eval_attack
    assert attack.steps == int(vec["steps"]) == 20 and attack.random_start == "uniform"
    ref_acc = float(vec["accuracy"])
    assert 0.2 < ref_acc < 0.8                       # the vector has robust and broken examples
    assert float(np.mean(vec["logits_adv"].argmax(1) == vec["y"])) == ref_acc
    n = 4 if precision == "float64" else len(vec["y"])
    x = ph.nchw_to_nhwc(ph.input_of(vec, "x")).astype(precision)[:n]
    y = vec["y"][:n]
    _inject(monkeypatch, ph.nchw_to_nhwc(ph.input_of(vec, "start"))[:n])
    classifier = model.classifier
    logits = classifier(x, training=False).numpy()
    name = f"pgd20 {precision}"
    ph.check_close(f"{name}: clean logits", logits, vec["logits"][:n], tol["logits"])

    def ce(out):
        return cross_entropy(y, out, "sum")

    x_adv = pgd_linf(model_loss_fn(classifier, ce, branch="adv"), tf.constant(x), attack,
                     seed=tf.constant([0, 0], tf.int64)).numpy()
    ref_x_adv = ph.nchw_to_nhwc(vec["x_adv"])[:n]
    differ = float(np.mean(np.abs(x_adv - ref_x_adv) > 1e-6))
    ph.record(f"{name}: fraction of pixels of x' that differ", rel=differ, tol=tol["pixels"])
    assert differ <= tol["pixels"]
    logits_adv = classifier(x_adv, training=False).numpy()
    ref_adv_correct = vec["logits_adv"][:n].argmax(1) == y
    adv_correct = logits_adv.argmax(1) == y
    ph.record(f"{name}: examples whose x' is classified otherwise",
              rel=float(np.mean(adv_correct != ref_adv_correct)), tol=tol["accuracy"])
    assert np.mean(adv_correct != ref_adv_correct) <= tol["accuracy"]
    if precision == "float64":
        ph.check_close(f"{name}: logits at x'", logits_adv, vec["logits_adv"][:n],
                       tol["logits"])
        return
    # Model selection's figure (acl-tf counts an example as robust only if it is also correct
    # clean; the reference counts x' alone): the same attack again, through the evaluation code.
    ours = validation_accuracy(classifier, x, y, attack, branch="adv")
    assert ours["adv_acc"] == float(np.mean(adv_correct & (logits.argmax(1) == y)))
    assert ours["acc"] == float(np.mean(vec["logits"].argmax(1) == y))
    ph.record(f"{name}: robust accuracy acl-tf (clean and x' correct) / reference (x' correct)",
              ours=ours["adv_acc"], ref=ref_acc)


def test_official_presets_are_the_reference_scripts_settings():
    official = load_config(FinetuneConfig, "finetune", "cifar10_official")
    paper = load_config(FinetuneConfig, "finetune", "cifar10_paper")
    public = load_config(FinetuneConfig, "finetune", "cifar10_official_public")
    assert official.optimizer.decay_epochs == (14, 19) and paper.optimizer.decay_epochs == (15, 20)
    assert public.optimizer.decay_epochs == (39, 59) and public.epochs == 100
    for config in (official, public):
        assert config.model.normalization == "imagenet"
        assert not any(a.project_start for a in (config.attack, config.alf_attack,
                                                 config.eval_attack))
    assert (official.batch_size, official.epochs, official.trades_beta) == (128, 25, 6.0)
    assert (official.optimizer.learning_rate, official.optimizer.momentum,
            official.optimizer.weight_decay) == (0.1, 0.9, 2e-4)
    assert official.attack.normal_std == 0.001 and official.attack.random_start == "normal"
