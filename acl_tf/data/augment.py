"""SimCLR / ACL data augmentation with torchvision semantics, written in TensorFlow.

The pretraining pipeline of Adversarial Contrastive Learning (ACL) draws two
independently augmented views of each image with the torchvision pipeline::

    RandomResizedCrop(size, scale, ratio, interpolation=BICUBIC)
    RandomHorizontalFlip(p=0.5)
    RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
    RandomGrayscale(p=0.2)

This module re-implements that pipeline with plain ``tf`` / ``tf.image`` ops so
that it runs inside ``tf.data.Dataset.map``. keras-cv is discontinued and its
augmentations differ from torchvision's, and Keras' own ``RandomColorJitter``
differs too (no application probability, a fixed op order, additive
brightness), so neither is used.

All randomness comes from stateless random ops (``tf.random.stateless_*`` with
the Philox algorithm pinned, so CPU and GPU agree). Every random function takes
a ``seed`` tensor of shape ``[2]`` (int32 or int64); the same seed always
gives the same output, which makes a resumed run see exactly the same views.

Semantics follow torchvision's tensor implementation:

* ``RandomResizedCrop``: torchvision's ``get_params`` (10 tries, first valid
  box wins, centre-crop fallback with the aspect ratio clamped), evaluated in a
  vectorised way; the crop is resized with bicubic interpolation and clipped to
  ``[0, 1]``.
* ``ColorJitter``: brightness ``clip(img * b)``; contrast blends with the mean
  of the grayscale image; saturation blends with the grayscale image; hue
  shifts the HSV hue by a fraction of the circle. The four ops are applied in
  a random order drawn per image.
* Grayscale is ``0.299 R + 0.587 G + 0.114 B`` (ITU-R 601-2, as PIL uses for
  the PIL images the ACL code feeds torchvision).

Known, accepted differences from the PyTorch reference: images stay float32
throughout (PIL would quantise to uint8 after every op), and TensorFlow's
bicubic kernel (Keys, a = -0.5, as in PIL) is used rather than PyTorch's
tensor kernel (a = -0.75).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from acl_tf.configs import AugmentConfig, Interpolation, check_choice
from acl_tf.configs import check_crop_args as _check_crop_args
from acl_tf.configs import check_jitter_args as _check_jitter_args

__all__ = [
    "AugmentConfig",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "augment",
    "color_jitter",
    "element_seed",
    "finetune_augment",
    "horizontal_flip",
    "make_finetune_dataset",
    "make_pretrain_dataset",
    "random_crop_with_padding",
    "random_grayscale",
    "random_resized_crop",
    "rgb_to_grayscale",
    "two_views",
]

# Pin the stateless RNG algorithm so results do not depend on the device.
_ALG = "philox"
# Number of tries of torchvision's RandomResizedCrop.get_params.
_CROP_TRIES = 10
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


# --------------------------------------------------------------------------- #
# Input validation (the settings are checked by acl_tf.configs.AugmentConfig)
# --------------------------------------------------------------------------- #


def _check_image(image: tf.Tensor) -> tf.Tensor:
    """Checks statically that ``image`` is a float32 ``[H, W, 3]`` tensor."""
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.float32:
        raise ValueError(
            f"image must be float32 with values in [0, 1], got dtype {image.dtype.name}; "
            "convert uint8 images with tf.image.convert_image_dtype first"
        )
    if image.shape.rank is not None and image.shape.rank != 3:
        raise ValueError(
            f"image must have rank 3 [height, width, 3] (a single image), got shape {image.shape}"
        )
    if image.shape.rank == 3 and image.shape[-1] is not None and image.shape[-1] != 3:
        raise ValueError(f"image must have 3 (RGB) channels, got shape {image.shape}")
    return image


def _check_seed(seed: tf.Tensor) -> tf.Tensor:
    """Checks statically that ``seed`` is an int32/int64 tensor of shape ``[2]``."""
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"seed must be int32 or int64, got dtype {seed.dtype.name}")
    if seed.shape.rank is not None and not seed.shape.is_compatible_with([2]):
        raise ValueError(f"seed must have shape [2], got shape {seed.shape}")
    return seed


def _split(seed: tf.Tensor, num: int) -> tf.Tensor:
    """Derives ``num`` independent seeds (rows of a ``[num, 2]`` tensor)."""
    return tf.random.experimental.stateless_split(seed, num=num, alg=_ALG)


def _uniform(shape, seed, minval=0.0, maxval=1.0, dtype=tf.float32) -> tf.Tensor:
    """Stateless uniform samples in ``[minval, maxval)`` (Philox)."""
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval, dtype=dtype, alg=_ALG)


# --------------------------------------------------------------------------- #
# RandomResizedCrop
# --------------------------------------------------------------------------- #


def _crop_box(seed, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Samples a crop box like torchvision's ``RandomResizedCrop.get_params``.

    All 10 tries are sampled at once and the first valid one is taken; if none
    is valid the centre crop with the aspect ratio clamped to ``ratio`` is used.

    Args:
      seed: int32/int64 tensor of shape ``[2]``.
      height, width: image size (Python ints or int scalar tensors).
      scale: ``(low, high)`` range of the crop area fraction.
      ratio: ``(low, high)`` range of the aspect ratio (width / height).

    Returns:
      ``(offset_h, offset_w, crop_h, crop_w)``, int32 scalar tensors.
    """
    seed = _check_seed(seed)
    seeds = _split(seed, 4)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    h_f = tf.cast(height, tf.float64)
    w_f = tf.cast(width, tf.float64)
    area = h_f * w_f

    target_area = area * _uniform([_CROP_TRIES], seeds[0], scale[0], scale[1], tf.float64)
    log_ratio = _uniform([_CROP_TRIES], seeds[1], math.log(ratio[0]), math.log(ratio[1]), tf.float64)
    aspect = tf.exp(log_ratio)
    # tf.round rounds half to even, like Python's round().
    crop_w = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    crop_h = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    valid = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)  # first True
    found = tf.reduce_any(valid)

    # Fallback: centre crop, aspect ratio clamped to the allowed range.
    in_ratio = w_f / h_f
    too_tall = in_ratio < ratio[0]
    too_wide = in_ratio > ratio[1]
    fb_w = tf.where(too_wide, tf.cast(tf.round(h_f * ratio[1]), tf.int32), width)
    fb_h = tf.where(too_tall, tf.cast(tf.round(w_f / ratio[0]), tf.int32), height)

    out_h = tf.where(found, crop_h[first], fb_h)
    out_w = tf.where(found, crop_w[first], fb_w)
    rand_i = _uniform([], seeds[2], 0, height - out_h + 1, tf.int32)  # in [0, H - h]
    rand_j = _uniform([], seeds[3], 0, width - out_w + 1, tf.int32)  # in [0, W - w]
    offset_h = tf.where(found, rand_i, (height - out_h) // 2)
    offset_w = tf.where(found, rand_j, (width - out_w) // 2)
    return offset_h, offset_w, out_h, out_w


def random_resized_crop(image, seed, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        interpolation="bicubic"):
    """torchvision ``RandomResizedCrop(size, scale, ratio, BICUBIC or BILINEAR)`` for one image.

    Args:
      image: float32 ``[H, W, 3]`` image in ``[0, 1]``.
      seed: int32/int64 tensor of shape ``[2]``.
      size: side of the square output.
      scale: range of the crop area as a fraction of the image area.
      ratio: range of the crop aspect ratio (width / height).
      interpolation: ``bicubic`` or ``bilinear`` (antialiased when shrinking, as PIL).

    Returns:
      float32 ``[size, size, 3]`` image, clipped to ``[0, 1]``.
    """
    image = _check_image(image)
    _check_crop_args(size, scale, ratio)
    interpolation = check_choice(Interpolation, interpolation, "interpolation")
    shape = tf.shape(image)
    offset_h, offset_w, crop_h, crop_w = _crop_box(seed, shape[0], shape[1], scale, ratio)
    crop = tf.slice(image, tf.stack([offset_h, offset_w, 0]), tf.stack([crop_h, crop_w, 3]))
    out = tf.image.resize(crop, (size, size), method=interpolation, antialias=True)
    out = tf.clip_by_value(out, 0.0, 1.0)
    return tf.ensure_shape(out, [size, size, 3])


# --------------------------------------------------------------------------- #
# Colour ops (fixed factors)
# --------------------------------------------------------------------------- #


def rgb_to_grayscale(image):
    """Luma ``0.299 R + 0.587 G + 0.114 B`` of an ``[..., 3]`` image, shape ``[..., 1]``."""
    weights = tf.constant(_GRAY_WEIGHTS, dtype=image.dtype)
    return tf.reduce_sum(image * weights, axis=-1, keepdims=True)


def _blend(image, other, factor):
    """``clip(factor * image + (1 - factor) * other, 0, 1)`` (torchvision ``_blend``)."""
    factor = tf.cast(factor, image.dtype)
    return tf.clip_by_value(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def adjust_brightness(image, factor):
    """torchvision ``adjust_brightness``: ``clip(image * factor, 0, 1)``."""
    return _blend(image, tf.zeros_like(image), factor)


def adjust_contrast(image, factor):
    """torchvision ``adjust_contrast``: blend with the mean of the grayscale image."""
    mean = tf.reduce_mean(rgb_to_grayscale(image))
    return _blend(image, mean, factor)


def adjust_saturation(image, factor):
    """torchvision ``adjust_saturation``: blend with the grayscale image."""
    return _blend(image, rgb_to_grayscale(image), factor)


def adjust_hue(image, delta):
    """torchvision ``adjust_hue``: rotate the HSV hue by ``delta`` (fraction of the circle)."""
    return tf.clip_by_value(tf.image.adjust_hue(image, delta), 0.0, 1.0)


# --------------------------------------------------------------------------- #
# Random ops
# --------------------------------------------------------------------------- #


def _jitter_params(seed, brightness, contrast, saturation, hue):
    """Samples torchvision ``ColorJitter.get_params``.

    Returns:
      ``(factors, order)``: float32 ``[4]`` factors (brightness, contrast,
      saturation, hue shift) and an int32 ``[4]`` random permutation of
      ``0..3`` giving the order in which the ops (same indices) are applied.
    """
    seeds = _split(seed, 2)
    lows = tf.constant(
        [max(0.0, 1.0 - brightness), max(0.0, 1.0 - contrast), max(0.0, 1.0 - saturation), -hue]
    )
    highs = tf.constant([1.0 + brightness, 1.0 + contrast, 1.0 + saturation, hue])
    factors = lows + (highs - lows) * _uniform([4], seeds[0])
    order = tf.argsort(_uniform([4], seeds[1]))
    return factors, order


def color_jitter(image, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1):
    """torchvision ``ColorJitter`` (always applied) with a random op order.

    Factors: brightness, contrast and saturation ``~ U[max(0, 1 - x), 1 + x]``,
    hue shift ``~ U[-hue, hue]``. The four ops are applied in the order of a
    random permutation drawn per call; an op whose strength is 0 is skipped,
    as in torchvision.

    Args:
      image: float32 ``[H, W, 3]`` image in ``[0, 1]``.
      seed: int32/int64 tensor of shape ``[2]``.
      brightness, contrast, saturation: jitter strengths (>= 0).
      hue: hue jitter strength in ``[0, 0.5]``.

    Returns:
      The jittered float32 image, same shape, in ``[0, 1]``.
    """
    image = _check_image(image)
    seed = _check_seed(seed)
    _check_jitter_args(brightness, contrast, saturation, hue)
    factors, order = _jitter_params(seed, brightness, contrast, saturation, hue)

    strengths = (brightness, contrast, saturation, hue)
    op_fns = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)

    def make_branch(index, img):
        if strengths[index] > 0:
            return lambda: op_fns[index](img, factors[index])
        return lambda: img

    # Round k applies op order[k]; tf.switch_case runs only the selected branch.
    for k in range(4):
        image = tf.switch_case(order[k], [make_branch(index, image) for index in range(4)])
    return image


def horizontal_flip(image, seed, prob=0.5):
    """torchvision ``RandomHorizontalFlip(p=prob)`` for one ``[H, W, C]`` image."""
    image = _check_image(image)
    flip = _uniform([], _check_seed(seed)) < prob
    return tf.where(flip, tf.reverse(image, axis=[1]), image)


def random_grayscale(image, seed, prob=0.2):
    """torchvision ``RandomGrayscale(p=prob)``: 3 identical luma channels with probability ``prob``."""
    image = _check_image(image)
    gray = _uniform([], _check_seed(seed)) < prob
    return tf.where(gray, tf.tile(rgb_to_grayscale(image), [1, 1, 3]), image)


def augment(image, seed, config: AugmentConfig = AugmentConfig()):
    """One SimCLR/ACL view: crop+resize, flip, jitter (with prob.), grayscale (with prob.).

    Args:
      image: float32 ``[H, W, 3]`` image in ``[0, 1]``.
      seed: int32/int64 tensor of shape ``[2]``.
      config: augmentation settings.

    Returns:
      float32 ``[config.image_size, config.image_size, 3]`` image in ``[0, 1]``.
    """
    image = _check_image(image)
    seeds = _split(_check_seed(seed), 5)
    image = random_resized_crop(image, seeds[0], config.image_size, config.crop_scale,
                                config.crop_ratio, config.interpolation)
    image = horizontal_flip(image, seeds[1], config.flip_prob)
    apply_jitter = _uniform([], seeds[2]) < config.jitter_prob
    image = tf.cond(
        apply_jitter,
        lambda: color_jitter(
            image, seeds[3], config.brightness, config.contrast, config.saturation, config.hue
        ),
        lambda: image,
    )
    image = random_grayscale(image, seeds[4], config.grayscale_prob)
    return tf.ensure_shape(image, [config.image_size, config.image_size, 3])


def two_views(image, seed, config: AugmentConfig = AugmentConfig()):
    """Two independently augmented views of one image (seeds split from ``seed``)."""
    seeds = _split(_check_seed(seed), 2)
    return augment(image, seeds[0], config), augment(image, seeds[1], config)


# --------------------------------------------------------------------------- #
# tf.data pipeline
# --------------------------------------------------------------------------- #


def element_seed(seed, epoch, index):
    """Stateless seed (int64 ``[2]``) of one dataset element.

    Derived only from the run ``seed``, the ``epoch`` and the element's
    ``index`` in the source array, so the views of an element in a given epoch
    are the same however the pipeline is resumed or parallelised.
    """
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    per_epoch = tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64), alg=_ALG)
    return tf.random.experimental.stateless_fold_in(per_epoch, tf.cast(index, tf.int64), alg=_ALG)


def _epoch_permutation(num: int, seed: int, epoch: int) -> np.ndarray:
    """Deterministic full shuffle of ``range(num)`` for ``(seed, epoch)``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch]))
    return rng.permutation(num)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _epoch_order(images, labels, shuffle: bool, seed, epoch):
    """``(images, labels, indices)`` in the epoch's order: the source order, or with ``shuffle``
    the permutation of ``(seed, epoch)`` (checked: non-negative ints)."""
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    indices = np.arange(images.shape[0], dtype=np.int64)
    if shuffle:
        indices = _epoch_permutation(images.shape[0], int(seed), int(epoch))
        images, labels = images[indices], labels[indices]
    return images, labels, indices


def make_pretrain_dataset(
    images,
    labels,
    *,
    batch_size: int,
    config: AugmentConfig = AugmentConfig(),
    seed: int,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    with_original: bool = False,
) -> tf.data.Dataset:
    """Dataset of one pretraining epoch yielding ``((view1, view2), label)`` batches
    (``((view1, view2, original), label)`` with ``with_original``: AIR's regularisers compare
    the views with the un-augmented image).

    The shuffle order depends only on ``(seed, epoch)`` (a full NumPy
    permutation, independent of TensorFlow's global seed), and the views of
    each element only on ``(seed, epoch, index)`` via :func:`element_seed`, so
    rebuilding the dataset for the same epoch reproduces it exactly.

    Args:
      images: ``[N, H, W, 3]`` uint8 array, or float array with values in
        ``[0, 1]``.
      labels: ``[N]`` integer labels (yielded as int64).
      batch_size: examples per batch.
      config: augmentation settings.
      seed: non-negative int, the run seed.
      epoch: non-negative int, the epoch to build.
      shuffle: shuffle the examples (per ``(seed, epoch)``).
      drop_remainder: drop the last incomplete batch.
      with_original: also yield the image itself (float32 in [0, 1], its own size).

    Returns:
      A prefetched ``tf.data.Dataset`` with element spec
      ``((float32[B, S, S, 3], float32[B, S, S, 3]), int64[B])`` (a third
      ``float32[B, H, W, 3]`` in the tuple with ``with_original``).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape [N, H, W, 3], got {images.shape}")
    if images.dtype == np.uint8:
        pass
    elif np.issubdtype(images.dtype, np.floating):
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise ValueError("float images must have values in [0, 1]")
        images = images.astype(np.float32, copy=False)
    else:
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"labels must have shape [N] with N = {images.shape[0]} images, got {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    _check_batch_size(batch_size)
    if drop_remainder and images.shape[0] < batch_size:
        raise ValueError(
            f"{images.shape[0]} images < batch_size {batch_size} with drop_remainder=True gives no batches"
        )
    images, labels, indices = _epoch_order(images, labels, shuffle, seed, epoch)
    labels = labels.astype(np.int64)

    def _map(image, label, index):
        image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]; float32 unchanged
        views = two_views(image, element_seed(seed, epoch, index), config)
        return (*views, image) if with_original else views, label

    dataset = tf.data.Dataset.from_tensor_slices((images, labels, indices))
    dataset = dataset.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- #
# Supervised fine-tuning: RandomCrop(padding=4) + RandomHorizontalFlip
# --------------------------------------------------------------------------- #


def random_crop_with_padding(image, seed, padding: int = 4):
    """torchvision ``RandomCrop(size, padding=padding)`` (zero padding) for one ``[H, W, C]`` image.

    The image is zero-padded by ``padding`` pixels on every side and an ``H x W`` window is cut at
    offsets drawn uniformly from ``{0, ..., 2 * padding}`` in each direction.
    """
    image = _check_image(image)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.stateless_uniform([2], _check_seed(seed), 0, 2 * padding + 1,
                                          dtype=tf.int32, alg=_ALG)
    crop = tf.slice(padded, [offsets[0], offsets[1], 0], shape)
    crop.set_shape(image.shape)
    return crop


def finetune_augment(image, seed, padding: int = 4, flip_prob: float = 0.5):
    """The TRADES / ACL fine-tuning augmentation: padded random crop, then horizontal flip."""
    seeds = _split(_check_seed(seed), 2)
    image = random_crop_with_padding(image, seeds[0], padding)
    return horizontal_flip(image, seeds[1], flip_prob)


def make_finetune_dataset(images, labels, *, batch_size: int, seed: int, epoch: int = 0,
                          augment: bool = True, shuffle: bool = True,
                          drop_remainder: bool = False) -> tf.data.Dataset:
    """Dataset of one fine-tuning epoch yielding ``(images, labels)`` batches.

    As :func:`make_pretrain_dataset`, the order depends only on ``(seed, epoch)`` and each
    element's augmentation only on ``(seed, epoch, index)``, so a resumed run sees the same data.

    Args:
      images: ``[N, H, W, 3]`` uint8 array.
      labels: ``[N]`` integer labels (yielded as int64).
      batch_size: examples per batch.
      seed, epoch: non-negative ints.
      augment: apply :func:`finetune_augment` (otherwise the images are only scaled to [0, 1]).
      shuffle: shuffle the examples (per ``(seed, epoch)``).
      drop_remainder: drop the last incomplete batch.

    Returns:
      A prefetched dataset with element spec ``(float32[B, H, W, 3], int64[B])``.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape [{images.shape[0]}], got "
                         f"{labels.dtype} {labels.shape}")
    _check_batch_size(batch_size)
    images, labels, indices = _epoch_order(images, labels, shuffle, seed, epoch)

    def _map(image, label, index):
        image = tf.image.convert_image_dtype(image, tf.float32)
        if augment:
            image = finetune_augment(image, element_seed(seed, epoch, index))
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64), indices))
    dataset = dataset.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
