"""Keras models that train themselves: ``keras.Model`` subclasses with a custom ``train_step``
(ACL pre-training, TRADES / linear fine-tuning, the semi-supervised teacher and student)."""
