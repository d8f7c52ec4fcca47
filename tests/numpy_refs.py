"""NumPy (float64) references shared by the loss, pseudo-label, batch-mixing and trainer tests."""

import numpy as np


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_softmax(z):
    return np.exp(np_log_softmax(z))
