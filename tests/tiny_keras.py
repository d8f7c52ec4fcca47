"""A tiny compiled Keras model and its per-epoch data, for checkpoint and epoch-loop tests."""

import os

import keras
import numpy as np
import tensorflow as tf

STEPS = 4          # batches per epoch
BATCH = 8


class Tiny(keras.Model):
    """Dense -> BN -> Dense: trainable weights, BN statistics and momentum slots to checkpoint."""

    def __init__(self, units=4, head_name="head", **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(units, name="hidden")
        self.norm = keras.layers.BatchNormalization(name="norm")
        self.head = keras.layers.Dense(1, name=head_name)

    def call(self, x, training=False):
        return self.head(self.norm(self.hidden(x), training=training))


def tiny_model(units=4, seed=0, head_name="head") -> Tiny:
    """A built, compiled :class:`Tiny` (SGD with momentum); the same ``seed``, the same weights."""
    keras.utils.set_random_seed(seed)
    model = Tiny(units, head_name=head_name)
    model(np.zeros((2, 3), np.float32))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    return model


def make_dataset(epoch: int) -> tf.data.Dataset:
    """Epoch ``epoch``'s batches: a function of the epoch index only."""
    rng = np.random.default_rng(epoch)
    x = rng.normal(size=(STEPS * BATCH, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


def weights_of(model):
    return [v.numpy().copy() for v in model.weights]


def write_legacy_run(model, model_dir, epochs: int, keep: int = 3):
    """A run directory exactly as acl-tf wrote it before the run-directory contract (d4476f6,
    acl_tf/training/loop.py): flat lists matched by position, tf.train.CheckpointManager,
    history.json appended before every save."""
    import json
    from pathlib import Path

    model_dir = Path(model_dir)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    with model.distribute_strategy.scope():
        model.optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(weights=list(model.weights),
                                     optimizer_variables=list(model.optimizer.variables),
                                     epoch=epoch_var)
    manager = tf.train.CheckpointManager(checkpoint, str(model_dir / "checkpoints"),
                                         max_to_keep=keep)
    history = []
    for epoch in range(epochs):
        logs = model.fit(make_dataset(epoch), initial_epoch=epoch, epochs=epoch + 1,
                         steps_per_epoch=STEPS, verbose=0).history
        history.append({"epoch": epoch + 1, "loss": float(logs["loss"][-1])})
        (model_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")
        epoch_var.assign(epoch + 1)
        manager.save(checkpoint_number=epoch + 1)
    return history


def truncate(path, keep_fraction=0.5):
    os.truncate(path, int(os.path.getsize(path) * keep_fraction))
