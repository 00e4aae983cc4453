"""Multi-worker training: two ``moleseg train`` processes on 127.0.0.1 train one model together
(``MultiWorkerMirroredStrategy`` driven by moleseg's own step), each reading its own shard of the files;
the chief alone writes the run folder; a killed pair of workers resumes from the chief's checkpoint.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from synthetic import lesion_dataset
from moleseg.engine.runs import read_history, read_json
from moleseg.network.cluster import WORKER_DEBUG_ENV, epoch_shard, role_from_tf_config, tf_config_for, WorkerRole

PROJECT = Path(__file__).resolve().parents[1]
SIZE = 64


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(tmp_path: Path, images: Path, masks: Path, *, epochs: int, resume: bool = False,
                  debug: str = "debug") -> list[subprocess.Popen]:
    """Two ``moleseg train`` workers into ``tmp_path/w0`` (the chief) and ``tmp_path/w1``, writing their
    debugging files (consumed examples, final weights) into ``tmp_path/debug``."""
    workers = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    processes = []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": str(PROJECT), "TF_CPP_MIN_LOG_LEVEL": "2",
               "MOLESEG_CACHE": str(tmp_path / f"cache{index}"), WORKER_DEBUG_ENV: str(tmp_path / debug)}
        env.pop("TF_CONFIG", None)
        # sgdm: the cluster's step is the same for any solver, and sgdm's update is cheaper to trace than adam's
        command = [sys.executable, "-m", "moleseg.cli", "train", "--images", str(images), "--masks", str(masks),
                   "--out", str(tmp_path / f"w{index}"), "--backbone", "resnet18", "--decoder-width", "16",
                   "--weights", "none", "--no-calibrate", "--solver", "sgdm", "--epochs", str(epochs), "--batch-size", "4",
                   "--image-size", str(SIZE), "--quiet", "--validation-split", "0.25", "--workers", workers,
                   "--worker-index", str(index)]
        if resume:
            command.append("--resume")
        log = (tmp_path / f"worker{index}.log").open("a")
        processes.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT))
    return processes


def wait_all(processes: list[subprocess.Popen], seconds: float) -> list[int]:
    """The exit codes of ``processes``; those still running after ``seconds`` are killed."""
    deadline = time.monotonic() + seconds
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


def worker_logs(tmp_path: Path) -> str:
    return "\n".join((tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2))


def test_roles_and_tf_config():
    config = tf_config_for(["a:1", "b:2"], 1)
    assert json.loads(config)["task"] == {"type": "worker", "index": 1}
    assert role_from_tf_config(config) == WorkerRole(index=1, count=2, chief=False)
    assert role_from_tf_config(tf_config_for(["a:1", "b:2"], 0)).chief
    assert role_from_tf_config(None) == WorkerRole()
    with pytest.raises(ValueError, match="HOST:PORT"):
        tf_config_for(["a", "b:2"], 0)
    with pytest.raises(ValueError, match="0..1"):
        tf_config_for(["a:1", "b:2"], 2)


def test_epoch_shards_are_disjoint_equal_and_change_every_epoch():
    counts = [1] * 7
    shards = [epoch_shard(counts, epoch=0, seed=3, role=WorkerRole(i, 2, i == 0)) for i in range(2)]
    assert [len(s) for s in shards] == [3, 3]
    assert not set(shards[0]) & set(shards[1])
    assert not np.array_equal(epoch_shard(counts, epoch=1, seed=3, role=WorkerRole(0, 2, True)), shards[0])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_workers_resume_from_the_chiefs_checkpoint(tmp_path, time_left):
    """Two workers killed after an epoch resume from the chief's checkpoint and finish; the resumed pair
    trains one model (the same weights on both, each epoch's images split between them, the chief alone
    keeping a run folder)."""
    images, masks = lesion_dataset(tmp_path / "data", n=8, size=SIZE, vary=True)
    processes = start_workers(tmp_path, images, masks, epochs=3)
    deadline = time.monotonic() + time_left()
    state_file = tmp_path / "w0" / "state.json"
    while (read_json(state_file, {}) or {}).get("epoch", 0) < 1 and time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), worker_logs(tmp_path)
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGKILL)  # a worker dies; the chief cannot go on alone
    processes[0].send_signal(signal.SIGKILL)
    wait_all(processes, time_left())
    done = read_json(state_file)["epoch"]
    assert 1 <= done < 3
    # the resumed pair writes its debugging files apart from the killed pair's (which saw part of an epoch)
    codes = wait_all(start_workers(tmp_path, images, masks, epochs=3, resume=True, debug="resumed"), time_left())
    assert codes == [0, 0], worker_logs(tmp_path)
    chief = tmp_path / "w0"
    assert f"resuming after epoch {done}" in (chief / "log.txt").read_text()
    assert [row["epoch"] for row in read_history(chief / "history.csv")] == [1, 2, 3]
    assert read_json(state_file)["status"] == "done"

    # the two workers trained one model: the chief alone keeps a run folder, both end with the same weights
    for name in ("model.keras", "history.csv", "config.json", "last.keras", "state.json"):
        assert (chief / name).is_file(), name
    assert not (tmp_path / "w1").exists()  # the other worker removes its own folder, the killed one's too
    assert "with 2 replicas" in (chief / "log.txt").read_text()
    weights = [np.load(tmp_path / "resumed" / f"worker{i}-weights.npz") for i in range(2)]
    assert len(weights[0].files) == len(weights[1].files) > 100
    for name in weights[0].files:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])
    seen = collections.Counter()
    for index in range(2):
        for line in (tmp_path / "resumed" / f"worker{index}-seen.tsv").read_text().splitlines():
            epoch, worker, name = line.split("\t")
            seen[(epoch, name)] += 1
    assert seen and max(seen.values()) == 1  # no image read twice in one epoch, across both workers
    assert {epoch for epoch, _ in seen} == {str(epoch) for epoch in range(done + 1, 4)}
    assert sum(1 for epoch, _ in seen if epoch == "3") == 6  # 6 training pairs, 3 per worker
