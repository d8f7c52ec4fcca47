"""Checks a served model end to end: clean and adversarial accuracy *as served*.

    acl-tf serving_check --url=http://localhost:8501/v1/models/acl \\
        --data=sample:cifar10 --model=runs/ds_aff/saved_model/1 --limit=200

(``python -m acl_tf.serving_check`` runs the same.) ``--model`` is the exported SavedModel the
server serves (adversarial examples are crafted against it). ``--limit=N`` checks N test images,
class-balanced (N / num_classes of every class) unless ``--subset=first`` takes the first N in
file order; the report gives the number of images of each class. ``--epsilon`` and
``--step_size`` are fractions of the [0, 1] pixel range, e.g. ``--epsilon=8/255``. Deprecated
names: ``--saved_model`` (``--model``), ``--epsilon_255`` and ``--step_size_255`` (1/255 units).
See :mod:`acl_tf.serving.check` and docs/serving.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags

from acl_tf.cli.common import define_alias, define_enum, define_fraction, mark_required, run

FLAGS = flags.FLAGS


def define_flags():
    from acl_tf.configs.evaluate import LIMIT_SUBSETS

    flags.DEFINE_string("model", None, "The SavedModel the server serves, which this command "
                        "reads (DIR/<version>, or DIR: highest version); adversarial examples "
                        "are made against it. Required.")
    define_alias("saved_model", "model")
    flags.DEFINE_string("url", None, "Model URL, e.g. http://localhost:8501/v1/models/acl. "
                        "Required.")
    flags.DEFINE_string("data", None, "Data source for acl_tf.data.load (e.g. sample:cifar10). "
                        "Required.")
    flags.DEFINE_string("split", "test", "Split of --data.")
    flags.DEFINE_integer("limit", 100, "Number of test images, class-balanced unless "
                         "--subset=first.", lower_bound=1)
    define_enum("subset", "balanced", LIMIT_SUBSETS, "Which --limit images: balanced "
                "(N/num_classes of every class, a deterministic draw) or first (the first N in "
                "file order).")
    flags.DEFINE_string("signature_name", "serving_default", "Signature to attack and query.")
    flags.DEFINE_integer("pgd_steps", 20, "PGD steps.", lower_bound=0)
    define_fraction("epsilon", "8/255", "L-inf epsilon.")
    define_fraction("step_size", "2/255", "PGD step size.")
    for old, new in (("epsilon_255", "epsilon"), ("step_size_255", "step_size")):
        define_alias(old, new, parser=flags.FloatParser(lower_bound=0, upper_bound=255),
                     convert=lambda v: v / 255, spell=lambda v: f"{v:g}/255",
                     note=" (the old flag is in 1/255 units)")
    flags.DEFINE_integer("batch_size", 32, "Images per attack batch and per request.",
                         lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the PGD random start.", lower_bound=0)
    flags.DEFINE_float("timeout", 60.0, "Seconds to wait for each HTTP response.")
    flags.DEFINE_string("output", None, "Also write the JSON report here.")
    mark_required("model", "url", "data")


def main(argv):
    del argv
    from acl_tf.serving.check import run_serving_check

    f = FLAGS
    report = run_serving_check(
        f.url, f.data, f.model, signature_name=f.signature_name, split=f.split,
        limit=f.limit, subset=f.subset, epsilon=f.epsilon, step_size=f.step_size,
        steps=f.pgd_steps, batch_size=f.batch_size, seed=f.seed, timeout=f.timeout)
    text = json.dumps(report, indent=2)
    print(text)
    if f.output:
        Path(f.output).parent.mkdir(parents=True, exist_ok=True)
        Path(f.output).write_text(text + "\n")


if __name__ == "__main__":
    run(define_flags, main)
