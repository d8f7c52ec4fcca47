"""``create_pipeline``: the ACL pipeline as a TFX ``Pipeline`` (no orchestrator chosen here).

Nodes (component ids), in order::

    TrainExampleGen, TestExampleGen   ImportExampleGen (or TfdsExampleGen) of the train / test data
    Pretrain                           ACL pre-training            <- TrainExampleGen
    PseudoLabel  (semisup mode only)   soft pseudo-labels          <- TrainExampleGen, Pretrain
    AdversarialTrain                   fine-tuning or student      <- TrainExampleGen, Pretrain
                                                                      (, PseudoLabel)
    latest_blessed_model_resolver      the last blessed model      (Resolver; absent for
                                                                      baseline="none")
    RobustEvaluator                    clean/PGD/AutoAttack + blessing
                                                                   <- AdversarialTrain,
                                                                      TestExampleGen, resolver
    ServingPusher                      SavedModel -> serving_dir/NAME/VERSION/
                                                                   <- AdversarialTrain,
                                                                      RobustEvaluator

The stage configs are resolved and validated here and handed to the components as canonical
JSON parameters (see :mod:`pipeline.config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tfx import v1 as tfx

from pipeline.components.adversarial_train import AdversarialTrain
from pipeline.components.baseline_resolver import baseline_resolver
from pipeline.components.pretrain import Pretrain
from pipeline.components.pseudo_label import PseudoLabel
from pipeline.components.pusher import ServingPusher
from pipeline.components.robust_evaluator import RobustEvaluator
from pipeline.components.tfds_example_gen import TfdsExampleGen
from pipeline.config import TEST_SPLIT, TRAIN_SPLIT, PipelineConfig, config_to_json, resolve_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COMPONENT_IDS = ("TrainExampleGen", "TestExampleGen", "Pretrain", "PseudoLabel",
                 "AdversarialTrain", "RobustEvaluator", "ServingPusher")


def _import_example_gen(input_base: str, pattern: str, split: str):
    """ImportExampleGen of the files matching ``pattern`` as the single split ``split``."""
    proto = tfx.proto
    return tfx.components.ImportExampleGen(
        input_base=input_base,
        input_config=proto.Input(splits=[proto.Input.Split(name=split, pattern=pattern)]),
        # One input split: all of it goes to one output split (one hash bucket).
        output_config=proto.Output(split_config=proto.SplitConfig(
            splits=[proto.SplitConfig.Split(name=split, hash_buckets=1)])))


def example_gens(config: PipelineConfig, project_root: Path):
    """(train, test) example-gen components."""
    data = config.data
    if data.tfds_name and not data.input_base:
        common = dict(dataset=data.tfds_name, image_size=data.image_size,
                      num_classes=data.num_classes,
                      data_dir=resolve_path(data.tfds_data_dir, project_root)
                      if data.tfds_data_dir else "")
        return (TfdsExampleGen(tfds_split=data.tfds_train_split, split_name=TRAIN_SPLIT,
                               **common).with_id("TrainExampleGen"),
                TfdsExampleGen(tfds_split=data.tfds_test_split, split_name=TEST_SPLIT,
                               **common).with_id("TestExampleGen"))
    base = resolve_path(data.input_base, project_root)
    return (_import_example_gen(base, data.train_pattern, TRAIN_SPLIT).with_id("TrainExampleGen"),
            _import_example_gen(base, data.test_pattern, TEST_SPLIT).with_id("TestExampleGen"))


def create_pipeline(config: PipelineConfig, *, pipeline_root: str, serving_dir: str,
                    project_root: Path = PROJECT_ROOT,
                    metadata_connection_config=None,
                    beam_pipeline_args: Sequence[str] = (),
                    enable_cache: bool = True,
                    baseline: str = "previous") -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
        config: the pipeline config (stages are resolved and validated here).
        pipeline_root: where TFX writes the artifacts (local directory or ``gs://...``).
        serving_dir: the serving root; the pusher writes ``serving_dir/NAME/VERSION/`` with NAME
            ``config.serving_model_name``.
        project_root: relative data paths of the config are relative to it (for a compiled
            Vertex spec: where the image holds the project).
        metadata_connection_config: ML Metadata store (None on Vertex / Kubeflow).
        beam_pipeline_args: Beam options of the example gens (e.g. ``--direct_num_workers=1``).
        enable_cache: reuse the outputs of unchanged components from earlier runs.
        baseline: ``previous``, ``latest`` or ``none`` (see
            :mod:`pipeline.components.baseline_resolver`).
    """
    stages = config.resolve()
    train_gen, test_gen = example_gens(config, project_root)
    train_examples = train_gen.outputs["examples"]

    pretrain = Pretrain(examples=train_examples, config_json=config_to_json(stages.pretrain))
    components = [train_gen, test_gen, pretrain]
    encoder = pretrain.outputs["model"]
    if config.mode == "semisup":
        semisup_json = config_to_json(stages.semisup)
        pseudo_label = PseudoLabel(examples=train_examples, pretrained_model=encoder,
                                   config_json=semisup_json)
        trainer = AdversarialTrain(examples=train_examples, pretrained_model=encoder,
                                   pseudo_labels=pseudo_label.outputs["pseudo_labels"],
                                   mode="semisup", config_json=semisup_json)
        components += [pseudo_label, trainer]
    else:
        trainer = AdversarialTrain(examples=train_examples, pretrained_model=encoder,
                                   mode="finetune", config_json=config_to_json(stages.finetune))
        components.append(trainer)
    model = trainer.outputs["model"]

    resolver = baseline_resolver(baseline, model)
    evaluator_inputs = {}
    if resolver is not None:
        components.append(resolver)
        evaluator_inputs["baseline_model"] = resolver.outputs["model"]
    evaluator = RobustEvaluator(model=model, examples=test_gen.outputs["examples"],
                                config_json=config_to_json(stages.evaluate),
                                metric=config.blessing.metric,
                                threshold=config.blessing.threshold,
                                min_delta=config.blessing.min_delta, **evaluator_inputs)
    pusher = ServingPusher(model=model, model_blessing=evaluator.outputs["blessing"],
                           serving_dir=resolve_path(serving_dir, project_root),
                           model_name=config.serving_model_name)
    components += [evaluator, pusher]

    return tfx.dsl.Pipeline(
        pipeline_name=config.name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )
