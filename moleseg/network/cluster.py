"""Multi-worker training helpers: the worker's role from ``TF_CONFIG``, ``TF_CONFIG`` from a worker list,
each worker's shard of an epoch, and values broadcast from the chief.

Keras 3's ``fit`` does not run under ``tf.distribute.MultiWorkerMirroredStrategy`` (keras-team/keras#20585,
tensorflow/tensorflow#72388: it dies at the first step with "Attempt to convert a value (PerReplica:…"),
so :mod:`moleseg.network.train` drives the step itself with ``strategy.run`` when several workers train.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

#: Environment variable naming a folder where each worker writes the training examples it consumed per
#: epoch (``worker<I>-seen.tsv``) and its final weights (``worker<I>-weights.npz``): a debugging aid, also
#: used by the tests to check that no image is seen twice in an epoch and that the workers agree.
WORKER_DEBUG_ENV = "MOLESEG_WORKER_DEBUG"


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a training cluster (index 0 of ``workers`` when there is no cluster)."""

    index: int = 0
    count: int = 1
    chief: bool = True

    @property
    def distributed(self) -> bool:
        return self.count > 1


def role_from_tf_config(tf_config: str | None) -> WorkerRole:
    """The role ``TF_CONFIG`` describes: the ``chief`` task, or worker 0 when the cluster has no chief.

    Raises
    ------
    ValueError
        When ``TF_CONFIG`` is not JSON or names no task.
    """
    if not tf_config:
        return WorkerRole()
    try:
        values = json.loads(tf_config)
        cluster: Mapping[str, Sequence[str]] = values.get("cluster", {})
        task = values["task"]
        task_type, task_index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not a cluster description ({error}): {tf_config}") from error
    has_chief = bool(cluster.get("chief"))
    count = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if task_type == "chief":
        return WorkerRole(index=0, count=count, chief=True)
    index = task_index + (1 if has_chief else 0)
    return WorkerRole(index=index, count=count, chief=(not has_chief and task_index == 0))


def current_role() -> WorkerRole:
    """The role of this process, from the ``TF_CONFIG`` environment variable."""
    return role_from_tf_config(os.environ.get("TF_CONFIG"))


def tf_config_for(workers: Sequence[str], index: int) -> str:
    """``TF_CONFIG`` for worker ``index`` (0 is the chief) of ``workers`` (``HOST:PORT`` each).

    Raises
    ------
    ValueError
        When an address is not ``HOST:PORT`` or the index is out of range.
    """
    addresses = [w.strip() for w in workers if w.strip()]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"worker address must be HOST:PORT, not {address!r}")
    if len(addresses) < 2:
        raise ValueError("give at least two workers (HOST:PORT,HOST:PORT)")
    if not 0 <= index < len(addresses):
        raise ValueError(f"worker index must be 0..{len(addresses) - 1}, not {index}")
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def epoch_shard(counts: Sequence[int], *, epoch: int, seed: int, role: WorkerRole) -> np.ndarray:
    """Indices of the pairs this worker reads in ``epoch``: a seeded permutation of every example of the
    epoch (pair ``i`` repeated ``counts[i]`` times), split round-robin by worker index and cut to the
    same length on every worker (at most ``workers - 1`` examples of an epoch are left out, different
    ones each epoch), so every worker runs the same number of steps and no example is read twice.
    """
    examples = np.repeat(np.arange(len(counts), dtype=np.int64), np.asarray(counts, dtype=np.int64))
    order = np.random.default_rng([seed, epoch]).permutation(examples)
    each = len(order) // role.count
    return order[role.index::role.count][:each]


def write_seen(folder: str | Path, role: WorkerRole, epoch: int, names: Sequence[str]) -> None:
    """Append this worker's consumed examples of ``epoch`` to ``<folder>/worker<I>-seen.tsv``."""
    path = Path(folder) / f"worker{role.index}-seen.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as stream:
        stream.writelines(f"{epoch}\t{role.index}\t{name}\n" for name in names)


def broadcast_from_chief(strategy, values: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``values`` as the chief holds them, on every worker (one all-reduce of a float32 vector).

    Every worker must call this with arrays of the same shapes; the chief holds global replica 0.
    """
    import tensorflow as tf

    shapes = [np.shape(v) for v in values]
    dtypes = [np.asarray(v).dtype for v in values]
    flat = np.concatenate([np.asarray(v, np.float32).ravel() for v in values]) if values else np.zeros(0, np.float32)
    zeros = np.zeros_like(flat)

    def contribution(context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
        return tf.constant(flat if context.replica_id_in_sync_group == 0 else zeros)

    per_replica = strategy.experimental_distribute_values_from_function(contribution)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()
    return _split(total, shapes, dtypes)


def _split(flat: np.ndarray, shapes: Sequence[tuple], dtypes: Sequence[np.dtype]) -> list[np.ndarray]:
    """The arrays of ``shapes`` and ``dtypes`` laid end to end in the vector ``flat`` (the inverse of
    concatenating their ravelled values)."""
    out, start = [], 0
    for shape, dtype in zip(shapes, dtypes):
        size = int(np.prod(shape))
        out.append(flat[start:start + size].reshape(shape).astype(dtype))
        start += size
    return out


def average_over_workers(strategy, values: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The mean of ``values`` over every replica of the cluster (one all-reduce of a float32 vector): used
    for the BatchNorm moving statistics, which each worker updates from its own batches only."""
    import tensorflow as tf

    shapes = [np.shape(v) for v in values]
    dtypes = [np.asarray(v).dtype for v in values]
    flat = np.concatenate([np.asarray(v, np.float32).ravel() for v in values]) if values else np.zeros(0, np.float32)
    per_replica = strategy.experimental_distribute_values_from_function(lambda context: tf.constant(flat))
    total = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None).numpy()
    return _split(total, shapes, dtypes)
