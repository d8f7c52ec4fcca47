"""acl_tf.data.sources: loading (files, globs, TFDS, arrays), errors naming the record,
class-balanced splits, writing TFRecords and tf.data."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import CIFAR10_DIR

from acl_tf import data as D
from acl_tf.data import DataError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "acl_tf" / "data" / "sample" / "cifar10"


def _make_data(n=20, size=32, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return D.ImageData(
        images=rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8),
        labels=(np.arange(n) % num_classes).astype(np.int64),
        ids=np.asarray([f"img/{i}" for i in range(n)]),
        num_classes=num_classes)


def _write_examples(path, features_list):
    """Writes raw tf.train.Examples built from dicts of tf.train.Feature."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for features in features_list:
            example = tf.train.Example(features=tf.train.Features(feature=features))
            writer.write(example.SerializeToString())


def _bytes(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))


@pytest.fixture(scope="module")
def sample_train():
    return D.load(SAMPLE)


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------

def test_load_sample(sample_train):
    data = sample_train
    assert len(data) == 500
    assert data.images.shape == (500, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64 and data.num_classes == 10
    assert data.labels.min() >= 0 and data.labels.max() < 10
    np.testing.assert_array_equal(np.bincount(data.labels, minlength=10), [50] * 10)
    assert all(i.startswith("test/") for i in data.ids)

    test = D.load(str(SAMPLE), split="test")
    assert len(test) == 200
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), [20] * 10)
    assert not set(test.ids) & set(data.ids)


def test_load_sample_prefix_balanced():
    data = D.load(SAMPLE / "train.tfrecord", limit=30)
    np.testing.assert_array_equal(np.bincount(data.labels, minlength=10), [3] * 10)


def test_load_real_cifar_with_limit():
    if CIFAR10_DIR is None:
        pytest.skip("set ACL_TF_TEST_CIFAR10 to a folder of the CIFAR-10 TFRecords")
    path = CIFAR10_DIR / "test.tfrecord"
    data = D.load(str(path), limit=64)
    assert data.images.shape == (64, 32, 32, 3)
    assert data.ids[0].startswith("test/")
    both = D.load(str(CIFAR10_DIR), split="test", limit=10)
    np.testing.assert_array_equal(both.images, data.images[:10])


def test_load_glob_and_comma_list(tmp_path):
    a, b = _make_data(6, seed=1), _make_data(4, seed=2)
    D.write_tfrecord(tmp_path / "part-0.tfrecord", a)
    D.write_tfrecord(tmp_path / "part-1.tfrecord", b)
    data = D.load(str(tmp_path / "part-*.tfrecord"))
    assert len(data) == 10
    np.testing.assert_array_equal(data.images, np.concatenate([a.images, b.images]))
    listed = D.load(f"{tmp_path / 'part-1.tfrecord'},{tmp_path / 'part-0.tfrecord'}")
    np.testing.assert_array_equal(listed.images[:4], b.images)
    limited = D.load(str(tmp_path / "part-*.tfrecord"), limit=8)
    np.testing.assert_array_equal(limited.labels, data.labels[:8])


def test_load_directory_layouts(tmp_path):
    data = _make_data(5)
    D.write_tfrecord(tmp_path / "flat" / "val.tfrecord", data)
    D.write_tfrecord(tmp_path / "nested" / "val" / "shard-00000", data)
    for layout in ("flat", "nested"):
        loaded = D.load(tmp_path / layout, split="val")
        np.testing.assert_array_equal(loaded.images, data.images)
    with pytest.raises(DataError, match="no TFRecord files for split 'train'"):
        D.load(tmp_path / "flat")


def test_load_gzip_import_example_gen_layout(tmp_path):
    split_dir = tmp_path / "examples" / "Split-eval"
    split_dir.mkdir(parents=True)
    plain = tmp_path / "plain.tfrecord"
    shutil.copy(SAMPLE / "test.tfrecord", plain)
    with open(plain, "rb") as src, gzip.open(split_dir / "data_tfrecord-00000-of-00001.gz",
                                            "wb") as dst:
        shutil.copyfileobj(src, dst)
    data = D.load(str(tmp_path / "examples"), split="eval")
    ref = D.load(plain)
    assert len(data) == 200
    np.testing.assert_array_equal(data.images, ref.images)
    np.testing.assert_array_equal(data.ids, ref.ids)


def test_load_arrays_uint8_and_float():
    ref = _make_data(8)
    data = D.load((ref.images, ref.labels))
    np.testing.assert_array_equal(data.images, ref.images)
    assert data.ids[0] == "array/0" and data.num_classes == 10
    data = D.load((ref.images.astype(np.float32) / 255.0, ref.labels, ref.ids), limit=5)
    assert data.images.dtype == np.uint8 and len(data) == 5
    np.testing.assert_array_equal(data.images, ref.images[:5])
    np.testing.assert_array_equal(data.ids, ref.ids[:5])
    np.testing.assert_allclose(data.to_float(), ref.images[:5] / 255.0, atol=1e-6)


@pytest.mark.parametrize("images, labels, match", [
    (np.full((2, 32, 32, 3), 1.5, np.float32), [0, 1], r"float images must lie in \[0, 1\]"),
    (np.full((2, 32, 32, 3), -0.1, np.float32), [0, 1], r"float images must lie in \[0, 1\]"),
    (np.zeros((2, 32, 32, 3), np.int32), [0, 1], "dtype int32"),
    (np.zeros((2, 32, 32), np.uint8), [0, 1], r"shape \(2, 32, 32\)"),
    (np.zeros((2, 32, 32, 3), np.uint8), [0, 1, 2], "mismatched lengths"),
    (np.zeros((2, 32, 32, 3), np.uint8), [0.0, 1.0], "labels array has dtype float"),
    (np.zeros((2, 32, 32, 3), np.uint8), [0, 10], "label 10 at index 1"),
])
def test_load_arrays_errors(images, labels, match):
    with pytest.raises(DataError, match=match):
        D.load((images, np.asarray(labels)))


def test_load_tfds_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        data = D.load("cifar10", split="train")
    assert data.images.shape == (12, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64 and data.num_classes == 10
    assert data.labels.min() >= 0 and data.labels.max() < 10
    assert len(data.ids) == 12 and all(isinstance(i, str) for i in data.ids)
    x = data.to_float()
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0


def test_load_unknown_tfds_name():
    with pytest.raises(DataError, match="neither an existing file"):
        D.load("no_such_dataset_xyz")


# --------------------------------------------------------------------------
# Errors in files
# --------------------------------------------------------------------------

def test_missing_file_and_empty_glob(tmp_path):
    with pytest.raises(DataError, match="no such file or directory: .*missing.tfrecord"):
        D.load(str(tmp_path / "missing.tfrecord"))
    with pytest.raises(DataError, match="no files match"):
        D.load(str(tmp_path / "nothing-*.tfrecord"))


def test_corrupt_files(tmp_path):
    garbage = tmp_path / "garbage.tfrecord"
    garbage.write_bytes(b"this is definitely not a tfrecord file" * 10)
    with pytest.raises(DataError, match="garbage.tfrecord: corrupt or truncated"):
        D.load(garbage)
    raw = (SAMPLE / "test.tfrecord").read_bytes()
    truncated = tmp_path / "truncated.tfrecord"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated.tfrecord: corrupt or truncated"):
        D.load(truncated)
    # A gzip suffix on an uncompressed file is also reported, naming the file.
    fake_gz = tmp_path / "fake.tfrecord.gz"
    fake_gz.write_bytes(raw[:2000])
    with pytest.raises(DataError, match="fake.tfrecord.gz"):
        D.load(fake_gz)


def test_wrong_image_size(tmp_path):
    path = tmp_path / "small.tfrecord"
    D.write_tfrecord(path, _make_data(3, size=16))
    with pytest.raises(DataError, match=r"record 0 \(id 'img/0'\) has image shape "
                                        r"\(16, 16, 3\), expected \(32, 32, 3\)"):
        D.load(path)
    assert len(D.load(path, image_size=16)) == 3


def test_label_out_of_range(tmp_path):
    data = _make_data(12)
    data.labels[7] = 12
    path = tmp_path / "labels.tfrecord"
    D.write_tfrecord(path, data)
    with pytest.raises(DataError, match=r"labels.tfrecord: record 7 .* label 12 outside \[0, 10\)"):
        D.load(path)
    assert D.load(path, num_classes=13).num_classes == 13


def test_missing_features(tmp_path):
    png = tf.io.encode_png(np.zeros((32, 32, 3), np.uint8)).numpy()
    no_label = tmp_path / "no_label.tfrecord"
    _write_examples(no_label, [{"image": _bytes(png), "label": _int(1)},
                               {"image": _bytes(png), "id": _bytes(b"x")}])
    with pytest.raises(DataError, match=r"no_label.tfrecord: record 1 \(id 'x'\) is missing "
                                        "the 'label' feature"):
        D.load(no_label)
    no_image = tmp_path / "no_image.tfrecord"
    _write_examples(no_image, [{"label": _int(1)}])
    with pytest.raises(DataError, match="record 0 .* missing the 'image' feature"):
        D.load(no_image)
    bad_bytes = tmp_path / "bad_bytes.tfrecord"
    _write_examples(bad_bytes, [{"image": _bytes(b"not an image"), "label": _int(1)}])
    with pytest.raises(DataError, match="bad_bytes.tfrecord: unreadable record"):
        D.load(bad_bytes)


def test_ids_default_when_missing(tmp_path):
    png = tf.io.encode_png(np.zeros((32, 32, 3), np.uint8)).numpy()
    path = tmp_path / "noid.tfrecord"
    _write_examples(path, [{"image": _bytes(png), "label": _int(3)}] * 2)
    data = D.load(path)
    assert list(data.ids) == ["noid.tfrecord/0", "noid.tfrecord/1"]


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------

def _labels(per_class=100, num_classes=10, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def test_class_balanced_indices_per_class_and_fraction():
    labels = _labels()
    idx = D.class_balanced_indices(labels, per_class=7, num_classes=10, seed=3)
    assert len(idx) == 70 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=10), [7] * 10)
    idx = D.class_balanced_indices(labels, fraction=0.05, num_classes=10)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=10), [5] * 10)
    idx = D.class_balanced_indices(labels, fraction=0.001, num_classes=10)  # at least 1
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=10), [1] * 10)


def test_class_balanced_indices_determinism():
    labels = _labels()
    a = D.class_balanced_indices(labels, per_class=10, num_classes=10, seed=1)
    b = D.class_balanced_indices(labels, per_class=10, num_classes=10, seed=1)
    c = D.class_balanced_indices(labels, per_class=10, num_classes=10, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_class_balanced_indices_exclusion_and_errors():
    labels = _labels(per_class=20)
    val = D.class_balanced_indices(labels, per_class=15, num_classes=10)
    rest = D.class_balanced_indices(labels, per_class=5, num_classes=10, exclude=val)
    assert not set(val) & set(rest)
    assert len(set(val) | set(rest)) == 200
    with pytest.raises(ValueError, match="class 0 has only 5 available"):
        D.class_balanced_indices(labels, per_class=6, num_classes=10, exclude=val)
    with pytest.raises(ValueError, match="exactly one of"):
        D.class_balanced_indices(labels, num_classes=10)
    with pytest.raises(ValueError, match="fraction"):
        D.class_balanced_indices(labels, fraction=1.5, num_classes=10)
    with pytest.raises(ValueError, match="class 9 has only 0"):
        D.class_balanced_indices(labels[labels < 9], fraction=0.5, num_classes=10)


def test_train_val_split(sample_train):
    train, val = D.train_val_split(sample_train, val_size=100, seed=0)
    assert len(train) == 400 and len(val) == 100
    np.testing.assert_array_equal(np.bincount(val.labels, minlength=10), [10] * 10)
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), [40] * 10)
    assert not set(train.ids) & set(val.ids)
    train2, val2 = D.train_val_split(sample_train, val_size=100, seed=0)
    np.testing.assert_array_equal(val.ids, val2.ids)
    np.testing.assert_array_equal(train.images, train2.images)
    _, val3 = D.train_val_split(sample_train, val_size=100, seed=1)
    assert set(val3.ids) != set(val.ids)
    with pytest.raises(ValueError, match="multiple of num_classes"):
        D.train_val_split(sample_train, val_size=105)


# --------------------------------------------------------------------------
# Writing and tf.data
# --------------------------------------------------------------------------

def test_write_tfrecord_png_round_trip(tmp_path):
    data = _make_data(15, seed=5)
    path = tmp_path / "sub" / "rt.tfrecord"
    D.write_tfrecord(path, data)
    assert [p.name for p in path.parent.iterdir()] == ["rt.tfrecord"]  # no temp file left
    loaded = D.load(path)
    np.testing.assert_array_equal(loaded.images, data.images)
    np.testing.assert_array_equal(loaded.labels, data.labels)
    np.testing.assert_array_equal(loaded.ids, data.ids)
    gz = tmp_path / "rt.tfrecord.gz"
    D.write_tfrecord(gz, data)
    np.testing.assert_array_equal(D.load(gz).images, data.images)
    jpeg = tmp_path / "rt_jpeg.tfrecord"
    D.write_tfrecord(jpeg, data, encoding="jpeg")
    assert D.load(jpeg).images.shape == data.images.shape


def test_take_and_to_float():
    data = _make_data(10)
    sub = data.take([3, 1])
    assert len(sub) == 2 and list(sub.ids) == ["img/3", "img/1"]
    x = data.to_float()
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0


def test_to_dataset(sample_train):
    data = sample_train.take(np.arange(50))
    ds = D.to_dataset(data, batch_size=16)
    batches = list(ds.as_numpy_iterator())
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    x, y = batches[0]
    assert x.dtype == np.float32 and x.shape == (16, 32, 32, 3) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_allclose(np.concatenate([b[0] for b in batches]), data.to_float())

    ds = D.to_dataset(data, batch_size=16, shuffle=True, seed=1, drop_remainder=True)
    assert ds.element_spec[0].shape.as_list() == [16, 32, 32, 3]
    labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    assert len(labels) == 48 and not np.array_equal(labels, data.labels[:48])


def test_load_split_takes_the_settings_of_a_data_config():
    from acl_tf.configs import DataConfig

    config = DataConfig(source=str(SAMPLE), train_split="train", test_split="test",
                        image_size=32, num_classes=10, limit=7)
    train = D.load_split(config, config.train_split, 12)      # the limit is the caller's
    direct = D.load(str(SAMPLE), "train", limit=12)
    assert len(train) == 12 and np.array_equal(train.images, direct.images)
    assert np.array_equal(train.ids, direct.ids) and train.num_classes == 10
    test = D.load_split(config, config.test_split)
    assert np.array_equal(test.ids, D.load(str(SAMPLE), "test").ids)
    with pytest.raises(DataError, match="limit must be >= 0"):
        D.load_split(config, "train", -1)
    wrong_size = DataConfig(source=str(SAMPLE), image_size=16)
    with pytest.raises(DataError):
        D.load_split(wrong_size, "test", 2)
