"""The encoder a classifier starts from (acl_tf.tasks.encoders): the pre-trained run's encoder, its
architecture read without loading it, the config aligned to it, RI, the classifier built on it."""

import dataclasses

import keras
import numpy as np
import pytest
from pretrain_helpers import tiny_pretraining_run

from acl_tf.configs import ConfigError, FinetuneConfig, load_config
from acl_tf.models import Classifier, ResNet18
from acl_tf.tasks.encoders import align_model_config, build_classifier, encoder_path, encoder_spec


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A tiny DS pre-training run (width 4) made with run_pretraining."""
    return tiny_pretraining_run(tmp_path_factory.mktemp("pretrained"))


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


@pytest.fixture(scope="module")
def single_bn_run(tmp_path_factory):
    """A run directory holding only a width-4 single-BN ResNet-18 as ``encoder.keras``."""
    run_dir = tmp_path_factory.mktemp("single_bn")
    keras.utils.set_random_seed(2)
    encoder = ResNet18(width=4, dual_bn=False)
    encoder(np.zeros((1, 32, 32, 3), np.float32))
    encoder.save(run_dir / "encoder.keras")
    return run_dir


def test_encoder_path_and_spec(single_bn_run, tmp_path):
    file = single_bn_run / "encoder.keras"
    assert encoder_path(single_bn_run) == file
    assert encoder_path(str(file)) == file
    assert encoder_spec(file) == {"arch": "resnet18", "width": 4, "dual_bn": False}
    with pytest.raises(ConfigError, match="encoder file .*missing.keras' does not exist"):
        encoder_path(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="Cannot read the encoder .*junk.keras"):
        encoder_spec(tmp_path / "junk.keras")


def test_align_model_config_follows_the_saved_encoder(single_bn_run):
    config = load_config(FinetuneConfig, "finetune", "smoke", ["mode=slf"])
    assert (config.model.width, config.model.bn) == (8, "auto")
    assert align_model_config(config) is config                     # RI: nothing to follow
    pretrained = dataclasses.replace(config, pretrained=str(single_bn_run))
    aligned = align_model_config(pretrained)
    assert (aligned.model.arch, aligned.model.width, aligned.model.bn) == ("resnet18", 4, "single")
    assert aligned.mode == "slf" and aligned.pretrained == str(single_bn_run)
    assert align_model_config(pretrained, strict=("arch",)).model.width == 4   # arch agrees
    with pytest.raises(ConfigError, match="model.width mismatch: the config sets width=8 but "
                                          "the pre-trained encoder .* has width=4"):
        align_model_config(pretrained, strict=("width",))


def test_build_classifier_from_the_saved_encoder_and_at_random(single_bn_run):
    config = load_config(FinetuneConfig, "finetune", "smoke", [
        "mode=slf", f"pretrained={single_bn_run}", "model.width=4", "model.bn=single"])
    saved = keras.saving.load_model(single_bn_run / "encoder.keras", compile=False)
    classifier = build_classifier(config, "normal", freeze_encoder=True)
    assert isinstance(classifier, Classifier) and classifier.built
    assert (classifier.branch, classifier.freeze_encoder, classifier.num_classes) == (
        "normal", True, 10)
    for got, want in zip(classifier.encoder.weights, saved.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert not np.any(classifier.fc.kernel.numpy()) and not np.any(classifier.fc.bias.numpy())
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(classifier.encoder(x, training=False).numpy(),
                               saved(x, training=False).numpy(), atol=1e-6)
    # RI: a fresh encoder of the config's architecture (dual BN unless model.bn is single).
    random = build_classifier(dataclasses.replace(config, pretrained=None), "adv")
    assert random.encoder.width == 4 and not random.encoder.dual_bn
    assert not random.freeze_encoder and random.branch == "adv"
