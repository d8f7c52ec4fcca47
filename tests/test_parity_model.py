"""Parity of the model and the contrastive loss with the reference PyTorch code.

Vectors ``tests/parity/forward.npz`` and ``nt_xent.npz`` (``scripts/parity/make_vectors.py``):
the reference's multi-BN ResNet-18 + 3-layer projection head (``bn_names=['normal', 'pgd']``) with
seeded weights on 8 CIFAR-sized images, and ``utils.nt_xent`` on fixed features. The model is built
from the ``cifar10_official`` pre-training preset (ImageNet input normalisation, as the reference).
Tolerances and measured differences: docs/parity.md, "Parity vectors".
"""

import numpy as np
import pytest
import tensorflow as tf

import parity_helpers as ph
from acl_tf.configs import PretrainConfig
from acl_tf.configs.loader import load_config
from acl_tf.losses import nt_xent

BRANCHES = {"normal": "normal", "pgd": "adv"}     # reference bn_names -> acl-tf branch
# Tolerances: max abs difference / max abs reference value (float32 rounding in both frameworks;
# the training-mode head normalises 8 samples per BN, which amplifies it).
FEATURES_RTOL = 2e-5
PROJECTION_RTOL = 2e-5
TRAIN_PROJECTION_RTOL = 2e-4
STATS_RTOL = 2e-5
LOSS_RTOL = 1e-6
GRAD_RTOL = 1e-5


@pytest.fixture(scope="module")
def forward():
    return ph.load("forward")


@pytest.fixture(scope="module")
def official_model(forward):
    from acl_tf.tasks.pretrain import build_pretrainer

    config = load_config(PretrainConfig, "pretrain", "cifar10_official")
    model = build_pretrainer(config)
    weights = ph.weights_of(forward)
    ph.check_digest(forward, weights)
    return model, weights


def _load(model, weights):
    ph.load_into(weights, model.encoder, model.head, branches=("normal", "adv"))


@pytest.mark.parametrize("ref_branch", ["normal", "pgd"])
def test_forward_inference_matches_reference(forward, official_model, ref_branch):
    model, weights = official_model
    _load(model, weights)
    x = ph.nchw_to_nhwc(ph.input_of(forward, "x"))
    branch = BRANCHES[ref_branch]
    features = model.encoder(x, training=False, branch=branch)
    z = model.head(features, training=False, branch=branch)
    ph.check_close(f"forward {ref_branch} inference features", features,
                   forward[f"{ref_branch}/eval/features"], FEATURES_RTOL)
    ph.check_close(f"forward {ref_branch} inference projection", z,
                   forward[f"{ref_branch}/eval/projection"], PROJECTION_RTOL)


@pytest.mark.parametrize("ref_branch", ["normal", "pgd"])
def test_forward_training_mode_and_moving_statistics_match_reference(forward, official_model,
                                                                     ref_branch):
    """Batch statistics in the training pass; afterwards the branch's moving statistics are the
    reference's running statistics, once PyTorch's unbiased (n - 1) batch variance is converted to
    the biased one acl-tf averages (a documented difference; the other branch is untouched)."""
    model, weights = official_model
    _load(model, weights)
    x = ph.nchw_to_nhwc(ph.input_of(forward, "x"))
    branch = BRANCHES[ref_branch]
    features = model.encoder(x, training=True, branch=branch)
    z = model.head(features, training=True, branch=branch)
    ph.check_close(f"forward {ref_branch} training features", features,
                   forward[f"{ref_branch}/train/features"], FEATURES_RTOL)
    ph.check_close(f"forward {ref_branch} training projection", z,
                   forward[f"{ref_branch}/train/projection"], TRAIN_PROJECTION_RTOL)

    index = list(BRANCHES).index(ref_branch)
    mapping = ph.variable_map(weights, model.encoder, model.head)
    for key, var in mapping.items():          # the other branch is untouched
        if key.endswith(("running_mean", "running_var")) and f"bn_list.{index}." not in key:
            np.testing.assert_array_equal(var.numpy(), weights[key], err_msg=key)
    worst = ph.compare_stats(forward, f"{ref_branch}/stats", mapping, weights, len(x),
                             only=lambda key: f"bn_list.{index}." in key)
    for kind in ("running_mean", "running_var"):
        ph.record(f"forward {ref_branch} moving {kind} (worst BN)", rel=worst[kind],
                  tol=STATS_RTOL)
        assert worst[kind] <= STATS_RTOL, worst
    # Unconverted, the head's BN (n = 8 views) differs by up to 0.1 var / (n - 1) / running_var.
    ph.record(f"forward {ref_branch} moving variance, unconverted",
              rel=worst["running_var_unconverted"])
    assert 1e-3 < worst["running_var_unconverted"] < 0.05


def test_nt_xent_matches_reference():
    vectors = ph.load("nt_xent")
    for name in ("small", "large"):
        z = tf.constant(vectors[f"{name}/z"])
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = nt_xent(z[0::2], z[1::2], temperature=0.5)
        grad = tape.gradient(loss, z).numpy()
        ref_grad = vectors[f"{name}/grad"]
        ph.check_close(f"nt_xent {name} loss", float(loss), float(vectors[f"{name}/loss"]),
                       LOSS_RTOL)
        ph.check_close(f"nt_xent {name} gradient", grad, ref_grad, GRAD_RTOL)


def test_normalization_option_builds_the_reference_constants():
    """``model.normalization`` (new for the official presets): the encoders a run builds
    normalise with ImageNet's mean/std as the reference ResNet-18, or CIFAR-10's (default)."""
    from acl_tf.configs import ConfigError, FinetuneConfig
    from acl_tf.models import NORMALIZATIONS, build_encoder
    from acl_tf.tasks.encoders import load_encoder

    imagenet = build_encoder("resnet18", 2, normalization="imagenet")
    assert imagenet.normalize.mean == (0.485, 0.456, 0.406)
    assert imagenet.normalize.std == (0.229, 0.224, 0.225)
    assert build_encoder("resnet18", 2).normalize.mean == NORMALIZATIONS["cifar10"][0]
    with pytest.raises(ValueError, match="normalization"):
        build_encoder("resnet18", 2, normalization="mnist")
    with pytest.raises(ConfigError, match="normalization"):
        load_config(PretrainConfig, "pretrain", "smoke", ["model.normalization=mnist"])
    config = load_config(FinetuneConfig, "finetune", "cifar10_official", ["model.width=2"])
    assert load_encoder(config).normalize.std == NORMALIZATIONS["imagenet"][1]
    assert load_config(PretrainConfig, "pretrain", "smoke").model.normalization == "cifar10"
