"""``python -m acl_tf.evaluate``: runs the command line :mod:`acl_tf.cli.evaluate`."""

from acl_tf.cli import common, evaluate

if __name__ == "__main__":
    common.run(evaluate.define_flags, evaluate.main)
