"""``python -m acl_tf.finetune``: runs the command line :mod:`acl_tf.cli.finetune`."""

from acl_tf.cli import common, finetune

if __name__ == "__main__":
    common.run(finetune.define_flags, finetune.main)
