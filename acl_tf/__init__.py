"""acl-tf: robust pre-training by Adversarial Contrastive Learning (NeurIPS 2020) in TensorFlow /
Keras 3, with its successors' building blocks, fine-tuning, evaluation, a TFX pipeline and
SavedModels for TF Serving. Command line: ``acl-tf <command>`` (or ``python -m acl_tf.<command>``).
"""

__version__ = "0.2.0"
