"""``python -m acl_tf.import_checkpoint``: runs the command line
:mod:`acl_tf.cli.import_checkpoint`."""

from acl_tf.cli import common, import_checkpoint

if __name__ == "__main__":
    common.run(import_checkpoint.define_flags, import_checkpoint.main)
