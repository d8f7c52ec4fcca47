"""Distribution strategies and the cross-replica helpers the custom train steps use.

:func:`make_strategy` builds the ``tf.distribute`` strategy named on a command line
(``--strategy=default|mirrored|multi_worker|tpu``); models, optimisers and metrics must then be
built inside ``strategy.scope()``. Keras 3 runs ``train_step`` once per replica on its share of the
global batch and *sums* the gradients over replicas, so a train step divides its per-replica
mean loss by :func:`num_replicas` and uses :func:`all_gather` where the loss couples examples
(NT-Xent's negatives).

In a multi-worker job every worker runs the same program; only the chief (:func:`is_chief`)
writes into the run directory, the other workers write the same files into a temporary
directory that :func:`task_write_dir` deletes afterwards (the Keras multi-worker pattern: every
worker takes part in saving, because reading distributed variables can involve collectives).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence

import tensorflow as tf
from absl import logging

from acl_tf.configs import STRATEGIES
from acl_tf.core.errors import StrategyError  # noqa: F401 (re-exported)


def resolve_strategy(strategy=None) -> tf.distribute.Strategy:
    """``strategy`` itself, or the strategy a name (None: ``default``) stands for."""
    if strategy is None or isinstance(strategy, str):
        return make_strategy(strategy or "default")
    return strategy


def check_global_batch(strategy, batch_size: int, what: str = "batch_size") -> None:
    """Raises ConfigError unless the global batch ``batch_size`` splits evenly over the
    strategy's replicas."""
    from acl_tf.configs import ConfigError

    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ConfigError(f"{what} ({batch_size}) must be a multiple of the {replicas} replicas "
                          "(it is the global batch, split evenly).")


def make_strategy(name: str = "default", tpu_address: Optional[str] = None,
                  devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
    """Builds the named distribution strategy.

    Args:
        name: ``default`` (one device, no distribution), ``mirrored`` (synchronous data
            parallelism over the GPUs of this machine, or ``devices``), ``multi_worker``
            (synchronous data parallelism over several machines described by the ``TF_CONFIG``
            environment variable, each with all its GPUs) or ``tpu``.
        tpu_address: the TPU to use with ``tpu``: a name or ``grpc://host:port`` address,
            ``local`` on a TPU VM; ``None`` auto-detects (Cloud TPU environments).
        devices: for ``mirrored`` only, the devices to mirror over (default: all GPUs, or the
            CPU when there is none).

    Must be called before TensorFlow runs any op when ``name`` is ``multi_worker`` or ``tpu``.

    Raises:
        StrategyError: unknown name, ``tpu_address``/``devices`` given to a strategy that does
            not use them, malformed ``TF_CONFIG``, or a TPU that cannot be reached.
    """
    key = str(name).lower().replace("-", "_")
    if key not in STRATEGIES:
        raise StrategyError(f"Unknown distribution strategy {name!r}; expected one of "
                            f"{STRATEGIES}.")
    if tpu_address and key != "tpu":
        raise StrategyError(f"A TPU address ({tpu_address!r}) is only used with the 'tpu' "
                            f"strategy, not {key!r}.")
    if devices is not None and key != "mirrored":
        raise StrategyError(f"devices are only used with the 'mirrored' strategy, not {key!r}.")
    if key == "default":
        return tf.distribute.get_strategy()
    if key == "mirrored":
        return tf.distribute.MirroredStrategy(list(devices) if devices is not None else None)
    if key == "multi_worker":
        cluster = _tf_config().get("cluster")
        if not cluster:
            logging.warning("--strategy=multi_worker without a cluster in TF_CONFIG: this "
                            "process trains alone, as a cluster of one worker.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu_address)


def _tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable ({} when unset)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise StrategyError(f"TF_CONFIG is not valid JSON ({err}): {raw!r}") from err
    if not isinstance(value, dict):
        raise StrategyError(f"TF_CONFIG must be a JSON object, got {raw!r}.")
    return value


def _tpu_strategy(tpu_address: Optional[str]) -> tf.distribute.Strategy:
    where = tpu_address or "(auto-detected)"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise StrategyError(f"Cannot connect to the TPU {where}: {err}") from err
    strategy = tf.distribute.TPUStrategy(resolver)
    logging.info("TPU %s: %d replicas", where, strategy.num_replicas_in_sync)
    return strategy


# -- roles in a multi-worker job ----------------------------------------------------------------
def task_type_and_id(strategy: Optional[tf.distribute.Strategy] = None):
    """(task_type, task_id) of this process in a multi-worker cluster, (None, None) otherwise."""
    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None, None
    resolver = strategy.cluster_resolver
    return resolver.task_type, resolver.task_id


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    """Whether this process writes the run directory.

    True without a multi-worker strategy; in a cluster, the ``chief`` task, or worker 0 when the
    cluster has no ``chief`` task.
    """
    strategy = strategy or tf.distribute.get_strategy()
    task_type, task_id = task_type_and_id(strategy)
    if task_type is None:
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return is_chief_task(task_type, task_id, has_chief)


def is_chief_task(task_type: Optional[str], task_id: Optional[int], has_chief_task: bool) -> bool:
    """The chief rule of ``TF_CONFIG`` clusters: the ``chief`` task if the cluster has one, else
    worker 0 (a process outside any cluster, ``task_type=None``, is its own chief)."""
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and not has_chief_task


@contextlib.contextmanager
def task_write_dir(model_dir, strategy: Optional[tf.distribute.Strategy] = None
                   ) -> Iterator[Path]:
    """The directory this process writes to: ``model_dir`` on the chief, else a temporary one.

    A non-chief worker's directory is created under the system temporary directory and deleted
    when the ``with`` block exits, whatever happens inside it.
    """
    if is_chief(strategy):
        yield Path(model_dir)
        return
    task_type, task_id = task_type_and_id(strategy)
    tmp = Path(tempfile.mkdtemp(prefix=f"acl_tf_{task_type}{task_id}_"))
    logging.info("%s %s is not the chief: writing to the temporary %s", task_type, task_id, tmp)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- inside a train step ------------------------------------------------------------------------
def num_replicas() -> int:
    """Replicas taking part in the current step (1 outside any distribution strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_id():
    """This replica's index in its sync group (int32 tensor or 0 in the default context)."""
    context = tf.distribute.get_replica_context()
    return context.replica_id_in_sync_group if context is not None else 0


def all_gather(value, axis: int = 0):
    """Concatenates ``value`` (a tensor or nest of tensors) of every replica along ``axis``.

    To be called in replica context (``train_step``), by every replica in the same order. With a
    single replica it returns ``value`` unchanged (no op is added). The result is ordered by
    replica id, so replica ``r``'s rows start at ``r * value.shape[axis]``. Gradients flow back
    to every replica's ``value``: TensorFlow's all-gather gradient all-reduces (sums) the
    incoming gradient and hands each replica its own slice, so the weight gradients summed over
    replicas are those of the global loss.

    Under MirroredStrategy / MultiWorkerMirroredStrategy the gather is a ``merge_call``, which
    cannot sit inside a ``tf.while_loop`` body: loops around it must be unrolled in Python.
    """
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context
        if num_replicas() == 1:
            return value
        raise RuntimeError("all_gather must be called inside a replica function "
                           "(strategy.run / train_step).")
    if context.num_replicas_in_sync == 1:
        return value
    return context.all_gather(value, axis=axis)


# -- Keras 3 fit under MultiWorkerMirroredStrategy ----------------------------------------------
def in_multi_worker_mode(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy spanning more than one worker
    (the condition Keras' trainer uses for its multi-worker code paths)."""
    strategy = strategy or tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())  # noqa: SLF001 (as Keras does)


def step_outputs(logs: dict) -> dict:
    """The metrics a custom ``train_step`` returns, shaped for Keras 3 ``fit`` in a multi-worker
    job: there Keras reduces every output with ``strategy.reduce(MEAN, value, axis=0)``, which
    fails on scalars (keras-team/keras#20585), so each value gets a leading axis of length 1 and
    the reduction averages the replicas' values back to a scalar. Unchanged otherwise."""
    if not in_multi_worker_mode():
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


class MultiWorkerFitMixin:
    """Makes Keras 3 ``fit`` of a model with a custom ``train_step`` work under every strategy.

    Before the first step of a distributed ``fit``, Keras 3 (up to at least 3.12) runs a
    "symbolic build" on one batch that it first averages across replicas with
    ``strategy.reduce``: MultiWorkerMirroredStrategy cannot reduce a batch at all
    (keras-team/keras#20585), and no strategy can average a batch holding booleans (the
    semi-supervised student's ``is_labelled`` mask). The build is only needed for models that
    are not built yet and for compiled losses/metrics: a model that is built before ``fit`` and
    keeps its own metrics skips it, as Keras does on a single device (the optimiser is built in
    the strategy's scope instead). The train step must also return its logs through
    :func:`step_outputs`. Put the mixin first among the base classes.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        multi_worker = in_multi_worker_mode(self.distribute_strategy)
        if self.built and self._compile_loss is None and self._compile_metrics is None:
            if (not multi_worker and self.optimizer is not None
                    and not self.optimizer.built):
                with self.distribute_strategy.scope():
                    self.optimizer.build(self.trainable_variables)
            return None
        if multi_worker:
            raise RuntimeError(f"{type(self).__name__} must be built (called once) before "
                               "fit under MultiWorkerMirroredStrategy, with no compiled loss "
                               "or metrics.")
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
