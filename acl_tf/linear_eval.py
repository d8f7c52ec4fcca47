"""``python -m acl_tf.linear_eval``: runs the command line :mod:`acl_tf.cli.linear_eval`."""

from acl_tf.cli import common, linear_eval

if __name__ == "__main__":
    common.run(linear_eval.define_flags, linear_eval.main)
