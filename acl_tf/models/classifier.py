"""Encoder + linear classifier: the model that fine-tuning trains, evaluation attacks and
export serves."""

from __future__ import annotations

import keras

from acl_tf.models.dual_bn import check_branch


@keras.saving.register_keras_serializable(package="acl_tf")
class Classifier(keras.Model):
    """A (pre-trained) encoder followed by a zero-initialised linear layer.

    Args:
        encoder: called as ``encoder(images, training=..., branch=...)``.
        num_classes: number of logits.
        branch: the BN branch used when a call does not name one (``adv`` by default, the paper's
            choice for fine-tuning and testing).
        freeze_encoder: run the encoder in inference mode and exclude its weights from training
            (linear fine-tuning: SLF/ALF); its BN statistics then stay frozen too.

    Call args: ``images`` float [N, H, W, 3] in [0, 1], ``training``, ``branch`` (None = default).
    Returns logits [N, num_classes].
    """

    def __init__(self, encoder, num_classes: int = 10, branch: str = "adv",
                 freeze_encoder: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.num_classes = num_classes
        self.branch = check_branch(branch)
        self.freeze_encoder = freeze_encoder
        self.encoder.trainable = not freeze_encoder
        self.fc = keras.layers.Dense(num_classes, kernel_initializer="zeros",
                                     bias_initializer="zeros", name="fc")

    def call(self, images, training=None, branch=None):
        branch = check_branch(branch or self.branch)
        features = self.encoder(images, training=False if self.freeze_encoder else training,
                                branch=branch)
        return self.fc(features)

    def get_config(self):
        return {"name": self.name, "encoder": keras.saving.serialize_keras_object(self.encoder),
                "num_classes": self.num_classes, "branch": self.branch,
                "freeze_encoder": self.freeze_encoder}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
