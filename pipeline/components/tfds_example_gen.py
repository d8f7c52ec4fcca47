"""``TfdsExampleGen``: materialises a TensorFlow Datasets split as an ``Examples`` artifact.

The alternative to ``ImportExampleGen`` when the data is a prepared TFDS dataset
(``tfds.load(name, data_dir=..., download=False)`` must find it: nothing is downloaded). One
split of the dataset is read with :func:`acl_tf.data.load` and written with
:func:`acl_tf.data.write_tfrecord` as ``Split-<split_name>/data.tfrecord.gz``, GZIP-compressed
``tf.train.Example`` records with PNG ``image``, int64 ``label`` and ``id``: the layout and
format ``ImportExampleGen`` produces, so every later component reads both alike.

TFX caches this component on its parameters: after re-preparing a dataset under the same name
and version, run the pipeline once with caching disabled.
"""

import os

from tfx import v1 as tfx

from pipeline.components import artifact_io

DATA_FILE = "data.tfrecord.gz"


@tfx.dsl.components.component
def TfdsExampleGen(
    examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    dataset: tfx.dsl.components.Parameter[str],
    tfds_split: tfx.dsl.components.Parameter[str],
    split_name: tfx.dsl.components.Parameter[str],
    image_size: tfx.dsl.components.Parameter[int] = 32,
    num_classes: tfx.dsl.components.Parameter[int] = 10,
    data_dir: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes TFDS ``dataset[tfds_split]`` as the split ``split_name`` of ``examples``.

    Args:
        examples: the output ``Examples`` (one split).
        dataset: TFDS name, e.g. ``cifar10`` (optionally with a version, ``cifar10:3.0.2``).
        tfds_split: TFDS split (``train``, ``test``, ``train[:10%]``...).
        split_name: the split's name in the artifact (``train`` or ``test``).
        image_size, num_classes: checked on every image and label.
        data_dir: TFDS ``data_dir`` (empty: TFDS's default).
    """
    from tfx.types import artifact_utils

    from acl_tf import data as data_lib

    images = data_lib.load(dataset, tfds_split, data_dir=data_dir or None, download=False,
                           image_size=image_size, num_classes=num_classes)
    if len(images) == 0:
        raise data_lib.DataError(f"TFDS {dataset}[{tfds_split}] holds no examples")
    with artifact_io.local_output(examples.uri) as out:
        data_lib.write_tfrecord(os.path.join(out, f"Split-{split_name}", DATA_FILE), images)
    examples.split_names = artifact_utils.encode_split_names([split_name])
    examples.set_string_custom_property("tfds_dataset", dataset)
    examples.set_string_custom_property("tfds_split", tfds_split)
    examples.set_int_custom_property("num_examples", len(images))
