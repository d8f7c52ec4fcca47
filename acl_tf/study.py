"""``python -m acl_tf.study``: runs the command line :mod:`acl_tf.cli.study`."""

from acl_tf.cli import common, study

if __name__ == "__main__":
    common.run(study.define_flags, study.main)
