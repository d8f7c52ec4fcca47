"""k-means in TensorFlow and the cluster pseudo-labels of DynACL++'s post-processing.

DynACL++ (Luo, Wang & Wang, ICLR 2023) labels every training image with the k-means cluster
(euclidean, 10 clusters) of its pre-trained features and fine-tunes on those labels
(:mod:`acl_tf.tasks.postprocess`). :func:`kmeans` is Lloyd's algorithm on a ``[N, D]`` feature
matrix, computed in row batches (``batch_size`` rows at a time: distances to the centres, the
per-cluster sums and counts), so 50,000 x 512 features take a few megabytes beyond the features
themselves. Initialisation:

* ``random`` (default): ``k`` distinct feature rows drawn uniformly, what the reference's
  ``kmeans_pytorch.kmeans`` does (Forgy's method);
* ``kmeans++``: Arthur & Vassilvitskii's D^2 sampling, usually fewer iterations and a lower
  inertia;
* an explicit ``[k, D]`` array of initial centres.

Every draw comes from ``numpy.random.default_rng(seed)``, so a run is reproducible. An iteration
assigns every row to its nearest centre and moves each centre to the mean of its rows; a cluster
left empty gets a feature row drawn at random (as ``kmeans_pytorch`` does). The iterations stop
when ``(sum_k ||c_k(new) - c_k(old)||)^2 < tolerance`` (``kmeans_pytorch``'s criterion, default
1e-4) or after ``max_iterations``. The returned assignments are those to the returned centres
(one more assignment pass after the last update), so every row's cluster is its nearest centre.

The cluster labels of a run are one ``.npz`` artifact (:func:`save_cluster_labels`,
:func:`load_cluster_labels`, readable without TensorFlow):

=================  =============  ============================================================
key                dtype, shape   meaning
=================  =============  ============================================================
``ids``            str [N]        image ids (``acl_tf.data.ImageData.ids`` of the split)
``clusters``       int64 [N]      the cluster of every image, in [0, k)
``distances``      float32 [N]    squared euclidean distance of its features to its centre
``labels_true``    int64 [N]      ground-truth labels, for the purity diagnostic only
``centres``        float32 [k,D]  the cluster centres
``inertia``        float64 []     sum of ``distances``
``iterations``     int64 []       Lloyd iterations run
``converged``      bool []        whether the tolerance was reached
``encoder``        str []         where the features came from (informational)
``branch``         str []         the BN branch of the features
=================  =============  ============================================================
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from acl_tf.core.errors import PseudoLabelError
from acl_tf.core.io import write_npz_atomic

__all__ = ["CLUSTER_FIELDS", "INITS", "ClusterLabels", "KMeansResult", "assign_clusters",
           "cluster_report", "kmeans", "load_cluster_labels", "save_cluster_labels"]

INITS = ("random", "kmeans++")
CLUSTER_FIELDS = ("ids", "clusters", "distances", "labels_true", "centres", "inertia",
                  "iterations", "converged", "encoder", "branch")


# -- k-means -------------------------------------------------------------------------------------
@dataclasses.dataclass
class KMeansResult:
    """What :func:`kmeans` returns."""

    assignments: np.ndarray    # int64 [N]: the nearest centre of every row
    centres: np.ndarray        # float32 [k, D]
    distances: np.ndarray      # float32 [N]: squared distance of every row to its centre
    iterations: int            # Lloyd iterations (centre updates) run
    converged: bool            # the tolerance was reached before max_iterations

    @property
    def inertia(self) -> float:
        """Sum of squared distances of the rows to their centres."""
        return float(np.sum(self.distances, dtype=np.float64))

    @property
    def sizes(self) -> np.ndarray:
        """Rows per cluster, int64 [k]."""
        return np.bincount(self.assignments, minlength=len(self.centres)).astype(np.int64)


def _chunk_stats_fn():
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def chunk_stats(x, centres):
        """Nearest centre, squared distance to it, per-centre sums and counts of rows ``x``."""
        k = tf.shape(centres)[0]
        squared = (tf.reduce_sum(x * x, axis=1, keepdims=True)
                   - 2.0 * tf.matmul(x, centres, transpose_b=True)
                   + tf.reduce_sum(centres * centres, axis=1)[None, :])
        squared = tf.maximum(squared, 0.0)
        nearest = tf.argmin(squared, axis=1, output_type=tf.int32)
        distance = tf.reduce_min(squared, axis=1)
        sums = tf.math.unsorted_segment_sum(x, nearest, k)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(distance), nearest, k)
        return nearest, distance, sums, counts

    return chunk_stats


def _check_features(features) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"features must be a non-empty [N, D] array, got shape "
                         f"{features.shape}.")
    features = features.astype(np.float32, copy=False)
    if not np.all(np.isfinite(features)):
        raise ValueError("features hold non-finite values.")
    return features


def _passes(x, centres, batch_size: int, chunk_stats):
    """One assignment pass over the rows of the TF tensor ``x``: (nearest [N], squared distance
    [N], per-centre sums [k, D] (float64), counts [k])."""
    import tensorflow as tf

    c = tf.constant(centres, tf.float32)
    nearest, distance = [], []
    sums = np.zeros(centres.shape, np.float64)
    counts = np.zeros(len(centres), np.float64)
    for start in range(0, int(x.shape[0]), batch_size):
        a, d, s, n = chunk_stats(x[start:start + batch_size], c)
        nearest.append(a.numpy())
        distance.append(d.numpy())
        sums += s.numpy()
        counts += n.numpy()
    return (np.concatenate(nearest).astype(np.int64), np.concatenate(distance), sums, counts)


def _init_centres(features: np.ndarray, k: int, init, rng: np.random.Generator) -> np.ndarray:
    n, dim = features.shape
    if not isinstance(init, str):
        centres = np.asarray(init, np.float32)
        if centres.shape != (k, dim):
            raise ValueError(f"initial centres must have shape ({k}, {dim}), got "
                             f"{centres.shape}.")
        return centres.copy()
    if init == "random":
        return features[rng.choice(n, size=k, replace=False)].copy()
    if init != "kmeans++":
        raise ValueError(f"Unknown k-means init {init!r}; expected one of {INITS} or an array of "
                         "centres.")
    norms = np.einsum("ij,ij->i", features, features, dtype=np.float64)
    chosen = [int(rng.integers(n))]
    closest = np.full(n, np.inf)
    for _ in range(1, k):
        c = features[chosen[-1]].astype(np.float64)
        d = np.maximum(norms - 2.0 * (features @ c) + c @ c, 0.0)
        closest = np.minimum(closest, d)
        total = closest.sum()
        if total <= 0:   # every row sits on a chosen centre: pick among the others uniformly
            rest = np.setdiff1d(np.arange(n), chosen)
            chosen.append(int(rng.choice(rest)))
        else:
            chosen.append(int(rng.choice(n, p=closest / total)))
    return features[chosen].copy()


def kmeans(features, num_clusters: int, *, init: Union[str, np.ndarray] = "random",
           seed: int = 0, tolerance: float = 1e-4, max_iterations: int = 300,
           restarts: int = 1, batch_size: int = 8192) -> KMeansResult:
    """Lloyd's k-means (euclidean) of the rows of ``features`` (see the module docstring).

    Args:
        features: float ``[N, D]`` (NumPy or anything ``np.asarray`` takes).
        num_clusters: ``k``, in ``[1, N]``.
        init: ``random`` (k distinct rows: the reference's), ``kmeans++`` or ``[k, D]`` centres.
        seed: seed of every random draw (initialisation, empty-cluster reseeding).
        tolerance: stop when the squared sum of the centres' moves is below it.
        max_iterations: at most this many centre updates (>= 1).
        restarts: run this many times (seeds ``seed``, ``seed + 1``, ...; an explicit ``init``
            array is used once) and keep the result of lowest inertia.
        batch_size: rows per distance computation.

    Returns:
        A :class:`KMeansResult`.
    """
    import tensorflow as tf

    features = _check_features(features)
    n = len(features)
    if isinstance(num_clusters, bool) or not 1 <= int(num_clusters) <= n:
        raise ValueError(f"num_clusters must be in [1, {n}] (the number of rows), got "
                         f"{num_clusters}.")
    k = int(num_clusters)
    if max_iterations < 1 or restarts < 1 or batch_size < 1:
        raise ValueError(f"max_iterations, restarts and batch_size must be >= 1, got "
                         f"{max_iterations}, {restarts}, {batch_size}.")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    if not isinstance(init, str):
        restarts = 1
    x = tf.constant(features)
    chunk_stats = _chunk_stats_fn()
    best = None
    for restart in range(restarts):
        rng = np.random.default_rng(seed + restart)
        centres = _init_centres(features, k, init, rng)
        iterations, converged = 0, False
        while iterations < max_iterations:
            _, _, sums, counts = _passes(x, centres, batch_size, chunk_stats)
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None],
                           0.0).astype(np.float32)
            for empty in np.flatnonzero(counts == 0):
                new[empty] = features[int(rng.integers(n))]
            shift = float(np.sum(np.linalg.norm(new.astype(np.float64) - centres, axis=1)))
            centres = new
            iterations += 1
            if shift ** 2 < tolerance:
                converged = True
                break
        nearest, distance, _, _ = _passes(x, centres, batch_size, chunk_stats)
        result = KMeansResult(assignments=nearest, centres=centres,
                              distances=distance.astype(np.float32), iterations=iterations,
                              converged=converged)
        if best is None or result.inertia < best.inertia:
            best = result
    return best


def assign_clusters(features, centres, batch_size: int = 8192):
    """``(nearest centre int64 [N], squared distance float32 [N])`` of every row of
    ``features`` (float ``[N, D]``) to ``centres`` (``[k, D]``)."""
    import tensorflow as tf

    features = _check_features(features)
    centres = np.asarray(centres, np.float32)
    if centres.ndim != 2 or centres.shape[1] != features.shape[1] or not len(centres):
        raise ValueError(f"centres must have shape [k, {features.shape[1]}], got "
                         f"{centres.shape}.")
    nearest, distance, _, _ = _passes(tf.constant(features), centres, batch_size,
                                      _chunk_stats_fn())
    return nearest, distance.astype(np.float32)


# -- the artifact --------------------------------------------------------------------------------
@dataclasses.dataclass
class ClusterLabels:
    """The cluster pseudo-labels of N images (see the module docstring for the fields)."""

    ids: np.ndarray
    clusters: np.ndarray
    distances: np.ndarray
    labels_true: np.ndarray
    centres: np.ndarray
    iterations: int = 0
    converged: bool = True
    encoder: str = ""
    branch: str = "normal"

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=str)
        self.clusters = np.asarray(self.clusters)
        self.distances = np.asarray(self.distances, dtype=np.float32)
        self.labels_true = np.asarray(self.labels_true)
        self.centres = np.asarray(self.centres, dtype=np.float32)
        self.iterations = int(self.iterations)
        self.converged = bool(self.converged)
        self.encoder, self.branch = str(self.encoder), str(self.branch)
        _validate(self, "ClusterLabels")

    @classmethod
    def from_kmeans(cls, result: KMeansResult, data, *, encoder: str = "",
                    branch: str = "normal") -> "ClusterLabels":
        """The labels of ``data`` (an :class:`acl_tf.data.ImageData`, rows in its order)."""
        return cls(ids=data.ids, clusters=result.assignments, distances=result.distances,
                   labels_true=data.labels, centres=result.centres,
                   iterations=result.iterations, converged=result.converged, encoder=encoder,
                   branch=branch)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_clusters(self) -> int:
        return int(self.centres.shape[0])

    @property
    def inertia(self) -> float:
        return float(np.sum(self.distances, dtype=np.float64))

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.clusters, minlength=self.num_clusters).astype(np.int64)


def _validate(cl: ClusterLabels, where: str) -> None:
    n = len(cl.ids)
    if cl.ids.ndim != 1 or len(set(cl.ids.tolist())) != n:
        raise PseudoLabelError(f"{where}: 'ids' must be 1-D and unique.")
    if cl.centres.ndim != 2 or cl.centres.shape[0] < 1 or not np.all(np.isfinite(cl.centres)):
        raise PseudoLabelError(f"{where}: 'centres' must be a finite [k, D] array with k >= 1, "
                               f"got shape {cl.centres.shape}.")
    for name in ("clusters", "labels_true"):
        value = getattr(cl, name)
        if value.shape != (n,) or not np.issubdtype(value.dtype, np.integer):
            raise PseudoLabelError(f"{where}: {name!r} must be integers of shape ({n},), got "
                                   f"{value.dtype} {value.shape}.")
        setattr(cl, name, value.astype(np.int64))
    k = cl.num_clusters
    bad = np.flatnonzero((cl.clusters < 0) | (cl.clusters >= k))
    if bad.size:
        raise PseudoLabelError(f"{where}: cluster {cl.clusters[bad[0]]} of id {cl.ids[bad[0]]!r} "
                               f"is outside [0, {k}).")
    if cl.distances.shape != (n,) or not np.all(np.isfinite(cl.distances)):
        raise PseudoLabelError(f"{where}: 'distances' must be finite floats of shape ({n},).")


def save_cluster_labels(path, labels: ClusterLabels) -> Path:
    """Writes ``labels`` to ``path`` (``.npz``) through a temporary file; returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise PseudoLabelError(f"cluster-label file {str(path)!r} must end in .npz.")
    return write_npz_atomic(
        path, ids=labels.ids, clusters=labels.clusters, distances=labels.distances,
        labels_true=labels.labels_true, centres=labels.centres,
        inertia=np.float64(labels.inertia), iterations=np.int64(labels.iterations),
        converged=np.bool_(labels.converged), encoder=np.asarray(labels.encoder),
        branch=np.asarray(labels.branch))


def load_cluster_labels(path) -> ClusterLabels:
    """Reads and checks a cluster-label ``.npz`` written by :func:`save_cluster_labels`.

    Raises:
        PseudoLabelError: the file is missing or unreadable, lacks a field, or its fields are
            inconsistent (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise PseudoLabelError(f"cluster-label file {str(path)!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in CLUSTER_FIELDS if k not in archive.files]
            if missing:
                raise PseudoLabelError(f"{path}: missing field(s) {missing}; a cluster-label "
                                       f"file holds {list(CLUSTER_FIELDS)}.")
            values = {k: archive[k] for k in CLUSTER_FIELDS}
    except PseudoLabelError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise PseudoLabelError(f"{path}: not a readable .npz file ({err}).") from err
    del values["inertia"]   # the sum of the distances, recomputed
    for name in ("iterations", "converged", "encoder", "branch"):
        values[name] = values[name].item()
    try:
        return ClusterLabels(**values)
    except PseudoLabelError as err:
        raise PseudoLabelError(str(err).replace("ClusterLabels:", f"{path}:", 1)) from None


def cluster_report(labels: ClusterLabels, num_classes: Optional[int] = None) -> dict:
    """What the clustering found, as plain values: sizes, inertia, and against the true labels
    (a diagnostic the method never uses) the contingency table ``[k, C]`` and the purity (the
    fraction of images whose cluster's most frequent true label is their own)."""
    classes = int(num_classes or (labels.labels_true.max() + 1 if len(labels) else 1))
    table = np.zeros((labels.num_clusters, classes), np.int64)
    np.add.at(table, (labels.clusters, labels.labels_true), 1)
    purity = float(table.max(axis=1).sum() / max(len(labels), 1))
    return {"num_images": len(labels), "num_clusters": labels.num_clusters,
            "cluster_sizes": labels.sizes.tolist(),
            "empty_clusters": int(np.sum(labels.sizes == 0)),
            "inertia": labels.inertia, "iterations": labels.iterations,
            "converged": labels.converged, "branch": labels.branch, "encoder": labels.encoder,
            "purity": purity, "majority_label": table.argmax(axis=1).tolist(),
            "contingency": table.tolist()}
