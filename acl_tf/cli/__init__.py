"""Command lines: flags in, one task call, one error exit. ``acl-tf <command>`` and
``python -m acl_tf.<command>`` run ``acl_tf.cli.<command>``; :mod:`acl_tf.cli.common` holds what
they share.

Importing this package sets two TensorFlow variables, each unless it is set, before anything
imports TensorFlow:

* ``TF_CPP_MIN_LOG_LEVEL=3``: TensorFlow's C++ log (CUDA plugin registration errors on a CPU
  machine, oneDNN notes) is noise on a command line. ``TF_CPP_MIN_LOG_LEVEL=0`` shows it again.
* ``TF_ENABLE_ONEDNN_OPTS=1`` on x86-64: TensorFlow turns its oneDNN kernels on by itself only
  on CPUs with AVX-512 VNNI/BF16 or AMX, and leaves them off on others (AMD EPYC before Zen 4,
  older Intel), where its own kernels make a pre-training step 1.3-2x slower than the reference
  PyTorch code's (benchmarks/README.md, "On a CPU without AVX-512"). ``TF_ENABLE_ONEDNN_OPTS=0``
  keeps them off.
"""

import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
