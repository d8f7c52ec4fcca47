"""pipeline/components/adversarial_train.py: fine-tuning writes the classifier and its SavedModel;
bad arguments are refused. (Its semi-supervised mode: test_pipeline_components_pseudo_label.py.)"""

import json
import os

import pytest

pytest.importorskip("tfx.v1")

from pipeline_helpers import artifacts, make_output, tiny_stages  # noqa: E402

from pipeline import config as pconfig  # noqa: E402
from pipeline.components.adversarial_train import AdversarialTrain, classifier_dir  # noqa: E402


def test_adversarial_train_finetune_writes_classifier_and_saved_model(components_finetuned):
    run_dir = classifier_dir(components_finetuned)
    assert run_dir == components_finetuned.uri  # fine-tuning: the artifact is the run directory
    assert os.path.isfile(os.path.join(run_dir, "best.keras"))
    assert os.path.isfile(os.path.join(run_dir, "saved_model", "1", "saved_model.pb"))
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert components_finetuned.get_int_custom_property("best_epoch") == metrics["best_epoch"] == 1
    assert components_finetuned.get_float_custom_property("val_acc") == pytest.approx(
        metrics["best"]["val_acc"])
    assert components_finetuned.get_string_custom_property("stage") == "finetune"


def test_adversarial_train_rejects_bad_arguments(components_work, components_encoder, tmp_path):
    config_json = pconfig.config_to_json(tiny_stages("finetune").finetune)
    with pytest.raises(ValueError, match="mode must be one of"):
        AdversarialTrain.test_call(examples=components_work["train"],
                                   pretrained_model=components_encoder,
                                   model=make_output(artifacts.Model, tmp_path / "a"), mode="slf",
                                   config_json=config_json)
    with pytest.raises(ValueError, match="needs the pseudo_labels input"):
        AdversarialTrain.test_call(examples=components_work["train"],
                                   pretrained_model=components_encoder,
                                   model=make_output(artifacts.Model, tmp_path / "b"),
                                   mode="semisup", config_json=config_json)
