"""Command lines: flags in, one task call, one error exit. ``acl-tf <command>`` and
``python -m acl_tf.<command>`` run ``acl_tf.cli.<command>``; :mod:`acl_tf.cli.common` holds what
they share.

Importing this package sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless it is set, before anything
imports TensorFlow: its C++ log (CUDA plugin registration errors on a CPU machine, oneDNN notes)
is noise on a command line. ``TF_CPP_MIN_LOG_LEVEL=0`` shows it again.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
