"""acl_tf.configs.study: StudyConfig rejects what cannot be studied."""

import pytest

from acl_tf.configs import ConfigError, StudyConfig


def test_study_config_rejects_what_cannot_be_studied():
    with pytest.raises(ConfigError, match="variants"):
        StudyConfig(variants=("ds", "simclr"))
    with pytest.raises(ConfigError, match="bn_ablation .*dual-BN"):
        StudyConfig(bn_ablation=("s2s",))
    with pytest.raises(ConfigError, match="linear names \\['a2a'\\]"):
        StudyConfig(variants=("ds",), linear=("a2a",), bn_ablation=())
