"""Contrastive and adversarial-training losses.

Every function takes logits / projections and returns a scalar that is the mean over the
*local* batch; under ``tf.distribute`` the caller divides by the number of replicas.
"""

from __future__ import annotations

import tensorflow as tf

from acl_tf import distribute
from acl_tf.configs import ALPHA_CONVENTIONS
from acl_tf.configs.choices import AirDivergence
from acl_tf.configs.fields import check_choice


def nt_xent(z_a, z_b, temperature: float = 0.5, return_accuracy: bool = False):
    """NT-Xent (SimCLR) loss over the 2B views of B images.

    ``z_a[i]`` and ``z_b[i]`` are projections of two views of image i. Every one of the 2B views is
    an anchor whose positive is the other view of its image and whose negatives are the other
    2B - 2 views; cosine similarities are divided by ``temperature``; the loss is the mean
    cross-entropy over the 2B anchors.

    Args:
        z_a, z_b: float tensors [B, D] (need not be normalised).
        temperature: softmax temperature (0.5 in ACL).
        return_accuracy: also return the positive-pair top-1 accuracy (the fraction of anchors
            whose most similar other view is their positive).

    Returns:
        The scalar loss (float32; float64 for float64 projections, as :func:`cross_entropy`), or
        ``(loss, accuracy)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    z = tf.concat([z_a, z_b], axis=0)
    z = tf.math.l2_normalize(_wide(z), axis=1)
    n = tf.shape(z)[0]
    batch = n // 2
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    # An anchor is never its own negative: push self-similarity to -inf (large negative).
    logits = logits - tf.eye(n, dtype=logits.dtype) * 1e9
    positives = tf.concat([tf.range(batch, n), tf.range(0, batch)], axis=0)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(positives, logits))
    if not return_accuracy:
        return loss
    hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), positives)
    return loss, tf.reduce_mean(tf.cast(hits, tf.float32))


# -- Supervised (adversarial) fine-tuning -------------------------------------------------------
REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_example, reduction: str):
    if reduction == "mean":
        return tf.reduce_mean(per_example)
    if reduction == "sum":
        return tf.reduce_sum(per_example)
    if reduction == "none":
        return per_example
    raise ValueError(f"Unknown reduction {reduction!r}; expected one of {REDUCTIONS}.")


def _wide(x):
    """``x`` as float32, or float64 if it is float64 (half-precision logits are widened)."""
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float64 else tf.cast(x, tf.float32)


def cross_entropy(labels, logits, reduction: str = "mean"):
    """Softmax cross-entropy of integer ``labels`` [B] and ``logits`` [B, C] (float32, or float64
    for float64 logits)."""
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(labels, tf.int64), _wide(logits))
    return _reduce(per_example, reduction)


def trades_kl(logits_clean, logits_adv, reduction: str = "mean"):
    """KL(softmax(logits_clean) || softmax(logits_adv)), summed over classes.

    This is TRADES' robust term: ``nn.KLDivLoss(size_average=False)(log_softmax(f(x')),
    softmax(f(x)))`` is the ``"sum"`` reduction (what the TRADES attack maximises); divided by the
    batch size it is the ``"mean"`` reduction (what the TRADES training loss uses). Gradients
    flow into both arguments, as in the reference (the clean softmax is not detached).

    Args:
        logits_clean: float [B, C], logits of the clean images f(x).
        logits_adv: float [B, C], logits of the perturbed images f(x').
        reduction: ``"mean"`` over the batch, ``"sum"`` over the batch, or ``"none"`` ([B]).
    """
    logits_clean = _wide(logits_clean)
    log_p = tf.nn.log_softmax(logits_clean, axis=-1)
    log_q = tf.nn.log_softmax(tf.cast(_wide(logits_adv), logits_clean.dtype), axis=-1)
    per_example = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)
    return _reduce(per_example, reduction)


def trades_loss(logits_clean, logits_adv, labels, beta: float = 6.0):
    """The TRADES objective (Zhang et al. 2019) of one batch.

    ``CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x'))``, both terms averaged over the batch
    (the KL summed over classes), exactly ``F.cross_entropy(logits, y) + beta * (1 / B) *
    nn.KLDivLoss(size_average=False)(log_softmax(logits_adv), softmax(logits))`` of the TRADES code.

    Args:
        logits_clean: float [B, C], f(x) (training-mode forward pass).
        logits_adv: float [B, C], f(x') of the adversarial images.
        labels: int [B].
        beta: weight of the robust (KL) term; 6 in ACL fine-tuning.
    """
    return cross_entropy(labels, logits_clean) + beta * trades_kl(logits_clean, logits_adv)


# -- NT-Xent with the negatives of every replica -------------------------------------------------
def nt_xent_global(z_a, z_b, all_a, all_b, offset, temperature: float = 0.5,
                   return_accuracy: bool = False):
    """NT-Xent of a shard's anchors against the views of the whole (global) batch.

    The global batch has ``N`` images whose projections are ``all_a``, ``all_b`` [N, D]; this
    shard holds images ``offset .. offset + b - 1`` of it, with projections ``z_a``, ``z_b``
    [b, D] (equal to those rows of ``all_a``, ``all_b``). Each of the 2b local views is an anchor
    whose positive is the other view of its image and whose negatives are the other 2N - 2 views
    of the global batch; the loss is the mean over the 2b local anchors. The mean of this loss
    over all shards of a global batch equals :func:`nt_xent` of the global batch, and with one
    shard (``offset = 0``, ``all_* = z_*``) it is :func:`nt_xent` itself.

    Args:
        z_a, z_b: float [b, D], the local projections (anchors; gradients flow into them).
        all_a, all_b: float [N, D], the projections of the global batch (candidates).
        offset: int, index of the first local image in the global batch.
        temperature: softmax temperature.
        return_accuracy: also return the positive-pair top-1 accuracy of the local anchors.

    Returns:
        The scalar loss (float32; float64 for float64 projections), or ``(loss, accuracy)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")

    def normalize(z):
        return tf.math.l2_normalize(_wide(z), axis=1)

    anchors = normalize(tf.concat([z_a, z_b], axis=0))
    candidates = normalize(tf.concat([all_a, all_b], axis=0))
    local = tf.shape(z_a)[0]
    total = tf.shape(all_a)[0]
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    rows = tf.range(local) + tf.cast(offset, tf.int32)
    self_index = tf.concat([rows, rows + total], axis=0)      # column of each anchor itself
    positives = tf.concat([rows + total, rows], axis=0)       # column of its other view
    logits = logits - tf.one_hot(self_index, 2 * total, dtype=logits.dtype) * 1e9
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(positives, logits))
    if not return_accuracy:
        return loss
    hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), positives)
    return loss, tf.reduce_mean(tf.cast(hits, tf.float32))


def nt_xent_cross_replica(z_a, z_b, temperature: float = 0.5, return_accuracy: bool = False):
    """NT-Xent of this replica's pairs with the negatives of every replica.

    Inside a train step under ``tf.distribute`` the projections of all replicas are all-gathered
    (:func:`acl_tf.distribute.all_gather`) and :func:`nt_xent_global` is taken with this
    replica's offset, so the mean over replicas equals single-device :func:`nt_xent` of the
    global batch, value and gradient (divide by the number of replicas before Keras sums the
    gradients). With one replica it *is* :func:`nt_xent`.
    """
    if distribute.num_replicas() == 1:
        return nt_xent(z_a, z_b, temperature, return_accuracy)
    all_a, all_b = distribute.all_gather([z_a, z_b], axis=0)
    offset = distribute.replica_id() * tf.shape(z_a)[0]
    return nt_xent_global(z_a, z_b, all_a, all_b, offset, temperature, return_accuracy)


# -- AIR's invariance regularisers (Xu et al., NeurIPS 2023) -------------------------------------
def air_regularizers(z_i, z_j, z_orig, z_i_adv, z_j_adv, temperature: float = 0.5,
                     divergence: str = "reference"):
    """AIR's standard and adversarial invariant regularisers ``(sir, air)`` of a batch.

    The inputs are the projections of N images: two clean views ``z_i``, ``z_j``, the original
    image ``z_orig`` and the adversarial views ``z_i_adv``, ``z_j_adv``, each [N, D]. Every row is
    first L2-normalised as ``F.normalize`` does (``x / max(||x||, 1e-12)``). With ``t`` the
    temperature and ``<x, y>`` the per-image dot product (the diagonal of ``x y^T``, one number
    per image), five length-N logit vectors enter, and every softmax is taken *over the batch*
    (the distribution of an image's similarity among the N images' similarities)::

        a   = <z_i, z_orig> / t             b   = <z_j, z_orig> / t
        u_i = <z_i_adv, z_i> / t            v_i = <z_i_adv, z_orig> / t
        u_j = <z_j_adv, z_j> / t            v_j = <z_j_adv, z_orig> / t
        p_i = softmax(a), p_j = softmax(b)
        c_i = softmax(u_i) * softmax(v_i),  c_j = softmax(u_j) * softmax(v_j)   (elementwise)

    ``divergence="reference"`` is what the authors' code (GodXuxilie/Enhancing_ACL_via_AIR,
    ``AIR.py``) computes: ``F.kl_div(input, target, log_target=True, reduction="sum")``, i.e.
    ``sum_k exp(target_k) * (target_k - input_k)``, called with *probabilities* as ``input``
    where ``kl_div`` expects log-probabilities, and with the unnormalised products c::

        sir = sum_k p_j,k * (log p_j,k - p_i,k)   (= -H(p_j) - <p_j, p_i>)
        air = sum_k c_j,k * (log c_j,k - c_i,k)

    These are not divergences: they are not 0 for equal distributions (identical views give
    ``sir = -H(p) - sum_k p_k^2``, ``-log N - 1/N`` when p is uniform) and can be negative. Here
    ``log c_j`` is taken as ``log_softmax(u_j) + log_softmax(v_j)``, equal to the reference's
    ``log(c_j)`` but without underflow to ``log 0``.

    ``divergence="kl"`` is what the paper's formulas mean, in the reference's direction
    (``kl_div(input, target)`` is KL(target || exp(input)), and the code's target is the j
    view): proper KL divergences of log-probabilities, with the products renormalised to
    distributions (``c / sum(c)``, which is ``softmax(u + v)``)::

        sir = KL(p_j || p_i) = sum_k p_j,k * (log p_j,k - log p_i,k)
        air = KL(c_j / sum c_j || c_i / sum c_i)

    Both are >= 0 and 0 for identical views. Renormalising is needed for ``air`` to be a
    divergence at all (the unnormalised KL has no fixed sign); it changes ``air`` itself, not
    just its scale, since the two normalisers differ.

    Both terms are sums over the batch (not means over examples), as ``reduction="sum"``.
    Gradients flow into all five inputs (nothing is detached, as in the reference).

    Under ``tf.distribute`` with R > 1 replicas, called in replica context (``train_step``,
    ``strategy.run``) with this replica's rows of the global batch: every replica computes its
    rows of the six logit vectors, all-gathers them (one collective,
    :func:`acl_tf.distribute.all_gather`), and returns the regularisers of the *global* batch of
    N = R * n images; every replica returns the same values. So, as for
    :func:`nt_xent_cross_replica`, the mean over replicas equals the single-device value of the
    global batch, value and gradient: a train step adds ``lambda1 * sir + lambda2 * air`` to its
    per-replica loss and divides the total by the number of replicas before Keras sums the
    gradients over replicas (the all-gather's gradient hands each replica the global gradient
    of its own rows). The values do not depend on how the images are ordered, so the gather
    only needs each replica to hold the five projections of the same images. With one replica
    (or no strategy) nothing is gathered.

    Args:
        z_i, z_j, z_orig, z_i_adv, z_j_adv: float [n, D] (need not be normalised), row k of each
            from the same image.
        temperature: t > 0 (0.5 in AIR).
        divergence: ``"reference"`` or ``"kl"`` (see above).

    Returns:
        ``(sir, air)``, scalars: float32, or float64 when ``z_i`` is float64 (the other inputs
        are cast to ``z_i``'s dtype, half precision being widened to float32).

    Raises:
        ValueError: for a temperature that is not positive or an unknown ``divergence`` (a
            :class:`~acl_tf.core.errors.ConfigError`).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    divergence = check_choice(AirDivergence, divergence, "divergence")
    dtype = _wide(z_i).dtype

    def normalize(z):
        # epsilon bounds the squared norm: max(||z||^2, 1e-24) = max(||z||, 1e-12)^2.
        return tf.math.l2_normalize(tf.cast(_wide(z), dtype), axis=1, epsilon=1e-24)

    zi, zj, zo, zi_adv, zj_adv = map(normalize, (z_i, z_j, z_orig, z_i_adv, z_j_adv))

    def logits(x, y):
        return tf.reduce_sum(x * y, axis=1) / temperature

    local = tf.stack([logits(zi, zo), logits(zj, zo), logits(zi_adv, zi), logits(zi_adv, zo),
                      logits(zj_adv, zj), logits(zj_adv, zo)], axis=1)       # [n, 6]
    everything = distribute.all_gather(local, axis=0)                         # [N, 6]
    a, b, u_i, v_i, u_j, v_j = tf.unstack(everything, num=6, axis=1)
    log_p_i = tf.nn.log_softmax(a)
    log_p_j = tf.nn.log_softmax(b)
    if divergence == "reference":
        log_c_i = tf.nn.log_softmax(u_i) + tf.nn.log_softmax(v_i)
        log_c_j = tf.nn.log_softmax(u_j) + tf.nn.log_softmax(v_j)
        sir = tf.reduce_sum(tf.exp(log_p_j) * (log_p_j - tf.exp(log_p_i)))
        air = tf.reduce_sum(tf.exp(log_c_j) * (log_c_j - tf.exp(log_c_i)))
    else:
        log_c_i = tf.nn.log_softmax(u_i + v_i)
        log_c_j = tf.nn.log_softmax(u_j + v_j)
        sir = tf.reduce_sum(tf.exp(log_p_j) * (log_p_j - log_p_i))
        air = tf.reduce_sum(tf.exp(log_c_j) * (log_c_j - log_c_i))
    return sir, air


# -- Semi-supervised adversarial training (reference section 4) ----------------------------------
SEMISUP_TERMS = ("ce_labelled", "distill_labelled", "distill_unlabelled", "robust_kl")


def soft_labels(logits, temperature: float = 1.0):
    """Soft (pseudo-)labels ``softmax(logits / T)`` [B, C] of teacher logits."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    return tf.nn.softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)


def distillation_loss(student_logits, targets, temperature: float = 1.0,
                      reduction: str = "mean"):
    """Knowledge-distillation loss ``-sum_c p_c log softmax(z / T)_c`` of one example.

    ``targets`` p are soft labels already at temperature T (:func:`soft_labels` of the teacher's
    logits); ``z`` are the student's logits. This is the cross-entropy form of the official
    script (``distillCrossEntropy``); it equals ``KL(p || softmax(z / T)) + H(p)``, so it has
    the KL's gradient. The ``T^2`` factor of Hinton et al. is left to the caller.

    Args:
        student_logits: float [B, C].
        targets: float [B, C], rows on the probability simplex.
        temperature: T > 0.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"`` ([B]).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    log_q = tf.nn.log_softmax(_wide(student_logits) / temperature, axis=-1)
    per_example = -tf.reduce_sum(tf.cast(targets, log_q.dtype) * log_q, axis=-1)
    return _reduce(per_example, reduction)


def semisup_student_loss(logits_clean, logits_adv, labels, targets, is_labelled, *,
                         alpha: float = 0.5, temperature: float = 1.0, beta: float = 6.0,
                         distill_weight: float = 1.0, alpha_convention: str = "paper",
                         return_terms: bool = False):
    """The loss l_s of step iii (paper Eqn. 3, reference section 4) over a mixed batch.

    With N = N_l + N_u the number of images in the batch (labelled and unlabelled together),
    x' the adversarial images and p the soft pseudo-labels at temperature T::

        l_s = 1/N * [ a_ce  * sum_l CE(f(x_l'), y_l)
                    + a_kd  * w * T^2 * sum_l KD(f(x_l'), p_l, T)
                    +         w * T^2 * sum_u KD(f(x_u'), p_u, T)
                    + beta  * sum_all KL(softmax f(x) || softmax f(x')) ]

    where ``(a_ce, a_kd) = (alpha, 1 - alpha)`` in the paper's convention and
    ``(1 - alpha, alpha)`` in the official code's (``alpha_convention="code"``), ``w`` is
    ``distill_weight`` (the code's ``rate_distill``, 1), KD is :func:`distillation_loss` and KL is
    :func:`trades_kl`. Every sum is divided by the whole batch size N, as in the script.

    Args:
        logits_clean: float [N, C], f(x) of the clean images (training-mode pass).
        logits_adv: float [N, C], f(x') of their adversarial images.
        labels: int [N]; read only where ``is_labelled`` (unlabelled entries may be -1).
        targets: float [N, C], soft pseudo-labels p at temperature ``temperature``.
        is_labelled: bool [N].
        alpha, temperature, beta, distill_weight, alpha_convention: see above.
        return_terms: also return the dict of the four weighted terms (they sum to the loss).

    Returns:
        The scalar loss (float32; float64 for float64 logits) or ``(loss, terms)``; under
        ``tf.distribute`` the caller divides by the number of replicas.
    """
    if alpha_convention not in ALPHA_CONVENTIONS:
        raise ValueError(f"Unknown alpha_convention {alpha_convention!r}; expected one of "
                         f"{ALPHA_CONVENTIONS}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    if beta < 0 or distill_weight < 0:
        raise ValueError(f"beta and distill_weight must be >= 0, got {beta}, {distill_weight}.")
    mask = tf.cast(is_labelled, tf.bool)
    safe_labels = tf.where(mask, tf.cast(labels, tf.int64), tf.zeros_like(labels, tf.int64))
    ce = cross_entropy(safe_labels, logits_adv, "none")   # float32 (float64 for float64 logits)
    kd = distillation_loss(logits_adv, targets, temperature, "none")
    kl = tf.cast(trades_kl(logits_clean, logits_adv, "none"), ce.dtype)
    labelled = tf.cast(mask, ce.dtype)
    count = tf.cast(tf.shape(logits_adv)[0], ce.dtype)
    a_ce, a_kd = (alpha, 1.0 - alpha) if alpha_convention == "paper" else (1.0 - alpha, alpha)
    t2 = distill_weight * temperature * temperature
    terms = {
        "ce_labelled": a_ce * tf.reduce_sum(labelled * ce) / count,
        "distill_labelled": a_kd * t2 * tf.reduce_sum(labelled * kd) / count,
        "distill_unlabelled": t2 * tf.reduce_sum((1.0 - labelled) * kd) / count,
        "robust_kl": beta * tf.reduce_sum(kl) / count,
    }
    loss = tf.add_n([terms[k] for k in SEMISUP_TERMS])
    return (loss, terms) if return_terms else loss
