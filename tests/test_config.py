"""Typed configs: named files, overrides, validation, JSON round trip."""

import pytest

from acl_tf.configs import (
    ConfigError,
    PretrainConfig,
    available_configs,
    load_config,
    read_config,
    write_config,
)


def test_named_configs_load():
    assert {"cifar10_resnet18", "smoke"} <= set(available_configs("pretrain"))
    paper = load_config(PretrainConfig, "pretrain", "cifar10_resnet18")
    assert (paper.batch_size, paper.epochs, paper.temperature) == (512, 1000, 0.5)
    assert paper.attack.steps == 5 and paper.attack.epsilon == pytest.approx(8 / 255)
    assert paper.optimizer.name == "lars" and paper.optimizer.warmup_epochs == 10
    smoke = load_config(PretrainConfig, "pretrain", "smoke")
    assert smoke.data.source == "data/cifar10_sample" and smoke.model.width == 8
    # Fields the smoke file does not name keep the dataclass defaults.
    assert smoke.attack.steps == 5 and smoke.augment.grayscale_prob == 0.2


def test_overrides_are_typed():
    config = load_config(PretrainConfig, "pretrain", "smoke",
                         ["model.width=16", "optimizer.learning_rate=0.5", "variant=A2S",
                          "augment.crop_scale=[0.1, 1.0]", "data.limit=null", "ds_average=true"])
    assert config.model.width == 16 and config.optimizer.learning_rate == 0.5
    assert config.variant == "a2s" and config.augment.crop_scale == (0.1, 1.0)
    assert config.data.limit is None and config.ds_average is True
    assert config.dual_bn


@pytest.mark.parametrize("override,message", [
    ("model.depth=3", r"Unknown config field\(s\) \['model.depth'\]"),
    ("batch_size=big", "'batch_size' must be an integer"),
    ("variant=simclr", "Unknown ACL variant 'simclr'"),
    ("model.bn=triple", "model.bn must be one of"),
    ("augment.grayscale_prob=2", "grayscale_prob"),
    ("optimizer.name=rmsprop", "optimizer.name must be one of"),
    ("widthless", "must look like field.subfield=value"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, "pretrain", "smoke", [override])


def test_unknown_config_name():
    with pytest.raises(ConfigError, match="Unknown pretrain config 'tiny'.*smoke"):
        load_config(PretrainConfig, "pretrain", "tiny")


def test_json_round_trip(tmp_path):
    config = load_config(PretrainConfig, "pretrain", "smoke", ["variant=a2a"])
    write_config(config, tmp_path / "config.json")
    assert read_config(PretrainConfig, tmp_path / "config.json") == config
    assert load_config(PretrainConfig, "pretrain", str(tmp_path / "config.json")) == config
