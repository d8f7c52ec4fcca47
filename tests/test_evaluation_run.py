"""acl_tf.evaluation.run: attack names, finding the model file, and run_evaluation's attacks, sweep
and gradient-masking checks."""

import json

import numpy as np
import pytest
from eval_helpers import two_class_problem


def test_attack_names_and_model_paths(tmp_path):
    from acl_tf.configs import ConfigError, EvaluateConfig, load_config
    from acl_tf.evaluation.run import EvaluationError, find_model_file, parse_attack_name

    assert parse_attack_name("PGD20") == ("pgd", 20)
    assert parse_attack_name("autoattack") == ("autoattack", None)
    for bad in ("pgd", "pgd0", "fgsm"):
        with pytest.raises(ValueError, match="Unknown attack"):
            parse_attack_name(bad)
    with pytest.raises(ConfigError, match="Unknown attack 'pgdx'"):
        load_config(EvaluateConfig, "evaluate", "default", ["attacks=[clean, pgdx]"])
    config = load_config(EvaluateConfig, "evaluate", "smoke", ["bn=normal"])
    assert config.bn == "normal" and config.attacks == ("clean", "pgd5")
    assert config.autoattack.square_queries == 20 and config.guards.steps == (2,)
    with pytest.raises(EvaluationError, match="no best.keras"):
        find_model_file(tmp_path)
    (tmp_path / "best.keras").write_bytes(b"")
    assert find_model_file(tmp_path) == tmp_path / "best.keras"


def test_run_evaluation_runs_sweep_and_checks_only_for_robust_attacks():
    from acl_tf.configs import EvaluateConfig, load_config
    from acl_tf.evaluation.run import run_evaluation

    model, x, y, margin, budget = two_class_problem(n=120, seed=4)
    clean_only = load_config(EvaluateConfig, "evaluate", "smoke", ["attacks=[clean]"])
    report = run_evaluation(model, x, y, clean_only)
    assert report["accuracies"] == {"clean": pytest.approx(np.mean(margin > 0))}
    assert report["accuracy_vs_epsilon"] == [] and report["guards"] == []

    config = load_config(EvaluateConfig, "evaluate", "smoke",
                         ["attacks=[clean, pgd8]", "attack.step_size=0.0078431373",
                          "eps_sweep=[0, 8/255]", "guards.steps=[4]"])
    report = run_evaluation(model, x, y, config)
    assert report["accuracies"]["pgd8"] == pytest.approx(np.mean(margin > budget))
    # The sweep gains the large-epsilon point of the checks (64/255 breaks every example).
    assert [p["epsilon_255"] for p in report["accuracy_vs_epsilon"]] == pytest.approx([0, 8, 64])
    assert report["accuracy_vs_epsilon"][-1]["accuracy"] == 0.0
    statuses = {g["name"]: g["status"] for g in report["guards"]}
    assert statuses == {"steps": "pass", "epsilon": "pass", "large_epsilon": "pass",
                        "autoattack_vs_pgd": "skipped"}
    assert [r["name"] for r in report["guard_runs"]] == ["pgd4 (steps check)"]
    json.dumps(report)
