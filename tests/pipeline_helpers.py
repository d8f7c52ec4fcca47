"""Tiny TFX artifacts from the shipped sample, shared by the pipeline component tests (each
component called through its Python function, ``Component.test_call``).

The chain's outputs (Examples, the pre-trained encoder, the fine-tuned classifier, pseudo-labels
and the student) are built once per session by the ``components_*`` fixtures of conftest.py,
which call the ``build_*`` functions here. Importing this module imports TFX.
"""

from __future__ import annotations

import os

from conftest import SAMPLE_DIR
from tfx import v1 as tfx
from tfx.types import artifact_utils

from acl_tf import data as data_lib
from pipeline import config as pconfig

artifacts = tfx.types.standard_artifacts

# The components' pre-training is DynACL-AIR (annealed augmentation, stream weights, AIR's
# regularisers and their original-image batches), so the pipeline runs one of ACL's successors.
TINY_PRETRAIN = ["model.width=4", "model.head_dim=16", "batch_size=16", "epochs=1",
                 "attack.steps=1", "data.limit=32", "method=dynacl_air",
                 "dynamic.reload_every=1"]
TINY_FINETUNE = ["epochs=1", "data.limit=40", "val_size=10", "batch_size=16", "attack.steps=1",
                 "eval_attack.steps=1", "eval_batch_size=64"]
TINY_SEMISUP = ["data.limit=40", "val_size=10", "label_fraction=null", "labels_per_class=1",
                "teacher.epochs=1", "teacher.batch_size=16", "student.epochs=1",
                "student.batch_size=16", "student.attack.steps=1", "eval_attack.steps=1",
                "eval_batch_size=64"]
TINY_EVALUATE = ["data.limit=16", "attacks=[clean, pgd2]", "eps_sweep=[]",
                 "guards.enabled=false"]


def make_examples(root, split, data):
    """An Examples artifact at ``root`` holding ``data`` as its one split ``split``."""
    examples = artifacts.Examples()
    examples.uri = str(root)
    examples.split_names = artifact_utils.encode_split_names([split])
    data_lib.write_tfrecord(os.path.join(root, f"Split-{split}", "data.tfrecord.gz"), data)
    return examples


def make_output(cls, path):
    """An empty artifact of type ``cls`` at ``path``."""
    artifact = cls()
    artifact.uri = str(path)
    return artifact


def tiny_stages(mode):
    """The resolved stage configs of a tiny pipeline in ``mode`` (finetune or semisup)."""
    config = pconfig.PipelineConfig(
        mode=mode, pretrain=pconfig.StageRef("smoke", tuple(TINY_PRETRAIN)),
        finetune=pconfig.StageRef("smoke", tuple(TINY_FINETUNE)),
        semisup=pconfig.StageRef("smoke", tuple(TINY_SEMISUP)),
        evaluate=pconfig.StageRef("smoke", tuple(TINY_EVALUATE)),
        blessing=pconfig.BlessingConfig(metric="pgd2"))
    return config.resolve()


def evaluate_model(work, model, path, threshold=0.0, baseline=None, min_delta=0.0):
    """RobustEvaluator on ``model`` over the test Examples: (evaluation, blessing) artifacts."""
    from pipeline.components.robust_evaluator import RobustEvaluator

    evaluation = make_output(artifacts.ModelEvaluation, path / "evaluation")
    blessing = make_output(artifacts.ModelBlessing, path / "blessing")
    kwargs = {"baseline_model": baseline} if baseline is not None else {}
    RobustEvaluator.test_call(model=model, examples=work["test"], evaluation=evaluation,
                              blessing=blessing,
                              config_json=pconfig.config_to_json(tiny_stages("finetune").evaluate),
                              metric="pgd2", threshold=threshold, min_delta=min_delta, **kwargs)
    return evaluation, blessing


# -- the chain, built once per session (see conftest.py) ------------------------------------------
def build_work(root):
    """Train / test Examples artifacts under ``root`` (40 and 16 sample images)."""
    train = data_lib.load(str(SAMPLE_DIR), "train", limit=40)
    test = data_lib.load(str(SAMPLE_DIR), "test", limit=16)
    return {"root": root, "train": make_examples(root / "train_examples", "train", train),
            "test": make_examples(root / "test_examples", "test", test), "test_data": test}


def build_encoder(work):
    """The Pretrain component's encoder Model artifact."""
    from pipeline.components.pretrain import Pretrain

    model = make_output(artifacts.Model, work["root"] / "pretrain")
    Pretrain.test_call(examples=work["train"], model=model,
                       config_json=pconfig.config_to_json(tiny_stages("finetune").pretrain))
    return model


def build_finetuned(work, encoder):
    """AdversarialTrain in fine-tuning mode: the classifier Model artifact."""
    from pipeline.components.adversarial_train import AdversarialTrain

    model = make_output(artifacts.Model, work["root"] / "finetune")
    AdversarialTrain.test_call(examples=work["train"], pretrained_model=encoder, model=model,
                               mode="finetune",
                               config_json=pconfig.config_to_json(tiny_stages("finetune").finetune))
    return model


def build_student(work, encoder):
    """PseudoLabel, then AdversarialTrain in semi-supervised mode on its pseudo-labels:
    (pseudo-labels InferenceResult artifact, student Model artifact)."""
    from pipeline.components.adversarial_train import AdversarialTrain
    from pipeline.components.pseudo_label import PseudoLabel

    semisup_json = pconfig.config_to_json(tiny_stages("semisup").semisup)
    labels = make_output(artifacts.InferenceResult, work["root"] / "pseudo_labels")
    PseudoLabel.test_call(examples=work["train"], pretrained_model=encoder, pseudo_labels=labels,
                          config_json=semisup_json)
    student = make_output(artifacts.Model, work["root"] / "student")
    AdversarialTrain.test_call(examples=work["train"], pretrained_model=encoder, model=student,
                               pseudo_labels=labels, mode="semisup", config_json=semisup_json)
    return labels, student
