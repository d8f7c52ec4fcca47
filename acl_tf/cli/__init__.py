"""Command lines: flags in, one task call, one error exit. ``python -m acl_tf.<command>`` runs
``acl_tf.cli.<command>``."""
