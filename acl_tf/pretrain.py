"""``python -m acl_tf.pretrain``: runs the command line :mod:`acl_tf.cli.pretrain`."""

from acl_tf.cli import common, pretrain

if __name__ == "__main__":
    common.run(pretrain.define_flags, pretrain.main)
