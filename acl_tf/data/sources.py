"""Image data loading for ACL: TFDS datasets, TFRecord files and NumPy arrays.

Every source is loaded into memory as an :class:`ImageData` holding uint8
images (CIFAR-sized datasets fit easily), int64 labels and string ids:

>>> data = load("sample:cifar10")                        # the sample shipped with acl-tf
>>> data = load("my_data")                               # directory -> train.tfrecord
>>> data = load("cifar10/test.tfrecord", limit=1000)     # one TFRecord file
>>> data = load("cifar10", split="test", download=True)  # TensorFlow Datasets
>>> data = load((images, labels))                        # NumPy arrays

TFRecord files hold ``tf.train.Example`` protos with the features ``image``
(bytes: an encoded JPEG/PNG/BMP/GIF image), ``label`` (int64) and optionally
``id`` (bytes).  Files ending in ``.gz`` are read as GZIP-compressed, which
also covers the output of TFX ``ImportExampleGen`` (``{dir}/Split-{split}/*.gz``).

Problems in the input raise :class:`DataError` with a message naming the
file (or array) and the offending record.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from acl_tf.core.errors import ConfigError, DataError  # noqa: F401 (DataError re-exported)
from acl_tf.core.paths import GLOB_CHARS, expand_sample, looks_like_path

__all__ = [
    "DataError",
    "ImageData",
    "load",
    "load_split",
    "class_balanced_indices",
    "train_val_split",
    "write_tfrecord",
    "to_dataset",
]

DEFAULT_NUM_CLASSES = 10
_BATCH = 1024


@dataclasses.dataclass
class ImageData:
    """An in-memory labelled image dataset.

    Attributes:
        images: uint8 array ``[N, H, W, 3]`` with values in [0, 255].
        labels: int64 array ``[N]``.
        ids: string array ``[N]`` identifying each example.
        num_classes: number of classes; labels lie in ``[0, num_classes)``.
    """

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    num_classes: int

    def __post_init__(self):
        n = len(self.images)
        if len(self.labels) != n or len(self.ids) != n:
            raise DataError(
                f"ImageData: mismatched lengths: {n} images, "
                f"{len(self.labels)} labels, {len(self.ids)} ids")

    def __len__(self) -> int:
        return len(self.images)

    def take(self, indices) -> "ImageData":
        """Returns the subset at ``indices`` (an integer or boolean index array)."""
        indices = np.asarray(indices)
        return ImageData(images=self.images[indices], labels=self.labels[indices],
                         ids=self.ids[indices], num_classes=self.num_classes)

    def to_float(self) -> np.ndarray:
        """Returns the images as float32 in [0, 1]."""
        return self.images.astype(np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def load(source, split: str = "train", *, data_dir: Optional[str] = None,
         download: bool = False, image_size: int = 32,
         num_classes: Optional[int] = None,
         limit: Optional[int] = None) -> ImageData:
    """Loads a labelled image dataset into memory.

    Args:
        source: one of
            * a TFDS dataset name such as ``"cifar10"`` or ``"cifar100"``;
            * ``"sample:cifar10"``, the 500 / 200 CIFAR-10 images shipped with acl-tf;
            * a TFRecord file path, a glob pattern, a comma-separated list of
              paths/globs, or a directory containing ``{split}.tfrecord*``,
              ``{split}/*`` or ``Split-{split}/*.gz`` (TFX ImportExampleGen);
            * a tuple ``(images, labels)`` or ``(images, labels, ids)`` of
              NumPy arrays; images are uint8 in [0, 255] or floats in [0, 1].
        split: split to load (TFDS split name, or the split used to find files
            in a directory; ignored for explicit files and arrays).
        data_dir: TFDS data directory (TFDS only).
        download: whether TFDS may download and prepare the dataset.
        image_size: required image height and width.
        num_classes: number of classes.  Defaults to the TFDS builder's label
            count, or 10 for TFRecords and arrays.
        limit: if given, keep only the first ``limit`` examples.

    Returns:
        An :class:`ImageData`.

    Raises:
        DataError: if the source is missing, unreadable or malformed.
    """
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    try:
        source = expand_sample(source)
    except ConfigError as err:
        raise DataError(str(err)) from None
    if isinstance(source, tuple):
        return _load_arrays(source, image_size=image_size,
                            num_classes=num_classes or DEFAULT_NUM_CLASSES, limit=limit)
    if isinstance(source, np.ndarray):
        raise DataError("array source must be a tuple (images, labels) or "
                        "(images, labels, ids), got a single array")
    if isinstance(source, (list, os.PathLike)) or (
            isinstance(source, str) and _looks_like_path(source)):
        files = _resolve_files(source, split)
        return _load_tfrecords(files, image_size=image_size,
                               num_classes=num_classes or DEFAULT_NUM_CLASSES, limit=limit)
    if isinstance(source, str):
        return _load_tfds(source, split, data_dir=data_dir, download=download,
                          image_size=image_size, num_classes=num_classes, limit=limit)
    raise DataError(f"unsupported data source of type {type(source).__name__}: {source!r}")


def load_split(data_config, split: str, limit: Optional[int] = None) -> ImageData:
    """:func:`load` of ``split`` with the settings of a :class:`acl_tf.configs.DataConfig`
    (``source``, ``data_dir``, ``download``, ``image_size``, ``num_classes``): the first
    ``limit`` images, all of them if None (``data_config.limit`` is the caller's to pass)."""
    d = data_config
    return load(d.source, split, data_dir=d.data_dir, download=d.download,
                image_size=d.image_size, num_classes=d.num_classes, limit=limit)


def _looks_like_path(source: str) -> bool:
    """Whether a string names files rather than a TFDS dataset."""
    return os.path.exists(os.path.expanduser(source)) or looks_like_path(source)


def _resolve_files(source, split: str) -> list:
    """Expands a path/glob/comma-list/directory into a sorted list of files."""
    if isinstance(source, list):
        parts = [os.fspath(p) for p in source]
    elif isinstance(source, os.PathLike):
        parts = [os.fspath(source)]
    else:
        parts = [p.strip() for p in source.split(",") if p.strip()]
    if not parts:
        raise DataError(f"no files given in data source {source!r}")
    files = []
    for part in parts:
        part = os.path.expanduser(part)
        if any(c in part for c in GLOB_CHARS):
            matched = sorted(f for f in glob.glob(part) if os.path.isfile(f))
            if not matched:
                raise DataError(f"no files match {part!r}")
            files.extend(matched)
        elif os.path.isdir(part):
            files.extend(_files_in_dir(part, split))
        elif os.path.isfile(part):
            files.append(part)
        else:
            raise DataError(f"no such file or directory: {part!r}")
    return files


def _files_in_dir(directory: str, split: str) -> list:
    """Finds the TFRecord files of ``split`` in ``directory``."""
    patterns = [
        os.path.join(directory, f"{split}.tfrecord*"),
        os.path.join(directory, f"{split}", "*"),
        os.path.join(directory, f"Split-{split}", "*"),
    ]
    for pattern in patterns:
        matched = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
        if matched:
            return matched
    raise DataError(
        f"no TFRecord files for split {split!r} in directory {directory!r} "
        f"(looked for {', '.join(os.path.relpath(p, directory) for p in patterns)})")


def _tf_message(error: tf.errors.OpError) -> str:
    """Strips TensorFlow's op/function decorations from an error message."""
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", error.message)
    message = re.sub(r"\s*\[Op:\w+\]( name: \S*)?\s*$", "", message)
    return message.strip()


def _compression(path: str) -> Optional[str]:
    return "GZIP" if path.endswith(".gz") else None


def _parse_example(serialized):
    """Parses one tf.train.Example; feature counts let missing ones be reported."""
    parsed = tf.io.parse_single_example(serialized, {
        "image": tf.io.VarLenFeature(tf.string),
        "label": tf.io.VarLenFeature(tf.int64),
        "id": tf.io.VarLenFeature(tf.string),
    })
    image_bytes = parsed["image"].values
    labels = parsed["label"].values
    ids = parsed["id"].values
    n_image = tf.size(image_bytes)
    n_label = tf.size(labels)
    image = tf.cond(
        n_image > 0,
        lambda: tf.io.decode_image(image_bytes[0], channels=3, expand_animations=False),
        lambda: tf.zeros([0, 0, 3], tf.uint8))
    label = tf.cond(n_label > 0, lambda: labels[0], lambda: tf.constant(-1, tf.int64))
    id_ = tf.cond(tf.size(ids) > 0, lambda: ids[0], lambda: tf.constant(b""))
    return {"image": image, "label": label, "id": id_,
            "n_image": n_image, "n_label": n_label}


def _fix_shape(image_size: int):
    """Returns a map fn giving every image a static shape plus its true shape."""
    target = [image_size, image_size, 3]

    def fn(example):
        image = example["image"]
        shape = tf.shape(image)
        ok = tf.reduce_all(tf.equal(shape, target))
        example = dict(example)
        example["image"] = tf.cond(ok, lambda: tf.reshape(image, target),
                                   lambda: tf.zeros(target, tf.uint8))
        example["shape"] = shape
        return example
    return fn


def _collect(ds: tf.data.Dataset, *, name: str, image_size: int, num_classes: int,
             id_prefix: str) -> ImageData:
    """Runs a dataset of parsed examples to NumPy, validating every record.

    ``name`` (a file name or dataset name) is used in error messages.
    """
    ds = ds.map(_fix_shape(image_size), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(_BATCH).prefetch(2)
    images, labels, ids = [], [], []
    offset = 0
    for batch in ds.as_numpy_iterator():
        n = len(batch["label"])
        batch_ids = [
            raw.decode("utf-8", errors="replace") if raw else f"{id_prefix}/{offset + i}"
            for i, raw in enumerate(batch["id"])]

        def where(i):
            return f"{name}: record {offset + i} (id {batch_ids[i]!r})"

        for feature in ("image", "label"):
            counts = batch[f"n_{feature}"]
            bad = np.flatnonzero(counts != 1)
            if bad.size:
                i = int(bad[0])
                if counts[i] == 0:
                    raise DataError(f"{where(i)} is missing the {feature!r} feature")
                raise DataError(f"{where(i)} has {counts[i]} values in the {feature!r} "
                                "feature, expected exactly 1")
        bad = np.flatnonzero(np.any(batch["shape"] != [image_size, image_size, 3], axis=1))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{where(i)} has image shape {tuple(int(s) for s in batch['shape'][i])}"
                            f", expected ({image_size}, {image_size}, 3)")
        bad = np.flatnonzero((batch["label"] < 0) | (batch["label"] >= num_classes))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{where(i)} has label {int(batch['label'][i])} outside "
                            f"[0, {num_classes})")
        images.append(batch["image"])
        labels.append(batch["label"].astype(np.int64))
        ids.extend(batch_ids)
        offset += n
    if not images:
        return _empty(image_size, num_classes)
    return ImageData(images=np.concatenate(images), labels=np.concatenate(labels),
                     ids=np.asarray(ids, dtype=str), num_classes=num_classes)


def _empty(image_size: int, num_classes: int) -> ImageData:
    return ImageData(images=np.zeros([0, image_size, image_size, 3], np.uint8),
                     labels=np.zeros([0], np.int64), ids=np.zeros([0], dtype=str),
                     num_classes=num_classes)


def _concat(parts: Sequence[ImageData], image_size: int, num_classes: int) -> ImageData:
    parts = [p for p in parts if len(p)]
    if not parts:
        return _empty(image_size, num_classes)
    return ImageData(images=np.concatenate([p.images for p in parts]),
                     labels=np.concatenate([p.labels for p in parts]),
                     ids=np.concatenate([p.ids for p in parts]),
                     num_classes=num_classes)


def _load_tfrecords(files: Sequence[str], *, image_size: int, num_classes: int,
                    limit: Optional[int]) -> ImageData:
    """Reads TFRecord files one at a time so that errors can name the file."""
    _check_num_classes(num_classes)
    parts = []
    remaining = limit
    for path in files:
        if remaining == 0:
            break
        ds = tf.data.TFRecordDataset(path, compression_type=_compression(path))
        if remaining is not None:
            ds = ds.take(remaining)
        ds = ds.map(_parse_example, num_parallel_calls=tf.data.AUTOTUNE)
        try:
            part = _collect(ds, name=path, image_size=image_size, num_classes=num_classes,
                            id_prefix=os.path.basename(path))
        except tf.errors.DataLossError as e:
            raise DataError(f"{path}: corrupt or truncated TFRecord file "
                            f"(compression={_compression(path)}): {_tf_message(e)}") from None
        except tf.errors.OpError as e:
            raise DataError(f"{path}: unreadable record (not a tf.train.Example with "
                            f"an encoded 'image' and int64 'label'?): {_tf_message(e)}") from None
        parts.append(part)
        if remaining is not None:
            remaining -= len(part)
    return _concat(parts, image_size, num_classes)


def _load_tfds(name: str, split: str, *, data_dir, download: bool, image_size: int,
               num_classes: Optional[int], limit: Optional[int]) -> ImageData:
    """Loads a TensorFlow Datasets dataset with ``image`` and ``label`` features."""
    import tensorflow_datasets as tfds  # Imported lazily: slow, and only needed here.

    try:
        ds, info = tfds.load(name, split=split, data_dir=data_dir, download=download,
                             as_supervised=False, with_info=True, shuffle_files=False)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"{name!r} is neither an existing file or directory nor a "
                        "known TFDS dataset") from None
    except AssertionError as e:  # TFDS signals "not prepared" with an assertion.
        raise DataError(f"TFDS dataset {name!r} is not available locally ({e}); pass "
                        "download=True or the right data_dir") from None
    for feature in ("image", "label"):
        if feature not in ds.element_spec:
            raise DataError(f"TFDS dataset {name!r} has no {feature!r} feature "
                            f"(features: {sorted(ds.element_spec)})")
    if num_classes is None:
        num_classes = getattr(info.features["label"], "num_classes", None)
        if num_classes is None:
            raise DataError(f"TFDS dataset {name!r}: 'label' is not a ClassLabel; "
                            "pass num_classes")
    _check_num_classes(num_classes)
    has_id = "id" in ds.element_spec
    if limit is not None:
        ds = ds.take(limit)

    def convert(example):
        image = tf.cast(example["image"], tf.uint8)
        return {"image": image, "label": tf.cast(example["label"], tf.int64),
                "id": example["id"] if has_id else tf.constant(b""),
                "n_image": tf.constant(1, tf.int32), "n_label": tf.constant(1, tf.int32)}

    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return _collect(ds, name=f"TFDS {name}[{split}]", image_size=image_size,
                    num_classes=num_classes, id_prefix=f"{name}/{split}")


def _load_arrays(source: tuple, *, image_size: int, num_classes: int,
                 limit: Optional[int]) -> ImageData:
    """Validates and converts an ``(images, labels[, ids])`` tuple."""
    _check_num_classes(num_classes)
    if len(source) not in (2, 3):
        raise DataError("array source must be (images, labels) or (images, labels, ids), "
                        f"got a tuple of {len(source)}")
    images, labels = np.asarray(source[0]), np.asarray(source[1])
    ids = np.asarray(source[2]) if len(source) == 3 else None
    expected = (image_size, image_size, 3)
    if images.ndim != 4 or images.shape[1:] != expected:
        raise DataError(f"images array has shape {images.shape}, expected "
                        f"(N, {image_size}, {image_size}, 3)")
    if labels.ndim != 1:
        raise DataError(f"labels array has shape {labels.shape}, expected (N,)")
    if len(labels) != len(images):
        raise DataError(f"mismatched lengths: {len(images)} images but {len(labels)} labels")
    if ids is not None and (ids.ndim != 1 or len(ids) != len(images)):
        raise DataError(f"ids array has shape {ids.shape}, expected ({len(images)},)")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
        ids = ids[:limit] if ids is not None else None

    if images.dtype == np.uint8:
        images = images.copy()
    elif np.issubdtype(images.dtype, np.floating):
        if images.size and not (np.all(np.isfinite(images))
                                and images.min() >= 0.0 and images.max() <= 1.0):
            raise DataError(
                f"float images must lie in [0, 1], got range "
                f"[{np.nanmin(images):.4g}, {np.nanmax(images):.4g}]"
                f"{' with non-finite values' if not np.all(np.isfinite(images)) else ''}")
        images = np.round(images.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        raise DataError(f"images array has dtype {images.dtype}, expected uint8 "
                        "(values in [0, 255]) or float (values in [0, 1])")

    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels array has dtype {labels.dtype}, expected an integer dtype")
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"labels array: label {labels[i]} at index {i} is outside "
                        f"[0, {num_classes})")
    if ids is None:
        ids = np.asarray([f"array/{i}" for i in range(len(images))], dtype=str)
    else:
        ids = np.asarray([i.decode() if isinstance(i, bytes) else str(i) for i in ids],
                         dtype=str)
    return ImageData(images=images, labels=labels, ids=ids, num_classes=num_classes)


def _check_num_classes(num_classes) -> None:
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}")


# --------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------

def class_balanced_indices(labels, *, fraction: Optional[float] = None,
                           per_class: Optional[int] = None, num_classes: int,
                           seed: int = 0, exclude=None) -> np.ndarray:
    """Picks a deterministic, class-balanced random subset of example indices.

    Exactly one of ``fraction`` and ``per_class`` must be given.  For every
    class ``c`` the candidates are the indices with label ``c`` that are not
    in ``exclude``; from them ``per_class`` indices, or
    ``max(1, round(fraction * count_c))`` where ``count_c`` is the number of
    candidates, are drawn at random (reproducibly from ``seed``).

    Args:
        labels: integer labels ``[N]`` in ``[0, num_classes)``.
        fraction: fraction of each class to keep, in (0, 1].
        per_class: number of indices to keep from each class.
        num_classes: number of classes.
        seed: random seed.
        exclude: indices that must never be picked (e.g. a validation split).

    Returns:
        Sorted int64 array of indices into ``labels``.

    Raises:
        ValueError: on bad arguments or when a class has too few candidates.
    """
    if (fraction is None) == (per_class is None):
        raise ValueError("pass exactly one of fraction and per_class")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if per_class is not None and per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(f"label {labels[bad[0]]} at index {bad[0]} is outside "
                         f"[0, {num_classes})")
    eligible = np.ones(len(labels), dtype=bool)
    if exclude is not None:
        eligible[np.asarray(exclude, dtype=np.int64)] = False

    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        candidates = np.flatnonzero((labels == c) & eligible)
        k = per_class if per_class is not None else max(1, int(round(fraction * len(candidates))))
        if k > len(candidates):
            raise DataError(f"class {c} has only {len(candidates)} available examples "
                            f"(after exclusions), {k} requested")
        chosen.append(rng.permutation(candidates)[:k])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def train_val_split(data: ImageData, *, val_size: int = 5000,
                    seed: int = 0) -> Tuple[ImageData, ImageData]:
    """Holds out a class-balanced validation split.

    ``val_size`` must be a multiple of ``data.num_classes``; each class
    contributes ``val_size // num_classes`` examples.  The split is
    deterministic given ``seed``; train and validation are disjoint and
    together cover ``data``, both keeping the original order.

    Returns:
        ``(train, val)``.
    """
    if val_size < 0 or val_size % data.num_classes:
        raise ValueError(f"val_size must be a non-negative multiple of num_classes="
                         f"{data.num_classes}, got {val_size}")
    val_idx = class_balanced_indices(data.labels, per_class=val_size // data.num_classes,
                                     num_classes=data.num_classes, seed=seed)
    train_mask = np.ones(len(data), dtype=bool)
    train_mask[val_idx] = False
    return data.take(np.flatnonzero(train_mask)), data.take(val_idx)


# --------------------------------------------------------------------------
# Writing and tf.data
# --------------------------------------------------------------------------

def write_tfrecord(path, data: ImageData, *, encoding: str = "png") -> None:
    """Writes ``data`` as a TFRecord file of ``image``/``label``/``id`` Examples.

    Images are PNG- (lossless, the default) or JPEG-encoded.  The file is
    written to a temporary name and renamed, so readers never see a partial
    file.  A ``.gz`` suffix selects GZIP compression.
    """
    if encoding not in ("png", "jpeg"):
        raise ValueError(f"encoding must be 'png' or 'jpeg', got {encoding!r}")
    path = os.fspath(path)
    images = np.asarray(data.images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"write_tfrecord needs uint8 images [N, H, W, 3], got "
                        f"{images.dtype} {images.shape}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)

    def encode(image):
        if encoding == "png":
            return tf.io.encode_png(image)
        return tf.io.encode_jpeg(image, quality=95)

    encoded = (tf.data.Dataset.from_tensor_slices(images)
               .map(encode, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator())
    tmp = f"{path}.tmp-{os.getpid()}"
    options = tf.io.TFRecordOptions(compression_type=_compression(path) or "")
    try:
        with tf.io.TFRecordWriter(tmp, options) as writer:
            for image_bytes, label, id_ in zip(encoded, data.labels, data.ids):
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                    "id": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[str(id_).encode("utf-8")])),
                }))
                writer.write(example.SerializeToString())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def to_dataset(data: ImageData, *, batch_size: int, shuffle: bool = False, seed: int = 0,
               drop_remainder: bool = False) -> tf.data.Dataset:
    """Makes a batched, prefetched ``tf.data.Dataset`` of ``(images, labels)``.

    Images are float32 in [0, 1] with shape ``[B, H, W, 3]``; labels int64
    ``[B]``.  With ``shuffle=True`` the order is reshuffled every epoch
    (reproducibly from ``seed``).
    """
    ds = tf.data.Dataset.from_tensor_slices((data.images, data.labels.astype(np.int64)))
    if shuffle:
        ds = ds.shuffle(max(len(data), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
