"""``python -m acl_tf.serving_check``: runs the command line :mod:`acl_tf.cli.serving_check`."""

from acl_tf.cli import common, serving_check

if __name__ == "__main__":
    common.run(serving_check.define_flags, serving_check.main)
