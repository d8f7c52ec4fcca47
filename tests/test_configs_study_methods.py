"""acl_tf.configs.study: MethodsStudyConfig (the comparison of ACL's successors) rejects what
cannot be compared, and load_study_config tells the two kinds of study apart."""

import pytest

from acl_tf.configs import (
    ConfigError,
    MethodsStudyConfig,
    StudyConfig,
    StudyMethod,
    load_study_config,
)
from acl_tf.configs.study import DEFAULT_METHODS, PUBLISHED_METHODS


def test_methods_study_config_rejects_what_cannot_be_compared():
    acl = StudyMethod(key="acl", pretrain="cifar10_official")
    with pytest.raises(ConfigError, match="methods must be a non-empty list"):
        MethodsStudyConfig(methods=())
    with pytest.raises(ConfigError, match=r"methods must be distinct; \['acl'\] .*\(as keys\)"):
        MethodsStudyConfig(methods=(acl, StudyMethod(key="acl", pretrain="cifar10_dynacl")))
    with pytest.raises(ConfigError, match=r"seeds must be distinct; \[1\]"):
        MethodsStudyConfig(methods=(acl,), seeds=(1, 0, 1))
    with pytest.raises(ConfigError, match="modes must be a non-empty list"):
        MethodsStudyConfig(methods=(acl,), modes=())
    with pytest.raises(ConfigError, match=r"Unknown fine-tuning mode .knn. for .*modes\[1\]"):
        MethodsStudyConfig(methods=(acl,), modes=("aff", "knn"))
    with pytest.raises(ConfigError, match="key must be lower-case"):
        StudyMethod(key="DynACL++")
    with pytest.raises(ConfigError, match="key must be lower-case"):
        StudyMethod(key="")
    assert StudyMethod().key == "acl"      # the default is ACL's own row
    with pytest.raises(ConfigError, match="Unknown published method 'simclr'"):
        StudyMethod(key="simclr", published="simclr")
    with pytest.raises(ConfigError, match="postprocess_overrides but no postprocess"):
        StudyMethod(key="x", postprocess_overrides=("aft.epochs=1",))
    # The name defaults to the key; published rows are matched case-insensitively.
    method = StudyMethod(key="dynacl_air_pp", published="DynACL-AIR++")
    assert method.name == "dynacl_air_pp" and method.published == "dynacl-air++"
    assert [m.published for m in DEFAULT_METHODS] == list(PUBLISHED_METHODS)
    assert MethodsStudyConfig().methods == DEFAULT_METHODS


def test_load_study_config_tells_the_kinds_apart(tmp_path):
    assert isinstance(load_study_config("cifar10_cpu"), StudyConfig)
    assert isinstance(load_study_config("smoke", ["variants=[ds]", "linear=[ds]",
                                                  "bn_ablation=[ds]"]), StudyConfig)
    config = load_study_config("methods_cpu", ["seeds=[0,1]"])
    assert isinstance(config, MethodsStudyConfig) and config.seeds == (0, 1)
    assert [m.key for m in config.methods] == [
        "acl", "dynacl", "dynacl_pp", "dynacl_air", "dynacl_air_pp", "dynacl_mom"]
    assert [m.name for m in config.methods] == [
        "ACL (DS)", "DynACL", "DynACL++", "DynACL-AIR", "DynACL-AIR++",
        "DynACL (momentum encoder)"]
    assert config.methods[-1].pretrain_overrides == ("dynamic.momentum_encoder=true",)
    assert config.modes == ("aff", "slf") and config.bn == "adv"
    own = tmp_path / "mine.yaml"
    own.write_text("methods:\n  - {key: a, pretrain: smoke}\nseeds: [3]\n")
    config = load_study_config(str(own))
    assert isinstance(config, MethodsStudyConfig) and config.methods[0].pretrain == "smoke"
    assert config.seeds == (3,) and config.finetune == "cifar10_paper"
    # An override that sets methods makes the study a comparison too.
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    assert isinstance(load_study_config(str(empty)), StudyConfig)
    assert isinstance(load_study_config(str(empty), ["methods=[{key: a}]"]), MethodsStudyConfig)
    with pytest.raises(ConfigError, match="Unknown config field.*variants"):
        load_study_config("methods_smoke", ["variants=[ds]"])
    with pytest.raises(ConfigError, match="Unknown study config 'nope'"):
        load_study_config("nope")
