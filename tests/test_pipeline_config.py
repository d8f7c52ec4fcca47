"""pipeline/config.py: the named pipeline configs resolve (the smoke one is tiny), bad ones fail
before running, stage configs survive the JSON parameter, relative paths resolve."""

import pytest

pytest.importorskip("tfx.v1")

from acl_tf.configs import ConfigError  # noqa: E402
from pipeline import config as pconfig  # noqa: E402


@pytest.mark.parametrize("name,mode", [("smoke", "semisup"), ("smoke_finetune", "finetune"),
                                       ("cifar10", "finetune"), ("cifar10_semisup", "semisup")])
def test_named_pipeline_configs_resolve(name, mode):
    config = pconfig.load_pipeline_config(name)
    stages = config.resolve()
    assert config.mode == mode
    assert (stages.finetune is None) == (mode == "semisup")
    assert (stages.semisup is None) == (mode == "finetune")
    trainer = stages.finetune or stages.semisup
    for stage in (stages.pretrain, trainer, stages.evaluate):
        assert stage.data.source == pconfig.EXAMPLES_SOURCE
        assert (stage.data.train_split, stage.data.test_split) == ("train", "test")
    # The pre-trained encoder and the test split come from other components.
    assert trainer.pretrained is None and trainer.evaluate_test is False
    assert config.blessing.metric in stages.evaluate.attacks


def test_smoke_config_is_tiny():
    stages = pconfig.load_pipeline_config("smoke").resolve()
    assert stages.pretrain.epochs == 1 and stages.pretrain.model.width <= 8
    assert stages.semisup.student.epochs == 1 and stages.semisup.teacher.epochs == 1
    assert stages.evaluate.data.limit <= 64 and not stages.evaluate.eps_sweep


@pytest.mark.parametrize("overrides,message", [
    (["mode=distill"], "mode must be one of"),
    (["blessing.metric=pgd7"], "blessing.metric 'pgd7' is not one of the evaluations"),
    (["blessing.threshold=1.5"], "blessing.threshold must be in"),
    (["pretrain.config=no_such_config"], "pretrain: Unknown pretrain config 'no_such_config'"),
    (["semisup.overrides=[label_fraction=2.0]"], "label_fraction must be in"),
    (["serving_model_name=a/b"], "serving_model_name must be a directory name"),
    (["colour=red"], "Unknown config field"),
])
def test_bad_pipeline_configs_fail_before_running(overrides, message):
    with pytest.raises(ConfigError, match=message):
        pconfig.load_pipeline_config("smoke", overrides).resolve()


def test_stage_configs_survive_the_json_parameter():
    stages = pconfig.load_pipeline_config("smoke").resolve()
    for stage in (stages.pretrain, stages.semisup, stages.evaluate):
        text = pconfig.config_to_json(stage)
        assert pconfig.config_from_json(type(stage), text) == stage
        assert text == pconfig.config_to_json(pconfig.config_from_json(type(stage), text))
    with pytest.raises(ConfigError, match="Cannot parse"):
        pconfig.config_from_json(type(stages.pretrain), "{not json")


def test_resolve_path(tmp_path):
    assert pconfig.resolve_path("data/x", tmp_path) == str(tmp_path / "data" / "x")
    assert pconfig.resolve_path("/abs/x", tmp_path) == "/abs/x"
    assert pconfig.resolve_path("gs://bucket/x", tmp_path) == "gs://bucket/x"
