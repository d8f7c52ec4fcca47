"""The encoder a classifier starts from: the pre-trained encoder of a pre-training run
(``DIR/encoder.keras``, both BN branches, no projection head) or a randomly initialised one (RI),
and the classifier built on it.

Fine-tuning (:mod:`acl_tf.tasks.finetune`), linear separability (:mod:`acl_tf.tasks.linear_eval`)
and semi-supervised training (:mod:`acl_tf.tasks.semisup`) take their encoder from here; the saved
encoder defines the architecture (:func:`align_model_config`).
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
from absl import logging

from acl_tf.configs import ConfigError
from acl_tf.core import run_dir as rd
from acl_tf.models import Classifier, build_encoder, set_synchronized_bn


def encoder_path(pretrained) -> Path:
    """``DIR/encoder.keras`` of a pre-training run directory (or a ``.keras`` file itself)."""
    path = Path(pretrained)
    if path.suffix == ".keras":
        if not path.is_file():
            raise ConfigError(f"Pre-trained encoder file {str(path)!r} does not exist.")
        return path
    if not path.is_dir():
        raise ConfigError(f"Pre-trained model directory {str(path)!r} does not exist (pass the "
                          "--model_dir of a `python -m acl_tf.pretrain` run).")
    file = path / rd.ENCODER
    if not file.is_file():
        raise ConfigError(f"{str(path)!r} has no {rd.ENCODER}: it is not a finished "
                          "pre-training run (python -m acl_tf.pretrain writes it at the end).")
    return file


def encoder_spec(path) -> dict:
    """Architecture of a saved encoder, read from the ``.keras`` archive without loading it.

    Returns ``{"arch", "width" (ResNet-18 only), "dual_bn"}``.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            saved = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(f"Cannot read the encoder {str(path)!r}: {err}") from err
    name, cfg = saved.get("class_name"), saved.get("config", {})
    if name == "ResNet18":
        return {"arch": "resnet18", "width": int(cfg["width"]), "dual_bn": bool(cfg["dual_bn"])}
    if name == "WideResNet":
        return {"arch": f"wrn{cfg['depth']}_{cfg['widen_factor']}",
                "dual_bn": bool(cfg["dual_bn"])}
    raise ConfigError(f"{str(path)!r} holds a {name!r}, not an encoder (ResNet18 / WideResNet).")


def align_model_config(config, strict: Sequence[str] = ()):
    """Sets ``config.model`` (arch, width, bn) to the pre-trained encoder's architecture.

    ``config``: a :class:`~acl_tf.configs.FinetuneConfig` or
    :class:`~acl_tf.configs.SemisupConfig` (any dataclass with ``pretrained`` and ``model``).

    The saved encoder defines the architecture; ``strict`` names ``model`` fields that the user
    set explicitly: if one of them disagrees with the encoder that is a ConfigError naming both.
    Without ``config.pretrained`` the config is returned unchanged.
    """
    if not config.pretrained:
        return config
    path = encoder_path(config.pretrained)
    spec = encoder_spec(path)
    actual = {"arch": spec["arch"], "bn": "dual" if spec["dual_bn"] else "single"}
    if "width" in spec:
        actual["width"] = spec["width"]
    for field in strict:
        if field in actual and getattr(config.model, field) != actual[field]:
            raise ConfigError(
                f"model.{field} mismatch: the config sets {field}={getattr(config.model, field)!r} "
                f"but the pre-trained encoder {str(path)!r} has {field}={actual[field]!r}. The "
                f"encoder defines the architecture: drop the model.{field} override.")
    changed = {k: v for k, v in actual.items() if getattr(config.model, k) != v}
    if changed:
        logging.info("model config follows the pre-trained encoder: %s", changed)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **actual))


def load_encoder(config):
    """The pre-trained encoder (both BN branches; no projection head) or a random one (RI)."""
    if config.pretrained:
        path = encoder_path(config.pretrained)
        encoder = keras.saving.load_model(path, compile=False)
        logging.info("loaded pre-trained encoder %s (%s)", path, encoder_spec(path))
        return encoder
    dual = config.model.bn != "single"
    logging.info("random init (RI): %s width %d, %s BN", config.model.arch, config.model.width,
                 "dual" if dual else "single")
    return build_encoder(config.model.arch, config.model.width, dual_bn=dual,
                         normalization=config.model.normalization)


def build_classifier(config, branch: str, freeze_encoder: bool = False) -> Classifier:
    """:func:`load_encoder` with a zero-initialised linear layer of ``config.data.num_classes``
    outputs on BN ``branch``, its weights created (call in the strategy's scope). With
    ``config.model.sync_bn`` the BN layers use cross-replica batch statistics (a saved encoder
    has none)."""
    encoder = load_encoder(config)
    if not getattr(encoder, "dual_bn", True):
        logging.info("the encoder has a single BN: bn=%s selects the same statistics", branch)
    classifier = Classifier(encoder, config.data.num_classes, branch=branch,
                            freeze_encoder=freeze_encoder, name="classifier")
    if config.model.sync_bn:
        set_synchronized_bn(classifier)
    size = config.data.image_size
    classifier(np.zeros((2, size, size, 3), np.float32), training=False)  # create the weights
    return classifier


MODEL_FIELDS = ("arch", "width", "bn")


def use_pretrained(config, pretrained=None, overrides: Sequence[str] = ()):
    """``config`` with ``pretrained`` (when given) and its model section taken from that encoder
    (:func:`align_model_config`); ``model.arch`` / ``width`` / ``bn`` among the ``field=value``
    ``overrides`` were set explicitly, so they must agree with the encoder."""
    if pretrained:
        config = dataclasses.replace(config, pretrained=pretrained)
    explicit = {text.split("=", 1)[0].strip() for text in overrides}
    return align_model_config(config, strict=[f for f in MODEL_FIELDS if f"model.{f}" in explicit])
