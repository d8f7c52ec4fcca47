"""The run-directory contract: what every training run writes, under which name.

A run directory (``--model_dir``) holds:

=====================  ==========================================================================
``config.json``        the resolved, typed config of the run (written first)
``checkpoints/``       one checkpoint per epoch (``ckpt-N``), the last few kept
``logs/``              TensorBoard summaries
``history.json``       one entry per finished epoch
``training_curves.png``  the history, redrawn every epoch
``encoder.keras``      pre-training: the encoder with both BN branches
``pretrainer.keras``   pre-training: encoder + projection head
``best.keras``         fine-tuning: the epoch selected on the validation split
``last.keras``         fine-tuning: the last epoch
``metrics.json``       fine-tuning / semi-supervised: selection and test metrics
``saved_model/N/``     the exported SavedModel, version N
``pseudo_labels.npz``  semi-supervised: the soft pseudo-labels of every training image
``teacher/``, ``student/``  semi-supervised: the two training runs, each a run directory
=====================  ==========================================================================

Library code, command lines and pipeline components name these files through the constants
below, never through string literals.
"""

from __future__ import annotations

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
HISTORY = "history.json"
CURVES = "training_curves.png"
ENCODER = "encoder.keras"
PRETRAINER = "pretrainer.keras"
BEST = "best.keras"
LAST = "last.keras"
METRICS = "metrics.json"
SAVED_MODEL = "saved_model"
PSEUDO_LABELS = "pseudo_labels.npz"
TEACHER = "teacher"
STUDENT = "student"
