"""Multi-run experiments built from the tasks: the reproduction study of the paper's tables
(:mod:`~acl_tf.studies.reproduction`) and the comparison of ACL's successors
(:mod:`~acl_tf.studies.methods`), on the shared machinery of :mod:`~acl_tf.studies.stages` and
:mod:`~acl_tf.studies.report`."""
