"""Tests of acl_tf.data.augment: torchvision-style SimCLR/ACL augmentation in TensorFlow."""

import colorsys
import itertools

import numpy as np
import pytest
import tensorflow as tf

from acl_tf.data import augment as aug
from acl_tf.data.augment import make_finetune_dataset, random_crop_with_padding

N = 500  # samples for rate estimates
RATE_TOL = 0.07
# Config whose crop is the whole image (resized to itself), so other ops can be isolated.
IDENTITY = dict(
    crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0
)


def _image(height=32, width=32, seed=0):
    """A colourful, unsaturated float32 image in [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 0.9, size=(height, width, 3)).astype(np.float32)


def _many(fn, n=N, base=0):
    """Runs ``fn(seed)`` for ``n`` seeds ``[base, i]`` in one tf.data pass; returns NumPy."""
    ds = tf.data.Dataset.range(n).map(lambda i: fn(tf.stack([tf.constant(base, tf.int64), i])))
    return tf.nest.map_structure(lambda t: t.numpy(), ds.batch(n).get_single_element())


def _seed(a, b=0):
    return tf.constant([a, b], tf.int64)


def _is_gray(batch):
    return (np.abs(batch[..., 0] - batch[..., 1]).max(axis=(1, 2)) < 1e-6) & (
        np.abs(batch[..., 1] - batch[..., 2]).max(axis=(1, 2)) < 1e-6
    )


# ----------------------------------------------------------------------------- config / inputs


def test_config_defaults():
    cfg = aug.AugmentConfig()
    assert cfg.image_size == 32 and cfg.crop_scale == (0.08, 1.0)
    assert cfg.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert aug.AugmentConfig(crop_scale=[0.1, 1.0]).crop_scale == (0.1, 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(image_size=0),
        dict(image_size=32.0),
        dict(crop_scale=(0.0, 1.0)),
        dict(crop_scale=(0.5, 0.2)),
        dict(crop_scale=(0.1, 1.5)),
        dict(crop_scale=(0.1,)),
        dict(crop_ratio=(4 / 3, 3 / 4)),
        dict(crop_ratio=(-1.0, 1.0)),
        dict(flip_prob=1.5),
        dict(jitter_prob=-0.1),
        dict(grayscale_prob=2.0),
        dict(brightness=-0.1),
        dict(contrast=float("nan")),
        dict(hue=0.6),
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        aug.AugmentConfig(**kwargs)


@pytest.mark.parametrize(
    "image, seed, match",
    [
        (np.zeros((2, 8, 8, 3), np.float32), [1, 2], "rank 3"),
        (np.zeros((8, 8, 1), np.float32), [1, 2], "3 \\(RGB\\) channels"),
        (np.zeros((8, 8, 3), np.uint8), [1, 2], "float32"),
        (np.zeros((8, 8, 3), np.float32), [1, 2, 3], "shape \\[2\\]"),
        (np.zeros((8, 8, 3), np.float32), [1.0, 2.0], "int32 or int64"),
    ],
)
def test_input_validation(image, seed, match):
    with pytest.raises(ValueError, match=match):
        aug.augment(tf.constant(image), tf.constant(seed), aug.AugmentConfig())


# ----------------------------------------------------------------------------- full pipeline


@pytest.mark.parametrize("height, width, size", [(32, 32, 32), (40, 28, 24)])
def test_augment_shape_dtype_range(height, width, size):
    image = tf.constant(_image(height, width))
    cfg = aug.AugmentConfig(image_size=size)
    out = _many(lambda s: aug.augment(image, s, cfg), n=200)
    assert out.shape == (200, size, size, 3)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert len({o.tobytes() for o in out}) == 200  # all views distinct


def test_augment_dynamic_shape_in_graph():
    fn = tf.function(
        lambda x, s: aug.augment(x, s, aug.AugmentConfig(image_size=16)),
        input_signature=[tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([2], tf.int32)],
    )
    out = fn(tf.constant(_image(20, 30)), tf.constant([3, 4], tf.int32))
    assert out.shape == (16, 16, 3)


def test_determinism():
    image = tf.constant(_image())
    cfg = aug.AugmentConfig()
    a = aug.augment(image, _seed(7), cfg).numpy()
    b = aug.augment(image, _seed(7), cfg).numpy()
    c = aug.augment(image, _seed(8), cfg).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # The same seed gives the same views in eager mode and inside tf.data.
    np.testing.assert_array_equal(_many(lambda s: aug.augment(image, s, cfg), n=3, base=7)[0], a)


def test_two_views():
    image = tf.constant(_image())
    v1, v2 = aug.two_views(image, _seed(1), aug.AugmentConfig())
    w1, w2 = aug.two_views(image, _seed(1), aug.AugmentConfig())
    assert v1.shape == v2.shape == (32, 32, 3)
    assert not np.allclose(v1.numpy(), v2.numpy())
    np.testing.assert_array_equal(v1.numpy(), w1.numpy())
    np.testing.assert_array_equal(v2.numpy(), w2.numpy())


def test_identity_config_is_identity():
    image = _image()
    out = aug.augment(tf.constant(image), _seed(0), aug.AugmentConfig(**IDENTITY)).numpy()
    np.testing.assert_allclose(out, image, atol=1e-5)


def test_flip_rate():
    image = _image()
    cfg = aug.AugmentConfig(**{**IDENTITY, "flip_prob": 0.5})
    out = _many(lambda s: aug.augment(tf.constant(image), s, cfg))
    flipped = np.abs(out - image[:, ::-1]).max(axis=(1, 2, 3)) < 1e-5
    same = np.abs(out - image).max(axis=(1, 2, 3)) < 1e-5
    assert np.all(flipped ^ same)
    assert abs(flipped.mean() - 0.5) < RATE_TOL


@pytest.mark.parametrize("jitter_prob", [0.0, 0.8])
def test_grayscale_rate(jitter_prob):
    image = _image()
    cfg = aug.AugmentConfig(**{**IDENTITY, "grayscale_prob": 0.2, "jitter_prob": jitter_prob})
    out = _many(lambda s: aug.augment(tf.constant(image), s, cfg))
    gray = _is_gray(out)
    assert abs(gray.mean() - 0.2) < RATE_TOL
    if jitter_prob == 0.0:
        expected = (image @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        np.testing.assert_allclose(out[gray], np.broadcast_to(expected, out[gray].shape), atol=1e-5)


def test_jitter_rate():
    image = _image()
    cfg = aug.AugmentConfig(**{**IDENTITY, "jitter_prob": 0.8})
    out = _many(lambda s: aug.augment(tf.constant(image), s, cfg))
    changed = np.abs(out - image).max(axis=(1, 2, 3)) > 1e-3
    assert abs(changed.mean() - 0.8) < RATE_TOL


# ----------------------------------------------------------------------------- crop


@pytest.mark.parametrize(
    "height, width, scale, ratio",
    [
        (32, 32, (0.08, 1.0), (3 / 4, 4 / 3)),
        (40, 60, (0.1, 1.0), (3 / 4, 4 / 3)),
        (33, 17, (0.3, 0.6), (0.5, 2.0)),
    ],
)
def test_crop_box_statistics(height, width, scale, ratio):
    boxes = _many(lambda s: tf.stack(aug._crop_box(s, height, width, scale, ratio)))
    i, j, h, w = boxes.T.astype(np.float64)
    # Inside the image, non-empty, offsets spread over the allowed range.
    assert np.all((i >= 0) & (j >= 0) & (h > 0) & (w > 0) & (i + h <= height) & (j + w <= width))
    assert i.max() > 0 and j.max() > 0
    # w, h are rounded from sqrt(area * r), sqrt(area / r) with area/(H*W) in scale and r in ratio.
    area = height * width
    assert np.all((w + 0.5) * (h + 0.5) >= scale[0] * area)
    assert np.all((w - 0.5) * (h - 0.5) <= scale[1] * area)
    assert np.all((w + 0.5) / (h - 0.5) >= ratio[0])
    assert np.all((w - 0.5) / (h + 0.5) <= ratio[1])
    frac = w * h / area
    assert frac.min() < scale[0] + 0.1 * (scale[1] - scale[0])
    assert frac.max() > scale[1] - 0.2 * (scale[1] - scale[0])


def test_crop_box_large_image_area_and_ratio():
    boxes = _many(lambda s: tf.stack(aug._crop_box(s, 400, 400, (0.1, 1.0), (3 / 4, 4 / 3))), n=200)
    _, _, h, w = boxes.T.astype(np.float64)
    frac, r = w * h / 400**2, w / h
    assert np.all((frac >= 0.1 - 0.01) & (frac <= 1.0))
    assert np.all((r >= 3 / 4 - 0.01) & (r <= 4 / 3 + 0.01))


@pytest.mark.parametrize(
    "height, width, expected",
    [
        (4, 100, (0, 47, 4, 5)),  # too wide: h = H, w = round(H * 4/3)
        (100, 4, (47, 0, 5, 4)),  # too tall: w = W, h = round(W / (3/4))
    ],
)
def test_crop_box_fallback_centre_crop(height, width, expected):
    # No try can fit (scale near 1 with an extreme image ratio): centre crop with clamped ratio.
    for k in range(5):
        box = tuple(int(v) for v in aug._crop_box(_seed(k), height, width, (0.9, 1.0), (3 / 4, 4 / 3)))
        assert box == expected


def test_random_resized_crop_matches_box():
    image = _image(24, 40)
    seed = _seed(11)
    i, j, h, w = (int(v) for v in aug._crop_box(seed, 24, 40, (0.1, 1.0), (3 / 4, 4 / 3)))
    expected = tf.image.resize(image[i : i + h, j : j + w], (16, 16), method="bicubic", antialias=True)
    out = aug.random_resized_crop(tf.constant(image), seed, 16, (0.1, 1.0), (3 / 4, 4 / 3))
    np.testing.assert_allclose(out.numpy(), np.clip(expected.numpy(), 0, 1), atol=1e-6)
    assert out.shape == (16, 16, 3)


# ----------------------------------------------------------------------------- colour jitter


def _gray_np(x):
    return x @ np.array([0.299, 0.587, 0.114], np.float32)


def _brightness_np(x, f):
    return np.clip(x * f, 0, 1)


def _contrast_np(x, f):
    return np.clip(f * x + (1 - f) * _gray_np(x).mean(), 0, 1)


def _saturation_np(x, f):
    return np.clip(f * x + (1 - f) * _gray_np(x)[..., None], 0, 1)


def _hue_np(x, delta):
    flat = x.reshape(-1, 3).astype(np.float64)
    out = []
    for r, g, b in flat:
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        out.append(colorsys.hsv_to_rgb((h + delta) % 1.0, s, v))
    return np.asarray(out).reshape(x.shape)


NP_OPS = [_brightness_np, _contrast_np, _saturation_np, _hue_np]


@pytest.mark.parametrize("factor", [0.0, 0.6, 1.0, 1.4, 3.0])
@pytest.mark.parametrize(
    "tf_op, np_op",
    [
        (aug.adjust_brightness, _brightness_np),
        (aug.adjust_contrast, _contrast_np),
        (aug.adjust_saturation, _saturation_np),
    ],
)
def test_jitter_ops_match_numpy(tf_op, np_op, factor):
    x = np.random.default_rng(1).uniform(0, 1, (5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(tf_op(tf.constant(x), factor).numpy(), np_op(x, factor), atol=1e-6)


@pytest.mark.parametrize("delta", [-0.1, 0.05, 0.3, 0.5])
def test_adjust_hue_matches_colorsys(delta):
    x = np.random.default_rng(2).uniform(0, 1, (5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(aug.adjust_hue(tf.constant(x), delta).numpy(), _hue_np(x, delta), atol=1e-5)


def test_color_jitter_factor_ranges_and_random_order():
    factors, orders = _many(lambda s: aug._jitter_params(s, 0.4, 0.4, 0.4, 0.1), n=2000)
    assert np.all((factors[:, :3] >= 0.6) & (factors[:, :3] <= 1.4))
    assert np.all(np.abs(factors[:, 3]) <= 0.1)
    assert factors[:, 3].min() < -0.09 and factors[:, 3].max() > 0.09
    assert np.all(np.sort(orders, axis=1) == np.arange(4))
    counts = {p: 0 for p in itertools.permutations(range(4))}
    for o in orders:
        counts[tuple(o)] += 1
    # All 24 orders occur with roughly equal frequency (expected 2000/24 ~ 83).
    assert min(counts.values()) > 45 and max(counts.values()) < 125


@pytest.mark.parametrize("k", range(4))
def test_color_jitter_matches_reference_in_drawn_order(k):
    x = np.random.default_rng(3).uniform(0, 1, (6, 5, 3)).astype(np.float32)
    seed = _seed(100 + k)
    factors, order = (t.numpy() for t in aug._jitter_params(seed, 0.4, 0.4, 0.4, 0.1))
    expected = x.astype(np.float64)
    for index in order:
        expected = np.clip(NP_OPS[index](expected.astype(np.float32), factors[index]), 0, 1)
    out = aug.color_jitter(tf.constant(x), seed, 0.4, 0.4, 0.4, 0.1).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_color_jitter_zero_strength_is_identity():
    x = _image(8, 8)
    out = aug.color_jitter(tf.constant(x), _seed(5), 0.0, 0.0, 0.0, 0.0).numpy()
    np.testing.assert_array_equal(out, x)


# ----------------------------------------------------------------------------- dataset


def _data(n=20, size=12):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 10


def _first(ds):
    (v1, v2), y = next(iter(ds))
    return v1.numpy(), v2.numpy(), y.numpy()


def test_element_seed():
    a = aug.element_seed(1, 2, 3).numpy()
    assert a.shape == (2,) and a.dtype == np.int64
    np.testing.assert_array_equal(a, aug.element_seed(1, 2, 3).numpy())
    others = [aug.element_seed(*args).numpy() for args in [(0, 2, 3), (1, 1, 3), (1, 2, 4)]]
    assert all(not np.array_equal(a, o) for o in others)


def test_make_pretrain_dataset_spec_and_reproducibility():
    images, labels = _data()
    cfg = aug.AugmentConfig(image_size=8)
    ds = aug.make_pretrain_dataset(images, labels, batch_size=8, config=cfg, seed=3, epoch=1)
    (s1, s2), sy = ds.element_spec
    assert s1 == s2 == tf.TensorSpec([8, 8, 8, 3], tf.float32)
    assert sy == tf.TensorSpec([8], tf.int64)
    batches = list(ds)
    assert len(batches) == 2  # 20 // 8, remainder dropped

    a = _first(ds)
    b = _first(aug.make_pretrain_dataset(images, labels, batch_size=8, config=cfg, seed=3, epoch=1))
    c = _first(aug.make_pretrain_dataset(images, labels, batch_size=8, config=cfg, seed=3, epoch=2))
    d = _first(aug.make_pretrain_dataset(images, labels, batch_size=8, config=cfg, seed=4, epoch=1))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[0], c[0]) and not np.allclose(a[0], d[0])
    assert not np.allclose(a[0], a[1])  # two different views
    assert a[0].min() >= 0.0 and a[0].max() <= 1.0


def test_make_pretrain_dataset_unshuffled_float_input():
    images, labels = _data(n=10)
    cfg = aug.AugmentConfig(image_size=12, **IDENTITY)
    ds = aug.make_pretrain_dataset(
        images.astype(np.float32) / 255.0, labels, batch_size=4, config=cfg, seed=0, shuffle=False,
        drop_remainder=False,
    )
    batches = list(ds)
    assert [int(b[1].shape[0]) for b in batches] == [4, 4, 2]
    v1, v2, y = _first(ds)
    np.testing.assert_array_equal(y, labels[:4])
    np.testing.assert_allclose(v1, images[:4] / 255.0, atol=1e-5)
    np.testing.assert_allclose(v2, images[:4] / 255.0, atol=1e-5)


def test_make_pretrain_dataset_views_follow_labels_when_shuffled():
    # Each image is constant with value index/255: check views still match their labels.
    n = 16
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None] * 10, (n, 8, 8, 3)).copy()
    cfg = aug.AugmentConfig(image_size=8, **IDENTITY)
    ds = aug.make_pretrain_dataset(images, np.arange(n), batch_size=n, config=cfg, seed=9)
    v1, _, y = _first(ds)
    assert sorted(y.tolist()) == list(range(n)) and y.tolist() != list(range(n))
    np.testing.assert_allclose(v1[:, 0, 0, 0], y * 10 / 255.0, atol=1e-5)


@pytest.mark.parametrize(
    "images, labels, kwargs",
    [
        (np.zeros((4, 8, 8), np.uint8), np.zeros(4, int), {}),
        (np.zeros((4, 8, 8, 3), np.int32), np.zeros(4, int), {}),
        (np.full((4, 8, 8, 3), 2.0, np.float32), np.zeros(4, int), {}),
        (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3, int), {}),
        (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, int), dict(batch_size=8)),
        (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, int), dict(batch_size=0)),
        (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, int), dict(epoch=-1)),
    ],
)
def test_make_pretrain_dataset_validation(images, labels, kwargs):
    args = {**dict(batch_size=2, config=aug.AugmentConfig(image_size=8), seed=0), **kwargs}
    with pytest.raises(ValueError):
        aug.make_pretrain_dataset(images, labels, **args)


# ----------------------------------------------------------------------------- fine-tuning data


RNG = np.random.default_rng(0)


def test_random_crop_with_padding_is_a_window_of_the_padded_image():
    image = tf.constant(RNG.uniform(0.1, 1, (8, 8, 3)), tf.float32)
    padded = np.pad(image.numpy(), [(4, 4), (4, 4), (0, 0)])
    offsets = set()
    for s in range(40):
        crop = random_crop_with_padding(image, tf.constant([s, 1], tf.int64)).numpy()
        assert crop.shape == (8, 8, 3)
        matches = [(i, j) for i in range(9) for j in range(9)
                   if np.array_equal(crop, padded[i:i + 8, j:j + 8])]
        assert matches, "the crop is not a window of the zero-padded image"
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets vary with the seed
    np.testing.assert_array_equal(random_crop_with_padding(image, tf.constant([3, 1])),
                                  random_crop_with_padding(image, tf.constant([3, 1])))


def test_finetune_dataset_is_reproducible_per_epoch_and_keeps_pairs():
    images = (RNG.uniform(0, 255, (10, 8, 8, 3))).astype(np.uint8)
    labels = np.arange(10)

    def collect(epoch, augment=True):
        ds = make_finetune_dataset(images, labels, batch_size=4, seed=1, epoch=epoch,
                                   augment=augment)
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
        return np.concatenate(xs), np.concatenate(ys)

    x0, y0 = collect(0)
    x0b, y0b = collect(0)
    x1, y1 = collect(1)
    np.testing.assert_array_equal(x0, x0b)
    np.testing.assert_array_equal(y0, y0b)
    assert sorted(y0) == list(range(10)) and not np.array_equal(y0, y1)
    plain, plain_labels = collect(0, augment=False)
    np.testing.assert_allclose(plain, images[plain_labels] / 255.0, atol=1e-6)
    assert x0.dtype == np.float32 and x0.shape == (10, 8, 8, 3)
    with pytest.raises(ValueError, match="uint8"):
        make_finetune_dataset(images.astype(np.float32), labels, batch_size=4, seed=0)
