"""acl_tf.evaluation.guards: the gradient-masking checks warn on suspicious numbers and pass on sane
ones."""

import pytest

from acl_tf.evaluation import guards


def test_guards_warn_on_suspicious_numbers_and_pass_on_sane_ones():
    assert guards.steps_guard({10: 0.50, 20: 0.48, 50: 0.47}).status == "pass"
    rising = guards.steps_guard({10: 0.40, 20: 0.48})
    assert rising.status == "warn" and "40.00%" in rising.message and "48.00%" in rising.message
    assert guards.steps_guard({10: 0.40, 20: 0.405}, tolerance=0.01).status == "pass"
    assert guards.steps_guard({20: 0.4}).status == "skipped"

    assert guards.epsilon_guard({0: 0.8, 2 / 255: 0.6, 8 / 255: 0.45}).status == "pass"
    eps_warn = guards.epsilon_guard({0: 0.8, 8 / 255: 0.3, 16 / 255: 0.5})
    assert eps_warn.status == "warn" and "8/255" in eps_warn.message

    assert guards.large_epsilon_guard(64 / 255, 0.02).status == "pass"
    masked = guards.large_epsilon_guard(64 / 255, 0.31, max_accuracy=0.05)
    assert masked.status == "warn" and "31.00%" in masked.message and "64/255" in masked.message
    assert guards.large_epsilon_guard(64 / 255, None).status == "skipped"

    assert guards.autoattack_vs_pgd_guard(0.40, {"pgd20": 0.45}).status == "pass"
    weak_aa = guards.autoattack_vs_pgd_guard(0.50, {"pgd20": 0.45})
    assert weak_aa.status == "warn" and "pgd20" in weak_aa.message
    assert guards.autoattack_vs_pgd_guard(None, {"pgd20": 0.45}).status == "skipped"
    with pytest.raises(ValueError):
        guards.GuardConfig(large_epsilon_max_accuracy=2.0)
