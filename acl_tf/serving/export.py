"""Export a fine-tuned classifier as a SavedModel for TensorFlow Serving.

:func:`export_classifier` writes ``export_dir/<version>/`` (the layout TF Serving watches: a base
directory of integer versions, the highest served) through ``keras.export.ExportArchive``, with
these signatures:

=====================  ===========================================  ==========================
signature              input                                        BN branch
=====================  ===========================================  ==========================
``serving_default``    ``images``: float32 [N, H, W, 3] in [0, 1]    the chosen one (default:
                                                                    the classifier's own)
``serve_image_bytes``  ``image_bytes``: string [N], encoded          the chosen one
                       PNG/JPEG/BMP/GIF images of H x W pixels
``serving_normal``     ``images`` as above                          ``normal`` (dual BN only)
``serving_adv``        ``images`` as above                          ``adv`` (dual BN only)
=====================  ===========================================  ==========================

Every signature returns ``logits`` (float32 [N, C]), ``probabilities`` (softmax, [N, C]) and
``class_ids`` (int64 [N]). Inputs are checked inside the graph: a wrong rank, height/width or
channel count, or pixel values outside [0, 1] (NaN included) fail with an
``InvalidArgumentError`` whose message names the problem; so does an image that does not decode
or has the wrong size. The input shape is left unconstrained in the signature so that these
checks, rather than a generic shape mismatch, report the error.

The version directory is written under a temporary name and renamed, so TF Serving (which only
loads integer-named directories) never sees a partial export. ``assets.extra/signatures.json``
and ``assets.extra/signatures.md`` document the signatures and the REST request format.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional

import tensorflow as tf
from absl import logging

from acl_tf.core import run_dir as rd
from acl_tf.core.errors import ExportError  # noqa: F401 (re-exported)

__all__ = ["ExportError", "SIGNATURE_DEFAULT", "SIGNATURE_BYTES", "BRANCH_SIGNATURES",
           "OUTPUT_KEYS", "existing_versions", "next_version", "resolve_version_dir",
           "export_classifier", "export_run"]

SIGNATURE_DEFAULT = "serving_default"
SIGNATURE_BYTES = "serve_image_bytes"
BRANCH_SIGNATURES = {"normal": "serving_normal", "adv": "serving_adv"}
OUTPUT_KEYS = ("logits", "probabilities", "class_ids")
DOCS_DIR = "assets.extra"



def existing_versions(export_dir) -> list[int]:
    """The integer version directories already in ``export_dir`` (sorted)."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        return []
    return sorted(int(p.name) for p in export_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(export_dir) -> int:
    """One more than the highest existing version (1 for a new directory)."""
    versions = existing_versions(export_dir)
    return versions[-1] + 1 if versions else 1


def resolve_version_dir(path) -> Path:
    """``path`` if it is a SavedModel directory, else its highest integer version directory
    (TF Serving's choice for a base path)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = existing_versions(path)
    if not versions:
        raise ExportError(f"{path} is neither a SavedModel directory (no saved_model.pb) nor a "
                          "base directory of integer versions.")
    return path / str(versions[-1])


def _outputs(logits):
    logits = tf.cast(logits, tf.float32)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1),
            "class_ids": tf.argmax(logits, axis=-1, output_type=tf.int64)}


def _checked_images(images, size: int):
    """``images`` after in-graph checks of rank, size, channels and value range.

    Each check only applies when the previous ones hold, so exactly the first problem is
    reported, whatever order the runtime executes the assertions in.
    """
    expected = f"[N, {size}, {size}, 3]"
    shape = tf.shape(images)
    rank_ok = tf.equal(tf.rank(images), 4)
    shape4 = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[:4]
    size_ok = tf.reduce_all(tf.equal(shape4[1:3], size))
    channels_ok = tf.equal(shape4[3], 3)
    in_range = tf.reduce_all(tf.logical_and(images >= 0.0, images <= 1.0))  # False for NaN
    checks = [
        (rank_ok, f"images must be a 4-D batch {expected} (wrong rank); got shape"),
        (size_ok, f"images must be {size}x{size} pixels {expected} (wrong height/width); got "
                  "shape"),
        (channels_ok, f"images must have 3 (RGB) channels {expected} (wrong channel count); got "
                      "shape"),
    ]
    asserts, previous = [], tf.constant(True)
    for ok, message in checks:
        asserts.append(tf.debugging.Assert(tf.logical_or(tf.logical_not(previous), ok),
                                           [message, shape]))
        previous = tf.logical_and(previous, ok)
    asserts.append(tf.debugging.Assert(
        tf.logical_or(tf.logical_not(previous), in_range),
        ["pixel values must lie in [0, 1] (divide uint8 pixels by 255); got min/max",
         tf.reduce_min(images), tf.reduce_max(images)]))
    with tf.control_dependencies(asserts):
        # (reshape, not ensure_shape: grappler would take ensure_shape as a promise about the
        # input and fold the rank check away)
        return tf.reshape(tf.identity(images), [-1, size, size, 3])


def _decode(image_bytes, size: int):
    """Decodes one encoded image to float32 [size, size, 3] in [0, 1], checking its size."""
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    size_ok = tf.debugging.Assert(
        tf.reduce_all(tf.equal(tf.shape(image)[:2], size)),
        [f"encoded image must be {size}x{size} pixels (wrong height/width); got shape",
         tf.shape(image)])
    with tf.control_dependencies([size_ok]):
        image = tf.reshape(tf.identity(image), [size, size, 3])
    return tf.cast(image, tf.float32) / 255.0


def _signature_docs(branch: str, branches: list, size: int, num_classes: int) -> dict:
    outputs = {"logits": f"float32 [N, {num_classes}]",
               "probabilities": f"float32 [N, {num_classes}] (softmax of logits)",
               "class_ids": "int64 [N] (arg-max class)"}
    image_input = {"images": f"float32 [N, {size}, {size}, 3], RGB pixel values in [0, 1]"}
    docs = {
        SIGNATURE_DEFAULT: {"inputs": image_input, "outputs": outputs, "branch": branch},
        SIGNATURE_BYTES: {"inputs": {"image_bytes": f"string [N]: encoded PNG/JPEG/BMP/GIF "
                                                    f"images of {size}x{size} RGB pixels"},
                          "outputs": outputs, "branch": branch},
    }
    for b in branches:
        docs[BRANCH_SIGNATURES[b]] = {"inputs": image_input, "outputs": outputs, "branch": b}
    return docs


def _rest_docs(size: int) -> dict:
    return {
        "predict_url": "POST http://HOST:8501/v1/models/MODEL_NAME:predict "
                       "(or .../versions/VERSION:predict)",
        "float_request": {"signature_name": SIGNATURE_DEFAULT,
                          "instances": f"a list of images, each {size} rows of {size} pixels "
                                       "[r, g, b] with values in [0, 1]"},
        "bytes_request": {"signature_name": SIGNATURE_BYTES,
                          "instances": [{"b64": "<base64 of the PNG/JPEG file>"}]},
        "response": {"predictions": [{"logits": ["..."], "probabilities": ["..."],
                                      "class_ids": 3}]},
        "errors": "a bad input returns HTTP 400 with {\"error\": \"<message naming the "
                  "problem>\"}",
    }


def _render_markdown(meta: dict) -> str:
    lines = [f"# SavedModel signatures (version {meta['version']})", "",
             f"Classifier: {meta['num_classes']} classes, {meta['image_size']}x"
             f"{meta['image_size']} RGB input, default BN branch `{meta['default_branch']}`.",
             f"Exported {meta['created']} with TensorFlow {meta['tensorflow']}, Keras "
             f"{meta['keras']}.", "",
             "| signature | inputs | outputs | BN branch |", "|---|---|---|---|"]
    for name, sig in meta["signatures"].items():
        inputs = "; ".join(f"`{k}`: {v}" for k, v in sig["inputs"].items())
        outputs = "; ".join(f"`{k}`: {v}" for k, v in sig["outputs"].items())
        lines.append(f"| `{name}` | {inputs} | {outputs} | `{sig['branch']}` |")
    rest = meta["rest"]
    lines += ["", "## TF Serving REST API", "", f"`{rest['predict_url']}`", "",
              f"Float images (row format): `instances` is {rest['float_request']['instances']}:",
              "", "```json",
              json.dumps({"signature_name": SIGNATURE_DEFAULT,
                          "instances": [[[[0.5, 0.5, 0.5], "..."], "..."]]}), "```", "",
              "Encoded images (base64):", "", "```json",
              json.dumps(rest["bytes_request"]), "```", "",
              "Response:", "", "```json", json.dumps(rest["response"]), "```", "",
              "Bad inputs (wrong rank/size/channels, values outside [0, 1], undecodable "
              "bytes) give HTTP 400 with an `error` message naming the problem."]
    return "\n".join(lines) + "\n"


def export_classifier(classifier, export_dir, version: Optional[int] = None,
                      branch: Optional[str] = None, image_size: int = 32) -> str:
    """Exports ``classifier`` as ``export_dir/<version>/`` and returns that path.

    Args:
        classifier: an :class:`acl_tf.models.Classifier` (any Keras model called as
            ``model(images, training=False, branch=...)`` with a ``num_classes`` attribute).
        export_dir: the base directory (TF Serving's ``--model_base_path``).
        version: integer version; default one more than the highest already there.
        branch: BN branch of ``serving_default`` / ``serve_image_bytes``; default the
            classifier's own (``classifier.branch``).
        image_size: height and width of the input images.

    Raises:
        ExportError: the version already exists or is not a positive integer.
        ValueError: unknown branch.
    """
    import keras

    from acl_tf.models.dual_bn import check_branch

    export_dir = Path(export_dir)
    if version is None:
        version = next_version(export_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"version must be a positive integer, got {version!r}.")
    target = export_dir / str(version)
    if target.exists():
        raise ExportError(f"{target} already exists; choose another version (existing: "
                          f"{existing_versions(export_dir)}).")
    branch = check_branch(branch or getattr(classifier, "branch", "adv"))
    encoder = getattr(classifier, "encoder", None)
    branches = list(BRANCH_SIGNATURES) if getattr(encoder, "dual_bn", False) else []
    size = int(image_size)

    probe = tf.zeros([1, size, size, 3], tf.float32)
    for b in set(branches) | {branch}:   # builds the model; checks that the branch runs
        num_classes = int(classifier(probe, training=False, branch=b).shape[-1])

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    image_spec = [tf.TensorSpec(shape=None, dtype=tf.float32, name="images")]

    def float_endpoint(b):
        def serve(images):
            return _outputs(classifier(_checked_images(images, size), training=False, branch=b))

        return serve

    def serve_bytes(image_bytes):
        rank_ok = tf.debugging.Assert(
            tf.equal(tf.rank(image_bytes), 1),
            ["image_bytes must be a 1-D batch [N] of encoded images (wrong rank); got shape",
             tf.shape(image_bytes)])
        with tf.control_dependencies([rank_ok]):
            image_bytes = tf.reshape(tf.identity(image_bytes), [-1])
        images = tf.map_fn(lambda b: _decode(b, size), image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        return _outputs(classifier(images, training=False, branch=branch))

    archive.add_endpoint(SIGNATURE_DEFAULT, float_endpoint(branch), image_spec)
    archive.add_endpoint(SIGNATURE_BYTES, serve_bytes,
                         [tf.TensorSpec(shape=None, dtype=tf.string, name="image_bytes")])
    for b in branches:
        archive.add_endpoint(BRANCH_SIGNATURES[b], float_endpoint(b), image_spec)

    export_dir.mkdir(parents=True, exist_ok=True)
    tmp = export_dir / f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        archive.write_out(str(tmp), verbose=False)
        meta = {"version": version, "num_classes": num_classes, "image_size": size,
                "default_branch": branch, "dual_bn": bool(branches),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "tensorflow": tf.__version__, "keras": keras.__version__,
                "signatures": _signature_docs(branch, branches, size, num_classes),
                "rest": _rest_docs(size)}
        docs = tmp / DOCS_DIR
        docs.mkdir(exist_ok=True)
        (docs / "signatures.json").write_text(json.dumps(meta, indent=2) + "\n")
        (docs / "signatures.md").write_text(_render_markdown(meta))
        try:
            os.rename(tmp, target)
        except OSError as err:
            raise ExportError(f"cannot move the export into place at {target}: {err}") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def export_run(classifier, run_dir, what: str = rd.BEST) -> str:
    """Exports a training run's selected classifier (``what``, for the log) as the next version
    of ``run_dir/saved_model/``; returns the version directory."""
    path = export_classifier(classifier, str(Path(run_dir) / rd.SAVED_MODEL))
    logging.info("exported %s as a SavedModel to %s", what, path)
    return str(path)
