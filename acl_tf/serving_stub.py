"""``python -m acl_tf.serving_stub``: runs the command line :mod:`acl_tf.cli.serving_stub`."""

from acl_tf.cli import common, serving_stub

if __name__ == "__main__":
    common.run(serving_stub.define_flags, serving_stub.main)
