"""NumPy (float64) references shared by the loss, pseudo-label, batch-mixing and trainer tests."""

import numpy as np


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def np_air_regularizers(z_i, z_j, z_orig, z_i_adv, z_j_adv, temperature, divergence):
    """(sir, air) of AIR (Xu et al., NeurIPS 2023) in float64, written from the formulas:
    ``divergence="reference"`` as the authors' code evaluates ``F.kl_div(input, target,
    log_target=True, reduction="sum") = sum exp(target) * (target - input)`` (probabilities as
    ``input``, ``log`` of the unnormalised product as the AIR target); ``"kl"`` the proper
    KL(p_j || p_i) and KL(c_j || c_i) with c renormalised."""
    def normalize(z):  # F.normalize(z, dim=-1), eps 1e-12
        z = np.asarray(z, np.float64)
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    zi, zj, zo, zia, zja = map(normalize, (z_i, z_j, z_orig, z_i_adv, z_j_adv))

    def batch_softmax(x, y):  # softmax over the batch of diag(x y^T) / t
        return np_softmax(np.diag(x @ y.T)[None, :] / temperature)[0]

    def kl_div(inp, target):  # F.kl_div(inp, target, log_target=True, reduction="sum")
        return float(np.sum(np.exp(target) * (target - inp)))

    p_i, p_j = batch_softmax(zi, zo), batch_softmax(zj, zo)
    c_i = batch_softmax(zia, zi) * batch_softmax(zia, zo)
    c_j = batch_softmax(zja, zj) * batch_softmax(zja, zo)
    if divergence == "reference":
        return kl_div(p_i, np.log(p_j)), kl_div(c_i, np.log(c_j))
    if divergence == "kl":
        c_i, c_j = c_i / c_i.sum(), c_j / c_j.sum()
        return kl_div(np.log(p_i), np.log(p_j)), kl_div(np.log(c_i), np.log(c_j))
    raise ValueError(divergence)
