"""``python -m acl_tf.bench``: runs the command line :mod:`acl_tf.cli.bench`."""

from acl_tf.cli import bench, common

if __name__ == "__main__":
    common.run(bench.define_flags, bench.main)
