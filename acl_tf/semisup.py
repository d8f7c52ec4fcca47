"""``python -m acl_tf.semisup``: runs the command line :mod:`acl_tf.cli.semisup`."""

from acl_tf.cli import common, semisup

if __name__ == "__main__":
    common.run(semisup.define_flags, semisup.main)
