"""The semi-supervised configs (acl_tf.configs.semisup: SemisupConfig): the named configs and
bad values."""

import pytest

from acl_tf.configs import ConfigError, SemisupConfig, load_config


def test_semisup_config_checks():
    config = load_config(SemisupConfig, "semisup", "cifar10_paper")
    assert (config.label_fraction, config.temperature, config.student.alpha,
            config.student.beta, config.student.attack.steps) == (0.01, 1.0, 0.5, 6.0, 10)
    assert config.student.optimizer.weight_decay == 5e-4
    assert load_config(SemisupConfig, "semisup", "smoke").data.source == "sample:cifar10"
    for overrides, message in [
            (["labels_per_class=4"], "exactly one"),
            (["label_fraction=null"], "exactly one"),
            (["label_fraction=1.5"], "label_fraction"),
            (["val_size=15"], "val_size"),
            (["temperature=0"], "temperature"),
            (["student.alpha=2"], "alpha"),
            (["student.alpha_convention=torch"], "alpha_convention"),
            (["student.select_by=loss"], "select_by"),
            (["teacher.epochs=0"], "teacher")]:
        with pytest.raises(ConfigError, match=message):
            load_config(SemisupConfig, "semisup", "smoke", overrides)
