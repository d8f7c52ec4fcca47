"""A tiny compiled ACLPretrainer and random view pairs, shared by the pretrainer, attack and
benchmark tests."""

import keras
import numpy as np

from acl_tf.attacks import PGDConfig
from acl_tf.models import ProjectionHead, ResNet18
from acl_tf.trainers.pretrainer import ACLPretrainer


def make_pretrainer(variant, width=4, attack_steps=2, dual=None, cls=ACLPretrainer,
                    optimizer=None, run_eagerly=False, **kwargs):
    """A built ``cls`` (ACLPretrainer or a subclass) over a width-``width`` ResNet-18 and a 16-8
    projection head, compiled with ``optimizer`` (SGD 0.1 by default). Dual BN for A2S and DS
    unless ``dual`` says otherwise; ``kwargs`` go to the pretrainer."""
    dual = variant in ("a2s", "ds") if dual is None else dual
    model = cls(ResNet18(width=width, dual_bn=dual), ProjectionHead(16, 8, dual_bn=dual),
                variant=variant, attack=PGDConfig(steps=attack_steps), **kwargs)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1), run_eagerly=run_eagerly)
    model(np.zeros((2, 32, 32, 3), np.float32))
    return model


def views(batch=4, seed=0):
    """Two random views of ``batch`` 32x32 images: an array of shape [2, batch, 32, 32, 3]."""
    rng = np.random.default_rng(seed)
    return rng.random((2, batch, 32, 32, 3), dtype=np.float32)
