"""DynACL++ post-processing of a pre-trained encoder (``--model``) into a new run directory
(``--model_dir``) that fine-tuning takes like a pre-training run.

    acl-tf postprocess --config=cifar10_dynacl --model=runs/dynacl --model_dir=runs/dynacl_pp
    acl-tf finetune --config=cifar10_paper --model=runs/dynacl_pp --model_dir=runs/dynacl_pp_aff
    acl-tf postprocess --model_dir=runs/dynacl_pp --resume          # after a crash

(``python -m acl_tf.postprocess`` runs the same.) Steps: k-means pseudo-labels of the encoder's
features of every training image (``OUT/cluster_labels.npz``, ``OUT/clusters.json``), linear
probing on them (``OUT/linear_probe/``), adversarial full fine-tuning (TRADES) on them
(``OUT/aft/``), and the fine-tuned encoder as ``OUT/encoder.keras`` (both BN branches unless
``--set=single_bn_output=true``); ``OUT/metrics.json`` collects the figures. ``--model`` is a
pre-training run directory, an ``acl-tf import_checkpoint`` directory or an encoder ``.keras``
file; the encoder defines the architecture. ``--config`` is a preset name (see
``acl_tf/configs/presets/postprocess/``) or a YAML/JSON path; ``--set=field.sub=value`` overrides
any field. On ``--resume`` the run's own ``config.json`` is the starting point (``--model`` may
then be left out); the clusters are reused and each stage continues from its last checkpoint.
"""

from __future__ import annotations

from absl import flags, logging

from acl_tf.cli.common import define_run_flags, run

FLAGS = flags.FLAGS


def define_flags():
    define_run_flags("postprocess", "cifar10_dynacl", "config.json, cluster_labels.npz, "
                     "clusters.json, linear_probe/, aft/, encoder.keras, metrics.json")
    flags.DEFINE_string("model", None, "The pre-trained encoder this command reads: a "
                        "pre-training run directory holding encoder.keras, an imported "
                        "checkpoint's directory or a .keras encoder file. Required unless "
                        "--resume finds it in the run's config.json.")


def resolve_config(config_name, overrides, pretrained, model_dir, resume):
    """The run's config: named config (or the saved one on resume) + overrides, with
    ``pretrained`` and the model section taken from that encoder (explicit ``model.*``
    overrides must agree with it)."""
    import dataclasses

    from acl_tf.configs import PostprocessConfig, load_run_config

    config = load_run_config(PostprocessConfig, "postprocess", config_name, overrides, model_dir,
                             resume)
    if pretrained:
        config = dataclasses.replace(config, pretrained=pretrained)
    config.check_pretrained()      # before TensorFlow loads: a usage error answers at once
    from acl_tf.tasks.encoders import use_pretrained

    return use_pretrained(config, None, list(overrides))


def summary_line(summary: dict) -> str:
    """One line of the figures of ``OUT/metrics.json``."""
    parts = []
    if "cluster_sizes" in summary:
        parts.append(f"{summary['num_clusters']} clusters of sizes {summary['cluster_sizes']} "
                     f"(purity {summary['cluster_purity']:.4f})")
    probe = summary.get("linear_probe")
    if probe and "loss" in probe:
        parts.append(f"linear probing loss {probe['loss']:.4f}, accuracy {probe['acc']:.4f}")
    aft = summary.get("aft")
    if aft and "loss" in aft:
        parts.append(f"fine-tuning loss {aft['loss']:.4f}, accuracy {aft['acc']:.4f}, "
                     f"adversarial accuracy {aft['adv_acc']:.4f}")
    if "encoder" in summary:
        parts.append(f"encoder {summary['encoder']}")
    return "; ".join(parts) or "nothing done"


def main(argv):
    del argv
    config = resolve_config(FLAGS.config, FLAGS.set, FLAGS.model, FLAGS.model_dir, FLAGS.resume)
    from acl_tf.tasks.postprocess import run_postprocess

    summary = run_postprocess(config, FLAGS.model_dir, resume=FLAGS.resume)
    line = summary_line(summary)
    logging.info("done: %s", line)
    print(line)


if __name__ == "__main__":
    run(define_flags, main)
