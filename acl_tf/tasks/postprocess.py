"""DynACL++ post-processing of a pre-trained encoder (:class:`acl_tf.configs.PostprocessConfig`).

DynACL (Luo, Wang & Wang, ICLR 2023) follows pre-training with a short supervised stage on
pseudo-labels, "DynACL++" (the AIR code's "DynACL-AIR++" is the same stage). Three steps write
into one output directory ``OUT``:

1. **clusters**: the features of every training image (``clusters.branch`` BN, inference mode,
   no augmentation) are clustered by k-means (:func:`acl_tf.data.clusters.kmeans`); the cluster
   of each image is its pseudo-label. ``OUT/cluster_labels.npz`` holds them
   (:mod:`acl_tf.data.clusters`), ``OUT/clusters.json`` the cluster sizes and, against the true
   labels, the purity and the contingency table (a diagnostic: the method never sees a label).
2. **linear probing** (``OUT/linear_probe/``): a zero-initialised linear layer of
   ``num_clusters`` outputs is trained with cross-entropy on the cluster labels, the encoder
   frozen in inference mode on the ``bn`` branch (a :class:`~acl_tf.trainers.finetuner.Finetuner`
   in ``slf`` mode).
3. **adversarial full fine-tuning** (``OUT/aft/``): from the probed linear layer, TRADES on the
   cluster labels trains the whole network on the ``bn`` branch (the ``Finetuner`` in ``aff``
   mode). Its encoder is written as ``OUT/encoder.keras``: both BN branches (the one not trained
   as pre-training left it), or the ``bn`` branch alone with ``single_bn_output``.

``OUT/encoder.keras`` is what a pre-training run leaves, so ``acl-tf finetune --model=OUT`` (and
``linear_eval``, ``semisup``) take ``OUT`` as a pre-trained model.

Each training stage is a :func:`acl_tf.tasks.fit.fit_epochs` run in its own directory
(``config.json``, ``checkpoints/``, ``logs/``, ``history.json``, ``training_curves.png``, and
``last.keras``: the classifier on the cluster labels after its last epoch). There is no model
selection: as the reference, the last epoch is kept. ``OUT/metrics.json`` gathers the figures of
every step and ``finished`` at the end. ``resume=True`` reuses ``cluster_labels.npz`` and
continues each stage from its last checkpoint; a finished run is left as it is.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np
from absl import logging

from acl_tf.configs import ConfigError, PostprocessConfig, read_config
from acl_tf.core import run_dir as rd
from acl_tf.core.errors import PseudoLabelError, RunDirError
from acl_tf.core.io import write_json_atomic
from acl_tf.data import load_split
from acl_tf.data.augment import make_finetune_dataset
from acl_tf.data.clusters import (
    ClusterLabels,
    cluster_report,
    kmeans,
    load_cluster_labels,
    save_cluster_labels,
)
from acl_tf.data.pseudo_labels import predict_logits
from acl_tf.models import Classifier
from acl_tf.optimizers import build_finetune_optimizer
from acl_tf.tasks.encoders import align_model_config, encoder_path, load_encoder
from acl_tf.tasks.fit import fit_epochs, load_history, prepare_run_dir, save_keras_atomic
from acl_tf.tasks.selection import is_finished, read_summary, update_summary
from acl_tf.trainers.finetuner import Finetuner

__all__ = ["AFT", "CLUSTER_LABELS", "CLUSTER_REPORT", "LINEAR_PROBE", "run_postprocess",
           "single_branch_encoder"]

# What OUT holds besides the files of acl_tf.core.run_dir (config.json, encoder.keras,
# metrics.json).
CLUSTER_LABELS = "cluster_labels.npz"
CLUSTER_REPORT = "clusters.json"
LINEAR_PROBE = "linear_probe"
AFT = "aft"


# -- inputs and the run directory ----------------------------------------------------------------
def _check_fresh(model_dir: Path, config) -> None:
    """Without resume: nothing finished in ``model_dir`` may be overwritten (checked before any
    file is written)."""
    for stage in (LINEAR_PROBE, AFT):
        rd.check(model_dir / stage, config, False, lambda p: read_config(type(config), p))
    for name in (CLUSTER_LABELS, rd.ENCODER):
        if (model_dir / name).exists():
            raise RunDirError(f"{model_dir} already holds {name} of a post-processing run; pass "
                              "--resume to continue it or choose another --model_dir.")


def _steps(config: PostprocessConfig, count: int) -> int:
    steps = (count // config.batch_size if config.drop_remainder
             else math.ceil(count / config.batch_size))
    if steps == 0:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {count} training images "
                          "with drop_remainder; lower batch_size.")
    return steps


def _make_dataset(config: PostprocessConfig, data, labels: ClusterLabels, offset: int):
    """``make_dataset(epoch)`` of a stage; ``offset`` epochs of earlier stages come first, so no
    two epochs of the run see the same order."""
    def make_dataset(epoch):
        return make_finetune_dataset(data.images, labels.clusters, batch_size=config.batch_size,
                                     seed=config.seed, epoch=offset + epoch,
                                     augment=config.augment,
                                     drop_remainder=config.drop_remainder)
    return make_dataset


def _classifier(config: PostprocessConfig, freeze_encoder: bool) -> Classifier:
    classifier = Classifier(load_encoder(config), config.clusters.num_clusters, branch=config.bn,
                            freeze_encoder=freeze_encoder, name="classifier")
    size = config.data.image_size
    classifier(np.zeros((2, size, size, 3), np.float32), training=False)  # create the weights
    return classifier


# -- step 1: the clusters ------------------------------------------------------------------------
def make_cluster_labels(config: PostprocessConfig, data) -> ClusterLabels:
    """k-means of the pre-trained encoder's features of ``data`` (an ImageData)."""
    ccfg = config.clusters
    path = encoder_path(config.pretrained)
    encoder = load_encoder(config)
    features = predict_logits(encoder, data.images, branch=ccfg.branch,
                              batch_size=config.eval_batch_size)
    del encoder
    logging.info("k-means (%s init, k = %d) of %d x %d features (%s BN)", ccfg.init,
                 ccfg.num_clusters, *features.shape, ccfg.branch)
    result = kmeans(features, ccfg.num_clusters, init=ccfg.init, seed=config.seed,
                    tolerance=ccfg.tolerance, max_iterations=ccfg.max_iterations,
                    restarts=ccfg.restarts, batch_size=ccfg.batch_size)
    if not result.converged:
        logging.warning("k-means stopped after max_iterations=%d without reaching tolerance %g",
                        ccfg.max_iterations, ccfg.tolerance)
    return ClusterLabels.from_kmeans(result, data, encoder=str(path), branch=ccfg.branch)


def _cluster_step(config: PostprocessConfig, model_dir: Path, data, resume: bool
                  ) -> ClusterLabels:
    path = model_dir / CLUSTER_LABELS
    if resume and path.exists():
        labels = load_cluster_labels(path)
        if not np.array_equal(labels.ids, data.ids) or labels.num_clusters != \
                config.clusters.num_clusters:
            raise PseudoLabelError(
                f"{path} labels {len(labels)} images in {labels.num_clusters} clusters, not the "
                f"{len(data)} training images of this config in {config.clusters.num_clusters}: "
                "choose another --model_dir.")
        logging.info("%s exists: k-means skipped", path)
        return labels
    labels = make_cluster_labels(config, data)
    save_cluster_labels(path, labels)
    report = {**cluster_report(labels, config.data.num_classes),
              "init": config.clusters.init, "tolerance": config.clusters.tolerance,
              "seed": config.seed}
    write_json_atomic(model_dir / CLUSTER_REPORT, report)
    logging.info("%d clusters of sizes %s (purity %.4f against the true labels) -> %s",
                 labels.num_clusters, report["cluster_sizes"], report["purity"], path)
    update_summary(model_dir, num_images=len(labels), num_clusters=labels.num_clusters,
                   cluster_sizes=report["cluster_sizes"], cluster_purity=report["purity"],
                   kmeans_iterations=labels.iterations, kmeans_converged=labels.converged,
                   kmeans_inertia=labels.inertia, cluster_labels=str(path))
    return labels


# -- steps 2 and 3: linear probing, adversarial full fine-tuning ---------------------------------
def _last_epoch(run_dir: Path) -> dict:
    history = load_history(run_dir)
    return dict(history[-1]) if history else {}


def _train_stage(config: PostprocessConfig, model: Finetuner, run_dir: Path, epochs: int,
                 steps: int, make_dataset, resume: bool, callbacks, verbose) -> None:
    fit_epochs(model, make_dataset, model_dir=run_dir, epochs=epochs, steps_per_epoch=steps,
               images_per_step=config.batch_size, log_every=config.log_every_steps,
               keep_checkpoints=config.keep_checkpoints, resume=resume, callbacks=callbacks,
               verbose=verbose)
    save_keras_atomic(model.classifier, run_dir / rd.LAST)


def _linear_probe(config, model_dir: Path, data, labels, steps, resume, callbacks, verbose
                  ) -> Optional[Classifier]:
    lcfg = config.linear_probe
    if lcfg.epochs == 0:
        logging.info("linear probing skipped (linear_probe.epochs = 0)")
        return None
    run_dir = prepare_run_dir(model_dir / LINEAR_PROBE, config, resume)
    logging.info("linear probing (%s BN, encoder frozen) on %d images in %d clusters, %d "
                 "steps/epoch", config.bn, len(data), labels.num_clusters, steps)
    model = Finetuner(_classifier(config, freeze_encoder=True), mode="slf", seed=config.seed)
    model.compile(optimizer=build_finetune_optimizer(lcfg.optimizer, steps))
    _train_stage(config, model, run_dir, lcfg.epochs, steps,
                 _make_dataset(config, data, labels, 0), resume, callbacks, verbose)
    update_summary(model_dir, linear_probe=_last_epoch(run_dir))
    return model.classifier


def _fine_tune(config, model_dir: Path, data, labels, steps, probe, resume, callbacks, verbose
               ) -> Classifier:
    acfg = config.aft
    run_dir = prepare_run_dir(model_dir / AFT, config, resume)
    logging.info("adversarial full fine-tuning (TRADES, %s BN) on %d images in %d clusters, %d "
                 "steps/epoch", config.bn, len(data), labels.num_clusters, steps)
    classifier = _classifier(config, freeze_encoder=False)
    if probe is not None:   # start from the probed linear layer (a checkpoint overrides it)
        classifier.fc.set_weights(probe.fc.get_weights())
    model = Finetuner(classifier, mode="aff", attack=acfg.attack, beta=acfg.trades_beta,
                      seed=config.seed)
    model.compile(optimizer=build_finetune_optimizer(acfg.optimizer, steps))
    _train_stage(config, model, run_dir, acfg.epochs, steps,
                 _make_dataset(config, data, labels, config.linear_probe.epochs), resume,
                 callbacks, verbose)
    update_summary(model_dir, aft=_last_epoch(run_dir))
    return classifier


def single_branch_encoder(encoder, branch: str, image_size: int = 32):
    """A single-BN copy of a dual-BN ``encoder`` whose BN layers hold ``branch``'s parameters and
    statistics (the reference's ``cvt_state_dict``); a single-BN encoder is returned as it is."""
    if not getattr(encoder, "dual_bn", False):
        return encoder
    single = type(encoder).from_config({**encoder.get_config(), "dual_bn": False})
    single(np.zeros((1, image_size, image_size, 3), np.float32), training=False)
    source = {w.path.split("/", 1)[1]: w for w in encoder.weights}
    for weight in single.weights:
        key = weight.path.split("/", 1)[1]
        if branch == "adv":
            key = key.replace("/normal/", "/adv/")
        weight.assign(source[key])
    return single


# -- the run -------------------------------------------------------------------------------------
@rd.cleanup_on_failure()
def run_postprocess(config: PostprocessConfig, model_dir, pretrained: Optional[str] = None,
                    resume: bool = False, callbacks: Sequence[keras.callbacks.Callback] = (),
                    verbose="auto") -> dict:
    """Clusters, linear probing and adversarial fine-tuning into ``model_dir``; returns the
    summary ``OUT/metrics.json``.

    Args:
        config: the settings (``model`` follows the pre-trained encoder).
        model_dir: the output directory ``OUT``.
        pretrained: the pre-trained encoder (a run directory holding ``encoder.keras`` or a
            ``.keras`` file); overrides ``config.pretrained``, one of the two is needed.
        resume: continue an interrupted run (its ``config.json`` must equal ``config``).
        callbacks: extra Keras callbacks of both training stages (after each checkpoint).
    """
    if pretrained is not None:
        config = dataclasses.replace(config, pretrained=str(pretrained))
    config.check_pretrained()
    config = align_model_config(config)
    model_dir = Path(model_dir)
    if resume and is_finished(model_dir):
        prepare_run_dir(model_dir, config, resume)   # the same config, or a RunDirError
        logging.info("%s is a finished post-processing run: nothing to do", model_dir)
        return read_summary(model_dir)
    if not resume:
        _check_fresh(model_dir, config)
    prepare_run_dir(model_dir, config, resume)
    keras.utils.set_random_seed(config.seed)
    data = load_split(config.data, config.data.train_split, config.data.limit)
    if config.clusters.num_clusters > len(data):
        raise ConfigError(f"clusters.num_clusters={config.clusters.num_clusters} exceeds the "
                          f"{len(data)} training images; lower it or raise data.limit.")
    steps = _steps(config, len(data))
    update_summary(model_dir, pretrained=config.pretrained, bn=config.bn)

    labels = _cluster_step(config, model_dir, data, resume)
    probe = _linear_probe(config, model_dir, data, labels, steps, resume, callbacks, verbose)
    classifier = _fine_tune(config, model_dir, data, labels, steps, probe, resume, callbacks,
                            verbose)
    encoder = classifier.encoder
    if config.single_bn_output:
        encoder = single_branch_encoder(encoder, config.bn, config.data.image_size)
    save_keras_atomic(encoder, model_dir / rd.ENCODER)
    logging.info("encoder (%s BN) written to %s",
                 "dual" if getattr(encoder, "dual_bn", False) else "single",
                 model_dir / rd.ENCODER)
    return update_summary(model_dir, encoder=str(model_dir / rd.ENCODER),
                          encoder_dual_bn=bool(getattr(encoder, "dual_bn", False)),
                          finished=True)
