"""Imports a published PyTorch checkpoint of the reference code (``--checkpoint``) into a new
acl-tf directory (``--model_dir``).

    acl-tf import_checkpoint --checkpoint=ACL_DS.pt --model_dir=runs/acl_ds
    acl-tf finetune --config=paper_aff --model=runs/acl_ds --model_dir=runs/acl_ds_aff
    acl-tf import_checkpoint --checkpoint=model_best.pt --format=trades_wrn --model_dir=runs/trades

(``python -m acl_tf.import_checkpoint`` runs the same; PyTorch must be installed:
``pip install "acl-tf[torch]"``.) ``--format``: ``multi_bn`` (the reference ACL ResNet-18 with a
BN per branch: ACL and DynACL pre-training; ``normal`` -> acl-tf's ``normal`` branch, ``pgd`` ->
``adv``), ``single_bn`` (the reference's single-BN ResNet-18: converted encoders, TRADES/AFF
fine-tuned classifiers, DynACL++), ``trades_wrn`` (TRADES' WideResNet), or ``auto`` (told from the
keys). Writes ``encoder.keras`` (always), ``pretrainer.keras`` (a checkpoint with the projection
head), ``best.keras`` and ``saved_model/1/`` (one with a linear ``fc``: a classifier) and
``imported.json``. Unknown keys, missing keys and wrong shapes fail the import, all listed. See
docs/parity.md, "Importing PyTorch checkpoints".
"""

from __future__ import annotations

from absl import flags

from acl_tf.cli.common import define_enum, mark_required, run
from acl_tf.configs.choices import BRANCHES

FLAGS = flags.FLAGS

# acl_tf.models.convert.FORMATS, repeated so that --help needs no TensorFlow (a test checks that
# the two agree).
FORMATS = ("multi_bn", "single_bn", "trades_wrn")


def define_flags():
    flags.DEFINE_string("checkpoint", None, "The PyTorch checkpoint file (.pt / .pth / .tar) "
                        "to import. Required.")
    flags.DEFINE_string("model_dir", None, "The directory to write (new, or empty); the other "
                        "commands read it as --model. Required.")
    define_enum("format", "auto", ("auto",) + FORMATS,
                "The checkpoint's key layout; auto tells it from the keys.")
    flags.DEFINE_string("state_dict_key", None, "The checkpoint entry holding the state dict "
                        "(default: the file itself if it is one, else its 'state_dict' or "
                        "'model' entry).")
    flags.DEFINE_string("key_prefix", None, "Import only the keys under this prefix, e.g. "
                        "encoder_k. for the momentum model DynACL saves as model.pt (after a "
                        "DataParallel 'module.' prefix, which is always removed).")
    define_enum("bn", "adv", BRANCHES, "Default BN branch of an imported dual-BN "
                "classifier (the reference tests on its pgd BN: adv).")
    flags.DEFINE_bool("export", True, "Also export an imported classifier as a SavedModel "
                      "(saved_model/1/).")
    mark_required("checkpoint", "model_dir")


def main(argv):
    del argv
    from acl_tf.tasks.import_checkpoint import import_checkpoint

    record = import_checkpoint(FLAGS.checkpoint, FLAGS.model_dir, FLAGS.format,
                               state_dict_key=FLAGS.state_dict_key, key_prefix=FLAGS.key_prefix,
                               branch=FLAGS.bn, export=FLAGS.export)
    arch = record["arch"] + (f" width {record['width']}" if "width" in record else "")
    what = "dual BN" if record["dual_bn"] else "single BN"
    if record["head"]:
        what += f", {record['head']['num_layers']}-layer projection head"
    if record["num_classes"]:
        what += f", classifier of {record['num_classes']} classes"
    print(f"imported {record['keys_imported']} keys ({record['format']}: {arch}, {what}; "
          f"{len(record['keys_skipped'])} skipped, see imported.json)")
    print(f"input normalisation: mean {record['mean']}, std {record['std']} "
          f"({record['normalization']})")
    print(f"wrote {', '.join(record['files'])} into {FLAGS.model_dir}", flush=True)


if __name__ == "__main__":
    run(define_flags, main)
