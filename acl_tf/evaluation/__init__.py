"""Robustness evaluation: clean / PGD / AutoAttack accuracy, accuracy vs epsilon,
gradient-masking checks and CIFAR-10-C.

* :mod:`acl_tf.evaluation.robustness`: clean and PGD accuracy, accuracy-vs-epsilon sweep;
* :mod:`acl_tf.evaluation.autoattack`: AutoAttack through ART;
* :mod:`acl_tf.evaluation.guards`: gradient-masking checks on the figures;
* :mod:`acl_tf.evaluation.corruptions`: CIFAR-10-C through TFDS;
* :mod:`acl_tf.evaluation.subset`: which images a ``--limit`` measures (class-balanced);
* :mod:`acl_tf.evaluation.run`: a whole evaluation from an ``EvaluateConfig`` (what
  ``python -m acl_tf.evaluate`` runs), :mod:`acl_tf.evaluation.report` writes its report.
"""

from acl_tf.evaluation.autoattack import AutoAttackConfig, autoattack_accuracy
from acl_tf.evaluation.corruptions import (
                                           CIFAR10C_CORRUPTIONS,
                                           CIFAR10C_SEVERITIES,
                                           Cifar10CConfig,
                                           evaluate_cifar10c,
)
from acl_tf.evaluation.guards import GuardConfig, GuardResult
from acl_tf.evaluation.robustness import (
                                           AttackResult,
                                           accuracy_vs_epsilon,
                                           clean_accuracy,
                                           pgd_accuracy,
                                           pgd_correct,
                                           predict_labels,
)

__all__ = ["AttackResult", "AutoAttackConfig", "CIFAR10C_CORRUPTIONS", "CIFAR10C_SEVERITIES",
           "Cifar10CConfig", "GuardConfig", "GuardResult", "accuracy_vs_epsilon",
           "autoattack_accuracy", "clean_accuracy", "evaluate_cifar10c", "pgd_accuracy",
           "pgd_correct", "predict_labels"]
