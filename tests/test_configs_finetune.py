"""The fine-tuning configs (acl_tf.configs.finetune: FinetuneConfig): the named configs and bad
values."""

import pytest

from acl_tf.configs import ConfigError, FinetuneConfig, load_config, to_dict


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
