"""Checks a served model end to end: clean and adversarial accuracy *as served*.

    python -m acl_tf.serving_check --url=http://localhost:8501/v1/models/acl \\
        --data=data/cifar10_sample --saved_model=runs/ds_aff/saved_model/1 --limit=200

See :mod:`acl_tf.serving.check` and docs/serving.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags

from acl_tf.cli.common import run
from acl_tf.serving.check import run_serving_check

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("url", None, "Model URL, e.g. http://localhost:8501/v1/models/acl.")
    flags.DEFINE_string("data", None, "Data source for acl_tf.data.load.")
    flags.DEFINE_string("split", "test", "Split of --data.")
    flags.DEFINE_integer("limit", 100, "Number of test images (first N).")
    flags.DEFINE_string("saved_model", None, "The exported SavedModel (DIR/<version>, or DIR: "
                        "highest version) the server serves; adversarial examples are made "
                        "against it.")
    flags.DEFINE_string("signature_name", "serving_default", "Signature to attack and query.")
    flags.DEFINE_integer("pgd_steps", 20, "PGD steps.")
    flags.DEFINE_float("epsilon_255", 8.0, "L-inf epsilon in 1/255 units.")
    flags.DEFINE_float("step_size_255", 2.0, "PGD step size in 1/255 units.")
    flags.DEFINE_integer("batch_size", 32, "Images per attack batch and per request.")
    flags.DEFINE_integer("seed", 0, "Seed of the PGD random start.")
    flags.DEFINE_float("timeout", 60.0, "Seconds to wait for each HTTP response.")
    flags.DEFINE_string("output", None, "Also write the JSON report here.")
    for name in ("url", "data", "saved_model"):
        flags.mark_flag_as_required(name)


def main(argv):
    del argv
    f = FLAGS
    report = run_serving_check(
        f.url, f.data, f.saved_model, signature_name=f.signature_name, split=f.split,
        limit=f.limit, epsilon=f.epsilon_255 / 255, step_size=f.step_size_255 / 255,
        steps=f.pgd_steps, batch_size=f.batch_size, seed=f.seed, timeout=f.timeout)
    text = json.dumps(report, indent=2)
    print(text)
    if f.output:
        Path(f.output).parent.mkdir(parents=True, exist_ok=True)
        Path(f.output).write_text(text + "\n")


if __name__ == "__main__":
    run(define_flags, main)
