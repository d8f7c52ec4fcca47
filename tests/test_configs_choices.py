"""Every choice of names is defined once, in acl_tf.configs.choices, and the library uses it."""

import importlib
import typing

import pytest

from acl_tf.configs import choices as c
from acl_tf.configs import fields


def test_each_tuple_is_its_literal():
    pairs = [(c.Variant, c.VARIANTS), (c.BnMode, c.BN_MODES), (c.Architecture, c.ARCHITECTURES),
             (c.HeadLayers, c.HEAD_LAYERS), (c.OptimizerName, c.OPTIMIZERS),
             (c.Schedule, c.SCHEDULES), (c.RandomStart, c.RANDOM_STARTS),
             (c.FinetuneMode, c.FINETUNE_MODES), (c.Branch, c.BRANCHES),
             (c.SelectBy, c.SELECT_BY), (c.AlphaConvention, c.ALPHA_CONVENTIONS),
             (c.SemisupStep, c.SEMISUP_STEPS), (c.AutoAttackName, c.AUTOATTACK_ATTACKS),
             (c.Corruption, c.CIFAR10C_CORRUPTIONS), (c.Severity, c.CIFAR10C_SEVERITIES),
             (c.Strategy, c.STRATEGIES), (c.Precision, c.BENCH_PRECISIONS)]
    for tp, names in pairs:
        assert typing.get_origin(tp) is typing.Annotated
        assert typing.get_args(typing.get_args(tp)[0]) == names
    assert c.VARIANTS == ("s2s", "a2a", "a2s", "ds")
    assert set(c.DUAL_BN_VARIANTS) < set(c.VARIANTS)
    assert c.AUTOATTACK_ATTACKS == ("apgd-ce", "apgd-t", "fab-t", "square")    # the run order
    assert len(c.CIFAR10C_CORRUPTIONS) == 19 and c.CIFAR10C_SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("check,given,expected", [
    (c.check_variant, "A2S", "a2s"), (c.check_variant, "ds", "ds"),
    (c.check_mode, "SLF", "slf"), (c.check_branch, "adv", "adv"),
    (c.check_branch, "Normal", "normal"),
])
def test_check_functions_lower_case(check, given, expected):
    assert check(given) == expected


@pytest.mark.parametrize("check,given,message", [
    (c.check_variant, "simclr", r"Unknown ACL variant 'simclr' for variant; expected one of "
                                r"\('s2s', 'a2a', 'a2s', 'ds'\)"),
    (c.check_mode, "full", r"Unknown fine-tuning mode 'full' .*\(aff: adversarial full"),
    (c.check_branch, "clean", r"Unknown BN branch 'clean' .*\('normal', 'adv'\)"),
    (c.check_branch, None, r"Unknown BN branch None"),
])
def test_check_functions_name_the_valid_names(check, given, message):
    with pytest.raises(ValueError, match=message) as info:
        check(given)
    assert isinstance(info.value, fields.ConfigError)


# The library's names are the configs' objects, not copies (module, name, configs' name).
SHARED = [
    ("acl_tf.attacks", "PGDConfig", "PGDConfig"),
    ("acl_tf.attacks", "RANDOM_STARTS", "RANDOM_STARTS"),
    ("acl_tf.data.augment", "AugmentConfig", "AugmentConfig"),
    ("acl_tf.evaluation.autoattack", "AutoAttackConfig", "AutoAttackConfig"),
    ("acl_tf.evaluation.autoattack", "AUTOATTACK_ATTACKS", "AUTOATTACK_ATTACKS"),
    ("acl_tf.evaluation.corruptions", "Cifar10CConfig", "Cifar10CConfig"),
    ("acl_tf.evaluation.corruptions", "CIFAR10C_CORRUPTIONS", "CIFAR10C_CORRUPTIONS"),
    ("acl_tf.evaluation.corruptions", "CIFAR10C_SEVERITIES", "CIFAR10C_SEVERITIES"),
    ("acl_tf.evaluation.guards", "GuardConfig", "GuardConfig"),
    ("acl_tf.evaluation.run", "parse_attack_name", "parse_attack_name"),
    ("acl_tf.trainers.pretrainer", "VARIANTS", "VARIANTS"),
    ("acl_tf.trainers.pretrainer", "DUAL_BN_VARIANTS", "DUAL_BN_VARIANTS"),
    ("acl_tf.trainers.pretrainer", "check_variant", "check_variant"),
    ("acl_tf.trainers.finetuner", "MODES", "FINETUNE_MODES"),
    ("acl_tf.trainers.finetuner", "check_mode", "check_mode"),
    ("acl_tf.losses", "ALPHA_CONVENTIONS", "ALPHA_CONVENTIONS"),
    ("acl_tf.distribute", "STRATEGIES", "STRATEGIES"),
    ("acl_tf.models", "check_branch", "check_branch"),
    ("acl_tf.models", "BRANCHES", "BRANCHES"),
    ("acl_tf.models", "ARCHITECTURES", "ARCHITECTURES"),
]


def test_the_library_uses_the_configs_choices():
    import acl_tf.configs as configs

    for module, name, shared in SHARED:
        assert getattr(importlib.import_module(module), name) is getattr(configs, shared), (
            module, name)
