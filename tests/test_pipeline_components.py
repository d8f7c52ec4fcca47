"""The TFX pipeline's config and custom components, each called through its Python function
(``Component.test_call``) on tiny artifacts built from the shipped sample."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import SAMPLE_DIR

tfx = pytest.importorskip("tfx.v1")

from tfx.types import artifact_utils  # noqa: E402

from acl_tf import data as data_lib  # noqa: E402
from acl_tf.configs import ConfigError  # noqa: E402
from pipeline import config as pconfig  # noqa: E402
from pipeline.components import artifact_io  # noqa: E402
from pipeline.components.adversarial_train import AdversarialTrain, classifier_dir  # noqa: E402
from pipeline.components.baseline_resolver import PreviousBlessedModelStrategy  # noqa: E402
from pipeline.components.pretrain import Pretrain  # noqa: E402
from pipeline.components.pseudo_label import PseudoLabel  # noqa: E402
from pipeline.components.pusher import ServingPusher, push_saved_model  # noqa: E402
from pipeline.components.robust_evaluator import RobustEvaluator, blessing_decision  # noqa: E402
from pipeline.components.tfds_example_gen import TfdsExampleGen  # noqa: E402

artifacts = tfx.types.standard_artifacts


# -- config --------------------------------------------------------------------------------------
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
    assert stages.evaluate.data.limit <= 64 and not stages.evaluate.eps_sweep_255


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


# -- blessing rule and baseline resolution ---------------------------------------------------------
@pytest.mark.parametrize("value,threshold,baseline,delta,blessed,reason", [
    (0.50, 0.45, None, 0.0, True, "no blessed baseline"),
    (0.40, 0.45, None, 0.0, False, "below the threshold"),
    (0.50, 0.45, 0.50, 0.0, True, "last blessed model's 0.5000"),
    (0.50, 0.45, 0.51, 0.0, False, "does not beat"),
    (0.50, 0.45, 0.49, 0.02, False, "does not beat"),
    (0.52, 0.45, 0.49, 0.02, True, "min_delta 0.02"),
])
def test_blessing_decision(value, threshold, baseline, delta, blessed, reason):
    result, why = blessing_decision(value, threshold, baseline, delta)
    assert result is blessed and reason in why


def _artifact(cls, artifact_id, **int_props):
    a = cls()
    a.id = artifact_id
    a.uri = f"/artifacts/{artifact_id}"
    for key, value in int_props.items():
        a.set_int_custom_property(key, value)
    return a


def test_previous_blessed_model_strategy_skips_the_candidate():
    m = {i: _artifact(artifacts.Model, i) for i in (1, 2, 3, 4)}
    blessings = [_artifact(artifacts.ModelBlessing, 10, blessed=1, current_model_id=1),
                 _artifact(artifacts.ModelBlessing, 11, blessed=0, current_model_id=2),
                 _artifact(artifacts.ModelBlessing, 12, blessed=1, current_model_id=3)]
    strategy = PreviousBlessedModelStrategy()

    def resolve(candidate):
        return strategy.resolve_artifacts(None, {"model": list(m.values()),
                                                 "model_blessing": list(blessings),
                                                 "candidate": [m[candidate]]})

    new = resolve(4)      # a new model: the latest blessed one is model 3
    assert [a.id for a in new["model"]] == [3] and [a.id for a in new["model_blessing"]] == [12]
    assert [a.id for a in new["candidate"]] == [4]
    again = resolve(3)    # model 3 itself (a re-run): the blessed model before it
    assert [a.id for a in again["model"]] == [1]
    first = strategy.resolve_artifacts(None, {"model": [m[1]], "model_blessing": [],
                                              "candidate": [m[1]]})
    assert first["model"] == [] and first["model_blessing"] == []   # nothing blessed yet


# -- staging of remote artifacts ---------------------------------------------------------------
def test_local_input_and_output_stage_remote_uris(tmp_path):
    remote = "ram://acl_tf_test/artifact"
    with artifact_io.local_output(remote) as out:
        assert not artifact_io.is_remote(out)
        os.makedirs(os.path.join(out, "sub"))
        with open(os.path.join(out, "sub", "a.txt"), "w") as f:
            f.write("hello")
    assert tf.io.gfile.exists(f"{remote}/sub/a.txt")
    with artifact_io.local_input(remote) as local:
        with open(os.path.join(local, "sub", "a.txt")) as f:
            assert f.read() == "hello"
    assert not os.path.exists(local)        # the temporary copy is gone
    with artifact_io.local_input(str(tmp_path)) as same:
        assert same == str(tmp_path)        # local URIs are used in place
    with pytest.raises(FileNotFoundError, match="no such artifact directory"):
        with artifact_io.local_input("ram://acl_tf_test/missing"):
            pass


# -- the pusher's copy -----------------------------------------------------------------------------
class _Scale(tf.Module):
    def __init__(self, k):
        super().__init__()
        self.k = tf.Variable(k)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, x):
        return x * self.k


def test_push_saved_model_versions_atomically_and_idempotently(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    tf.saved_model.save(_Scale(2.0), a)
    tf.saved_model.save(_Scale(3.0), b)
    base = str(tmp_path / "serving" / "name")
    assert push_saved_model(a, base) == (1, True)
    assert push_saved_model(a, base) == (1, False)      # the same model is not pushed twice
    assert push_saved_model(b, base) == (2, True)
    assert sorted(os.listdir(base)) == ["1", "2"]       # no temporary directories left
    served = tf.saved_model.load(os.path.join(base, "2"))
    np.testing.assert_allclose(served(tf.constant([1.0, 2.0])).numpy(), [3.0, 6.0])


# -- the components on tiny artifacts ------------------------------------------------------------
def _examples(root, split, data):
    examples = artifacts.Examples()
    examples.uri = str(root)
    examples.split_names = artifact_utils.encode_split_names([split])
    data_lib.write_tfrecord(os.path.join(root, f"Split-{split}", "data.tfrecord.gz"), data)
    return examples


def _output(cls, path):
    artifact = cls()
    artifact.uri = str(path)
    return artifact


TINY_PRETRAIN = ["model.width=4", "model.head_dim=16", "batch_size=16", "epochs=1",
                 "attack.steps=1", "data.limit=32"]
TINY_FINETUNE = ["epochs=1", "data.limit=40", "val_size=10", "batch_size=16", "attack.steps=1",
                 "eval_attack.steps=1", "eval_batch_size=64"]
TINY_SEMISUP = ["data.limit=40", "val_size=10", "label_fraction=null", "labels_per_class=1",
                "teacher.epochs=1", "teacher.batch_size=16", "student.epochs=1",
                "student.batch_size=16", "student.attack.steps=1", "eval_attack.steps=1",
                "eval_batch_size=64"]
TINY_EVALUATE = ["data.limit=16", "attacks=[clean, pgd2]", "eps_sweep_255=[]",
                 "guards.enabled=false"]


def _stages(mode):
    config = pconfig.PipelineConfig(
        mode=mode, pretrain=pconfig.StageRef("smoke", tuple(TINY_PRETRAIN)),
        finetune=pconfig.StageRef("smoke", tuple(TINY_FINETUNE)),
        semisup=pconfig.StageRef("smoke", tuple(TINY_SEMISUP)),
        evaluate=pconfig.StageRef("smoke", tuple(TINY_EVALUATE)),
        blessing=pconfig.BlessingConfig(metric="pgd2"))
    return config.resolve()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Train / test Examples artifacts and the outputs of the chain, built once."""
    root = tmp_path_factory.mktemp("components")
    train = data_lib.load(str(SAMPLE_DIR), "train", limit=40)
    test = data_lib.load(str(SAMPLE_DIR), "test", limit=16)
    return {"root": root, "train": _examples(root / "train_examples", "train", train),
            "test": _examples(root / "test_examples", "test", test), "test_data": test}


@pytest.fixture(scope="module")
def encoder(work):
    model = _output(artifacts.Model, work["root"] / "pretrain")
    Pretrain.test_call(examples=work["train"], model=model,
                       config_json=pconfig.config_to_json(_stages("finetune").pretrain))
    return model


@pytest.fixture(scope="module")
def finetuned(work, encoder):
    model = _output(artifacts.Model, work["root"] / "finetune")
    AdversarialTrain.test_call(examples=work["train"], pretrained_model=encoder, model=model,
                               mode="finetune",
                               config_json=pconfig.config_to_json(_stages("finetune").finetune))
    return model


def test_pretrain_writes_the_dual_bn_encoder(encoder):
    import keras

    path = os.path.join(encoder.uri, "encoder.keras")
    restored = keras.saving.load_model(path, compile=False)
    assert restored.dual_bn
    x = tf.random.uniform([2, 32, 32, 3])
    normal, adv = restored(x, training=False, branch="normal"), restored(x, training=False,
                                                                          branch="adv")
    assert normal.shape == adv.shape
    assert encoder.get_string_custom_property("variant") == "ds"
    assert encoder.get_int_custom_property("width") == 4
    assert encoder.get_int_custom_property("dual_bn") == 1
    assert np.isfinite(encoder.get_float_custom_property("train_loss"))


def test_pretrain_reports_corrupt_and_missing_input(work, tmp_path):
    train = data_lib.load(str(SAMPLE_DIR), "train", limit=20)
    train.labels[7] = 12
    bad = _examples(tmp_path / "bad", "train", train)
    config_json = pconfig.config_to_json(_stages("finetune").pretrain)
    with pytest.raises(data_lib.DataError, match=r"data.tfrecord.gz.*label 12 outside \[0, 10\)"):
        Pretrain.test_call(examples=bad, model=_output(artifacts.Model, tmp_path / "m1"),
                           config_json=config_json)
    with pytest.raises(data_lib.DataError, match="has no split 'train'"):
        Pretrain.test_call(examples=work["test"], model=_output(artifacts.Model, tmp_path / "m2"),
                           config_json=config_json)


def test_adversarial_train_finetune_writes_classifier_and_saved_model(finetuned):
    run_dir = classifier_dir(finetuned)
    assert run_dir == finetuned.uri            # fine-tuning: the artifact is the run directory
    assert os.path.isfile(os.path.join(run_dir, "best.keras"))
    assert os.path.isfile(os.path.join(run_dir, "saved_model", "1", "saved_model.pb"))
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert finetuned.get_int_custom_property("best_epoch") == metrics["best_epoch"] == 1
    assert finetuned.get_float_custom_property("val_acc") == pytest.approx(
        metrics["best"]["val_acc"])
    assert finetuned.get_string_custom_property("stage") == "finetune"


def test_adversarial_train_rejects_bad_arguments(work, encoder, tmp_path):
    config_json = pconfig.config_to_json(_stages("finetune").finetune)
    with pytest.raises(ValueError, match="mode must be one of"):
        AdversarialTrain.test_call(examples=work["train"], pretrained_model=encoder,
                                   model=_output(artifacts.Model, tmp_path / "a"), mode="slf",
                                   config_json=config_json)
    with pytest.raises(ValueError, match="needs the pseudo_labels input"):
        AdversarialTrain.test_call(examples=work["train"], pretrained_model=encoder,
                                   model=_output(artifacts.Model, tmp_path / "b"),
                                   mode="semisup", config_json=config_json)


def test_pseudo_label_then_student(work, encoder):
    from acl_tf.data.pseudo_labels import load_pseudo_labels

    semisup_json = pconfig.config_to_json(_stages("semisup").semisup)
    labels = _output(artifacts.InferenceResult, work["root"] / "pseudo_labels")
    PseudoLabel.test_call(examples=work["train"], pretrained_model=encoder, pseudo_labels=labels,
                          config_json=semisup_json)
    pseudo = load_pseudo_labels(os.path.join(labels.uri, "pseudo_labels.npz"))
    assert len(pseudo) == 40 and pseudo.probs.shape == (40, 10)
    np.testing.assert_allclose(pseudo.probs.sum(axis=1), 1.0, rtol=1e-5)
    assert labels.get_float_custom_property("pseudo_label_accuracy") == pytest.approx(
        pseudo.accuracy())
    assert labels.get_float_custom_property("num_labelled") == 10   # labels_per_class=1

    student = _output(artifacts.Model, work["root"] / "student")
    AdversarialTrain.test_call(examples=work["train"], pretrained_model=encoder, model=student,
                               pseudo_labels=labels, mode="semisup", config_json=semisup_json)
    assert classifier_dir(student) == os.path.join(student.uri, "student")
    assert os.path.isfile(os.path.join(classifier_dir(student), "best.keras"))
    assert os.path.isdir(os.path.join(classifier_dir(student), "saved_model", "1"))
    assert student.get_string_custom_property("stage") == "semisup"
    work["student"] = student


def _evaluate(work, model, path, threshold=0.0, baseline=None, min_delta=0.0):
    evaluation = _output(artifacts.ModelEvaluation, path / "evaluation")
    blessing = _output(artifacts.ModelBlessing, path / "blessing")
    kwargs = {"baseline_model": baseline} if baseline is not None else {}
    RobustEvaluator.test_call(model=model, examples=work["test"], evaluation=evaluation,
                              blessing=blessing,
                              config_json=pconfig.config_to_json(_stages("finetune").evaluate),
                              metric="pgd2", threshold=threshold, min_delta=min_delta, **kwargs)
    return evaluation, blessing


def test_robust_evaluator_figures_and_blessing(work, finetuned, tmp_path):
    from acl_tf.evaluation.robustness import clean_accuracy
    from acl_tf.evaluation.run import load_classifier

    evaluation, blessing = _evaluate(work, finetuned, tmp_path / "pass")
    report = json.load(open(os.path.join(evaluation.uri, "report.json")))
    test = work["test_data"]
    expected = clean_accuracy(load_classifier(finetuned.uri), test.to_float(), test.labels)
    assert report["num_examples"] == 16
    assert evaluation.get_float_custom_property("clean_accuracy") == pytest.approx(
        expected.accuracy)
    assert evaluation.get_float_custom_property("pgd2_accuracy") == pytest.approx(
        report["accuracies"]["pgd2"])
    assert report["accuracies"]["pgd2"] <= report["accuracies"]["clean"]
    assert blessing.get_int_custom_property("blessed") == 1
    assert os.path.isfile(os.path.join(blessing.uri, "BLESSED"))
    assert blessing.get_string_custom_property("current_model") == finetuned.uri

    _, refused = _evaluate(work, finetuned, tmp_path / "fail", threshold=1.0)
    assert refused.get_int_custom_property("blessed") == 0
    assert os.path.isfile(os.path.join(refused.uri, "NOT_BLESSED"))
    assert "below the threshold" in refused.get_string_custom_property("reason")


def test_robust_evaluator_compares_with_the_baseline(work, finetuned, tmp_path):
    if "student" not in work:
        pytest.skip("needs the student of test_pseudo_label_then_student")
    # Another model as baseline: it is evaluated; no model beats another by a whole 100%.
    _, blessing = _evaluate(work, finetuned, tmp_path / "other", baseline=work["student"],
                            min_delta=1.0)
    assert blessing.get_int_custom_property("blessed") == 0
    assert "does not beat the last blessed model" in blessing.get_string_custom_property("reason")
    assert blessing.get_string_custom_property("baseline_model") == work["student"].uri
    # The candidate itself as baseline (LatestBlessedModelStrategy on a re-run): not compared.
    _, again = _evaluate(work, finetuned, tmp_path / "self", baseline=finetuned, min_delta=1.0)
    assert again.get_int_custom_property("blessed") == 1
    assert json.load(open(os.path.join(again.uri, "blessing.json")))["baseline_value"] is None


def test_serving_pusher_pushes_only_blessed_models(work, finetuned, tmp_path):
    serving = tmp_path / "serving"
    _, blessing = _evaluate(work, finetuned, tmp_path / "blessed")
    pushed = _output(artifacts.PushedModel, tmp_path / "pushed")
    ServingPusher.test_call(model=finetuned, model_blessing=blessing, pushed_model=pushed,
                            serving_dir=str(serving), model_name="acl")
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_version") == "1"
    served = tf.saved_model.load(str(serving / "acl" / "1"))
    out = served.signatures["serving_default"](images=tf.constant(work["test_data"].to_float()))
    assert out["logits"].shape == (16, 10) and out["class_ids"].shape == (16,)

    _, refused = _evaluate(work, finetuned, tmp_path / "refused", threshold=1.0)
    not_pushed = _output(artifacts.PushedModel, tmp_path / "not_pushed")
    ServingPusher.test_call(model=finetuned, model_blessing=refused, pushed_model=not_pushed,
                            serving_dir=str(tmp_path / "serving2"), model_name="acl")
    assert not_pushed.get_int_custom_property("pushed") == 0
    assert not os.path.exists(tmp_path / "serving2")
    assert json.load(open(os.path.join(not_pushed.uri, "push.json")))["pushed"] is False


def test_tfds_example_gen_writes_what_the_library_reads(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    examples = _output(artifacts.Examples, tmp_path / "examples")
    with tfds.testing.mock_data(num_examples=12):
        TfdsExampleGen.test_call(examples=examples, dataset="cifar10", tfds_split="train",
                                 split_name="train")
    assert artifact_io.split_names(examples) == ["train"]
    assert os.path.isfile(tmp_path / "examples" / "Split-train" / "data.tfrecord.gz")
    data = artifact_io.load_split(examples, examples.uri, "train", _stages("finetune").pretrain.data)
    assert len(data) == 12 and examples.get_int_custom_property("num_examples") == 12
    with pytest.raises(data_lib.DataError, match="neither an existing file"):
        TfdsExampleGen.test_call(examples=_output(artifacts.Examples, tmp_path / "x"),
                                 dataset="no_such_dataset_xyz", tfds_split="train",
                                 split_name="train")
