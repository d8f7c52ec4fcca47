"""acl_tf.evaluation.corruptions: CIFAR-10-C accuracy per corruption and severity (TFDS mocked) and
the message naming missing data."""

import json

import numpy as np
import pytest
import tensorflow as tf
from eval_helpers import LinearClassifier


def mean_classifier():
    """Predicts round(9 * mean pixel) for 32x32 images: class j for constant images of j/9."""
    d = 32 * 32 * 3
    j = np.arange(10, dtype=np.float32)
    weights = np.tile(j / d, (d, 1)).astype(np.float32)
    biases = (-(j ** 2) / 18).astype(np.float32)
    return LinearClassifier({"adv": weights, "normal": weights}, {"adv": biases, "normal": biases})


def test_cifar10c_per_config_accuracy_with_mocked_tfds(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    import acl_tf.data
    from acl_tf.evaluation.corruptions import (
        CIFAR10C_CORRUPTIONS,
        Cifar10CConfig,
        evaluate_cifar10c,
    )

    # The list of corruptions is TFDS's own: 19 x 5 configs.
    names = {c.name for c in tfds.builder_cls("cifar10_corrupted").BUILDER_CONFIGS}
    assert names == {f"{c}_{s}" for c in CIFAR10C_CORRUPTIONS for s in range(1, 6)}

    configs = ["fog_1", "fog_4", "snow_1", "snow_4"]
    n = 8

    def as_dataset(self, split, **kwargs):
        # Config k: constant images of classes 0..7, the first k + 1 labelled correctly.
        k = configs.index(self.builder_config.name)
        classes = np.arange(n) % 10
        labels = np.where(np.arange(n) <= k, classes, (classes + 1) % 10)
        images = np.stack([np.full([32, 32, 3], round(255 * c / 9), np.uint8) for c in classes])
        return tf.data.Dataset.from_tensor_slices({"image": images,
                                                   "label": labels.astype(np.int64)})

    calls = []
    real_load = acl_tf.data.load

    def spy(source, **kwargs):
        calls.append((source, kwargs))
        return real_load(source, **kwargs)

    monkeypatch.setattr(acl_tf.data, "load", spy)
    config = Cifar10CConfig(data_dir=str(tmp_path), corruptions=("fog", "snow"),
                            severities=(1, 4), limit=n)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        result = evaluate_cifar10c(mean_classifier(), config, batch_size=4)
    expected = {"fog": {"1": 1 / 8, "4": 2 / 8}, "snow": {"1": 3 / 8, "4": 4 / 8}}
    assert result["accuracy"] == expected   # multiples of 1/8: exact in floating point
    assert result["mean"] == pytest.approx(2.5 / 8)
    assert result["mean_by_corruption"] == pytest.approx({"fog": 1.5 / 8, "snow": 3.5 / 8})
    assert result["mean_by_severity"] == pytest.approx({"1": 2 / 8, "4": 3 / 8})
    assert result["num_examples"] == {"fog_1": n, "fog_4": n, "snow_1": n, "snow_4": n}
    assert [c[0] for c in calls] == [f"cifar10_corrupted/{c}" for c in configs]
    assert all(kw["data_dir"] == str(tmp_path) and kw["split"] == "test" and kw["limit"] == n
               and kw["download"] is False for _, kw in calls)
    json.dumps(result)   # the report must be JSON-able

    with pytest.raises(ValueError, match="Unknown CIFAR-10-C corruption"):
        Cifar10CConfig(corruptions=("fogg",))
    with pytest.raises(ValueError, match="severities"):
        Cifar10CConfig(severities=(0,))


def test_cifar10c_missing_data_names_the_config(tmp_path):
    from acl_tf.data import DataError
    from acl_tf.evaluation.corruptions import Cifar10CConfig, evaluate_cifar10c

    config = Cifar10CConfig(data_dir=str(tmp_path), corruptions=("zoom_blur",), severities=(2,))
    with pytest.raises(DataError, match=r"cifar10_corrupted/zoom_blur_2.*cifar10c_data_dir"):
        evaluate_cifar10c(mean_classifier(), config)
