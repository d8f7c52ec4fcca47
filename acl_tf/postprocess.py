"""``python -m acl_tf.postprocess``: runs the command line :mod:`acl_tf.cli.postprocess`."""

from acl_tf.cli import common, postprocess

if __name__ == "__main__":
    common.run(postprocess.define_flags, postprocess.main)
