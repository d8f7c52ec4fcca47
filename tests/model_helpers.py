"""Inputs and a statistics perturbation shared by the encoder, classifier and pretrainer tests."""

import numpy as np


def images(n=4, seed=0):
    """``n`` random 32x32 RGB images in [0, 1)."""
    return np.random.default_rng(seed).random((n, 32, 32, 3), dtype=np.float32)


def perturb_adv_statistics(model):
    """Train-mode pass on the adv branch so the two branches' moving stats differ."""
    x = images(8, seed=1) * 0.5 + 0.3
    for _ in range(3):
        model(x, training=True, branch="adv")
