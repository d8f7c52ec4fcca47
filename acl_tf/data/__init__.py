"""Images in, batches out: loading (:mod:`.sources`), torchvision-semantics augmentation
(:mod:`.augment`), the semi-supervised label split (:mod:`.label_split`), the student's mixed
batches (:mod:`.mixing`) and the pseudo-label artifact (:mod:`.pseudo_labels`). The loading API
is re-exported here: ``data.load(...)``, ``data.load_split(config.data, split)``."""

from acl_tf.data.sources import (  # noqa: F401
                                 DEFAULT_NUM_CLASSES,
                                 DataError,
                                 ImageData,
                                 class_balanced_indices,
                                 load,
                                 load_split,
                                 to_dataset,
                                 train_val_split,
                                 write_tfrecord,
)
