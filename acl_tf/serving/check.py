"""Checks a served model end to end: clean and adversarial accuracy *as served*.

    acl-tf serving_check --url=http://localhost:8501/v1/models/acl \\
        --data=sample:cifar10 --model=runs/aff/saved_model/1 --limit=200

Loads test images (``--data`` / ``--split`` / ``--limit``, any source of ``acl_tf.data.load``;
``--limit`` N takes a class-balanced subset, N / num_classes images of every class, unless
``--subset=first`` asks for the first N in file order: see :mod:`acl_tf.evaluation.subset`),
crafts L-inf PGD examples locally against the *exported* SavedModel (loaded with
``tf.saved_model.load``; gradients flow through the restored signature function, so what is
attacked is exactly what is served), sends the clean and the adversarial images to the TF Serving
REST predict API (``POST {url}:predict`` with ``{"signature_name": ..., "instances": [...]}``),
reads ``predictions`` and reports the clean accuracy (TA) and robust accuracy (RA) as served, plus
the same figures computed locally and how often server and local predictions agree (should be
1.0: anything else means the server runs another model or preprocesses differently).

An example counts as robust only if the server classifies both its clean and its adversarial
version correctly. The report is printed as JSON and written to ``--output`` if given.
Only float signatures can be attacked (``serving_default``, ``serving_adv``, ``serving_normal``);
``serve_image_bytes`` takes encoded images, which have no input gradient.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Optional

import numpy as np

from acl_tf.core.errors import ServingError  # noqa: F401 (re-exported)

__all__ = ["ServingError", "predict_url", "model_status", "request_predictions",
           "run_serving_check"]



def predict_url(url: str) -> str:
    """``http://HOST:8501/v1/models/NAME[/versions/V]`` -> the same with ``:predict``."""
    url = url.strip().rstrip("/")
    if url.endswith(":predict"):
        url = url[: -len(":predict")]
    if "/v1/models/" not in url or not url.startswith(("http://", "https://")):
        raise ValueError(f"--url must look like http://HOST:8501/v1/models/NAME, got {url!r}")
    return url + ":predict"


def _http_json(request, endpoint: str, timeout: float):
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        raise ServingError(f"{endpoint} answered HTTP {err.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ServingError(f"cannot reach {endpoint} (or bad reply): {err}") from None


def model_status(url: str, timeout: float = 60.0) -> dict:
    """``GET {url}``: TF Serving's model status (fails fast when nothing serves the model)."""
    endpoint = predict_url(url)[: -len(":predict")]
    status = _http_json(urllib.request.Request(endpoint, method="GET"), endpoint, timeout)
    if not isinstance(status, dict) or "model_version_status" not in status:
        raise ServingError(f"{endpoint}: not a TF Serving model status: {str(status)[:200]}")
    return status


def request_predictions(url: str, images: np.ndarray, signature_name: str, *,
                        batch_size: int = 32, timeout: float = 60.0) -> tuple[np.ndarray, int]:
    """Sends ``images`` (float32 [N, H, W, 3]) in row format, ``batch_size`` per request; returns
    the served class ids [N] and the number of requests made."""
    endpoint = predict_url(url)
    labels, requests = [], 0
    for start in range(0, len(images), batch_size):
        chunk = np.asarray(images[start:start + batch_size], dtype=np.float32)
        body = json.dumps({"signature_name": signature_name,
                           "instances": chunk.tolist()}).encode("utf-8")
        request = urllib.request.Request(endpoint, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        payload = _http_json(request, endpoint, timeout)
        requests += 1
        labels.append(_class_ids(payload, len(chunk), endpoint))
    out = np.concatenate(labels) if labels else np.zeros([0], np.int64)
    return out, requests


def _class_ids(payload, count: int, endpoint: str) -> np.ndarray:
    """Class ids from a row-format ``predictions`` list (dicts of outputs, or bare values)."""
    if not isinstance(payload, dict) or "predictions" not in payload:
        raise ServingError(f"{endpoint}: response has no 'predictions': {str(payload)[:200]}")
    predictions = payload["predictions"]
    if not isinstance(predictions, list) or len(predictions) != count:
        raise ServingError(f"{endpoint}: expected {count} predictions, got "
                           f"{len(predictions) if isinstance(predictions, list) else 'none'}")
    ids = []
    for p in predictions:
        if isinstance(p, dict):
            if "class_ids" in p:
                ids.append(int(np.asarray(p["class_ids"]).reshape(-1)[0]))
            elif "logits" in p or "probabilities" in p:
                ids.append(int(np.argmax(p.get("logits", p.get("probabilities")))))
            else:
                raise ServingError(f"{endpoint}: prediction has none of class_ids/logits/"
                                   f"probabilities: {sorted(p)}")
        else:   # a single-output signature: the logits / probabilities themselves
            ids.append(int(np.argmax(p)))
    return np.asarray(ids, np.int64)


def _local_model(saved_model: str, signature_name: str):
    """The exported signature, checked to take float images."""
    import tensorflow as tf

    from acl_tf.serving.export import resolve_version_dir

    path = resolve_version_dir(saved_model)
    loaded = tf.saved_model.load(str(path))
    if signature_name not in loaded.signatures:
        raise ValueError(f"{path} has no signature {signature_name!r} (has "
                         f"{sorted(loaded.signatures)})")
    fn = loaded.signatures[signature_name]
    _, inputs = fn.structured_input_signature
    if len(inputs) != 1 or next(iter(inputs.values())).dtype != tf.float32:
        raise ValueError(f"signature {signature_name!r} takes {inputs}; adversarial examples "
                         "need a float32 image signature (serving_default, serving_adv, "
                         "serving_normal)")
    (input_name,) = inputs
    return loaded, fn, input_name, path


def run_serving_check(url: str, data, saved_model: str, *, signature_name: str = "serving_default",
                      split: str = "test", limit: Optional[int] = 100,
                      subset: str = "balanced", epsilon: float = 8 / 255,
                      step_size: float = 2 / 255, steps: int = 20, batch_size: int = 32,
                      seed: int = 0, timeout: float = 60.0) -> dict:
    """Runs the check; returns the JSON-able report (see the module docstring). ``limit``
    images of ``split`` are checked: a class-balanced subset, or with ``subset="first"`` the
    first ``limit`` in file order (None: all)."""
    import tensorflow as tf

    from acl_tf.attacks import PGDConfig, pgd_linf
    from acl_tf.data import DataError
    from acl_tf.evaluation.subset import describe_subset, load_limited
    from acl_tf.losses import cross_entropy

    start = time.perf_counter()
    endpoint = predict_url(url)
    status = model_status(url, timeout)
    config = PGDConfig(epsilon=epsilon, step_size=step_size, steps=steps,
                       random_start="uniform")
    dataset = load_limited(data, split, limit, subset)
    if len(dataset) == 0:
        raise DataError(f"{data} [{split}] has no images.")
    x, y = dataset.to_float(), dataset.labels
    loaded, fn, input_name, path = _local_model(saved_model, signature_name)

    def logits_of(images):
        return fn(**{input_name: images})["logits"]

    # The attack runs inside one tf.function (gradients through the restored signature). The
    # steps are unrolled: the restored signature's input shape is unknown, which a
    # tf.while_loop would reject as a changing loop-variable shape.
    @tf.function(reduce_retracing=True)
    def attack(images, labels, attack_seed):
        x_adv = pgd_linf(lambda z: cross_entropy(labels, logits_of(z), "sum"), images, config,
                         seed=attack_seed, unroll=True)
        return x_adv, tf.argmax(logits_of(images), -1), tf.argmax(logits_of(x_adv), -1)

    adv, local_clean, local_adv = [], [], []
    for b, lo in enumerate(range(0, len(x), batch_size)):
        xa, pc, pa = attack(tf.constant(x[lo:lo + batch_size]),
                            tf.constant(y[lo:lo + batch_size]),
                            tf.constant([seed, b], tf.int64))
        adv.append(xa.numpy())
        local_clean.append(pc.numpy())
        local_adv.append(pa.numpy())
    x_adv = np.concatenate(adv)
    local_clean, local_adv = np.concatenate(local_clean), np.concatenate(local_adv)
    linf = float(np.abs(x_adv - x).max())

    served_clean, n1 = request_predictions(url, x, signature_name, batch_size=batch_size,
                                           timeout=timeout)
    served_adv, n2 = request_predictions(url, x_adv, signature_name, batch_size=batch_size,
                                         timeout=timeout)
    clean_ok = served_clean == y
    robust_ok = clean_ok & (served_adv == y)
    return {
        "url": endpoint,
        "signature_name": signature_name,
        "saved_model": str(path),
        "data": {"source": str(data), "split": split, **describe_subset(dataset, limit, subset)},
        "num_examples": int(len(x)),
        "clean_accuracy": float(clean_ok.mean()),
        "robust_accuracy": float(robust_ok.mean()),
        "local_clean_accuracy": float((local_clean == y).mean()),
        "local_robust_accuracy": float(((local_clean == y) & (local_adv == y)).mean()),
        "served_vs_local_agreement": {"clean": float((served_clean == local_clean).mean()),
                                      "adversarial": float((served_adv == local_adv).mean())},
        "attack": {"name": f"pgd{steps}", "norm": "Linf", "epsilon": epsilon,
                   "epsilon_255": epsilon * 255, "step_size": step_size, "steps": steps,
                   "random_start": "uniform", "loss": "cross_entropy", "seed": seed,
                   "crafted_against": f"{path} signature {signature_name}",
                   "max_linf_perturbation_255": linf * 255},
        "model_version_status": status["model_version_status"],
        "requests": n1 + n2,
        "seconds": time.perf_counter() - start,
    }
