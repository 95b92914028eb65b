"""Preemption: a node of a running job drained with Ray's preemption notice (as the autoscaler
does for a spot reclaim) on a real multi-node Ray: head + 3 one-CPU nodes, on this machine.

    python -m pytest tests/chaos/test_preemption.py -q       # about 2 minutes on 2 cores

Every rank saves its ZeRO shards as soon as it hears of the notice, the run is torn down at the
deadline, restarts on the nodes left and resumes from that checkpoint, and its data ledger shows
no example trained on twice or skipped.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from raylm import stages
from raylm.config import dump_config
from raylm.data.synthetic import sentiment_recipe, write_sentiment_corpus
from raylm.recipe import config_from_dict
from raylm.tasks import get_task
from raylm.train.checkpoint import checkpoint_root
from raylm.train.ledger import example_ids, read_ledgers
from raylm.train.manifest import check_checkpoint
from serve_models import free_port  # tests/serve_models.py

pytestmark = pytest.mark.integration

DEADLINE_S = 5  # the notice's deadline: Ray Train tears the group down when it passes
MAX_STEPS = 300


def _cfg(tmp: Path, name: str, **train):
    raw = sentiment_recipe(tmp, name, **{"lr": 2e-3, "shuffle_buffer": 0, **train})
    return config_from_dict(raw)


@pytest.fixture
def cluster(monkeypatch):
    """A head without training room and three nodes of one `trainer` slot each: two hold the
    workers, the third is where the group moves when one of theirs is reclaimed."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "0.5")  # Ray's default: 5 s
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": True,  # Ray Train asks its State API
            "dashboard_host": "127.0.0.1",
            "dashboard_port": free_port(),  # the session's Ray holds the default
        },
    )
    nodes = [cluster.add_node(num_cpus=1, resources={"trainer": 1}) for _ in range(3)]
    try:
        yield cluster, nodes
    finally:
        cluster.shutdown()


class Output:
    """A driver's stdout, read line by line in the background."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self.arrived: list[float] = []  # time.monotonic() of each line
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.arrived.append(time.monotonic())
            self.lines.append(line.rstrip("\n"))

    def find(self, pattern: str) -> list[re.Match]:
        return [m for line in list(self.lines) if (m := re.search(pattern, line))]

    def wait_for(self, pattern: str, within_s: float) -> re.Match:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if found := self.find(pattern):
                return found[0]
            time.sleep(0.2)
        tail = "\n".join(self.lines[-30:])
        raise AssertionError(f"no line matched {pattern!r} within {within_s} s:\n{tail}")


def _worker_nodes(address: str) -> dict[int, str]:
    """Node id of each live training worker, by pid."""
    from ray.util.state import list_actors

    filters = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
    return {a.pid: a.node_id for a in list_actors(address=address, filters=filters)}


def test_a_preempted_node_gets_every_ranks_shards_saved_and_the_run_resumes_there(
    tmp_path, ray_session, cluster
):
    ray_cluster, nodes = cluster
    write_sentiment_corpus(tmp_path / "corpus.jsonl", n=1200, seed=3)
    # Batch 1 on each of 2 workers (15-50 ms a step), 300 steps: no periodic checkpoint before
    # the last step, so the only one a restart can resume from is the preemption checkpoint.
    run = {"num_workers": 2, "zero_stage": 2, "batch_size": 1, "log_every": 5}
    cfg = _cfg(
        tmp_path,
        "spot",
        **run,
        max_steps=MAX_STEPS,
        resources_per_worker={"trainer": 1},
        keep_checkpoints=10,
    )
    stages.preprocess(cfg)  # on the session's Ray; the run below joins the cluster
    cfg.run.ray_address = ray_cluster.address
    dump_config(cfg, tmp_path / "spot.yaml")
    driver = subprocess.Popen(
        [sys.executable, "-m", "raylm.cli", "train", str(tmp_path / "spot.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Output(driver)
    try:
        total = int(out.wait_for(r"step \d+/(\d+) loss", 180).group(1))
        workers = _worker_nodes(ray_cluster.address)
        assert len(workers) == 2, workers
        reclaimed = sorted(workers.values())[0]
        subprocess.run(
            [
                *(
                    str(Path(sys.executable).parent / "ray"),
                    "drain-node",
                    "--address",
                    ray_cluster.address,
                ),
                *("--node-id", reclaimed, "--reason", "DRAIN_NODE_REASON_PREEMPTION"),
                *("--reason-message", "spot instance reclaimed (test)"),
                *("--deadline-remaining-seconds", str(DEADLINE_S)),
            ],
            check=True,
            capture_output=True,
        )
        noticed = time.monotonic()
        saved = int(out.wait_for(r"saves its shards at step (\d+)", 30).group(1))
        time.sleep(max(0.0, DEADLINE_S + 2 - (time.monotonic() - noticed)))
        # What the cloud does at the deadline: the node is gone.
        (node,) = [n for n in nodes if n.node_id == reclaimed]
        ray_cluster.remove_node(node)
        assert driver.wait(timeout=240) == 0, "\n".join(out.lines[-40:])
    finally:
        if driver.poll() is None:
            driver.kill()
        (tmp_path / "driver.log").write_text("\n".join(out.lines))  # for a failure's reader
    run_dir = tmp_path / "runs" / "spot"
    root = checkpoint_root(run_dir)

    # The preemption checkpoint holds every rank's part: manifests and ZeRO optimizer shards.
    folder = root / f"checkpoint_step{saved:07d}"
    assert check_checkpoint(folder).ok, check_checkpoint(folder)
    shards = sorted(p.name for p in (folder / "ds").rglob("*optim_states.pt"))
    assert len(shards) == 2 and any("rank_1" in s for s in shards), shards
    assert json.loads((folder / "state.json").read_text())["preemptions"] == 1

    # The restarted group ran on the nodes left and resumed from exactly that checkpoint.
    assert out.find(rf"resumed from step {saved} \(epoch 1, micro-batch {saved}\)"), out.lines
    assert not out.find(r"checkpoint .* skipped")
    assert reclaimed not in _worker_nodes(ray_cluster.address).values()
    newest = max(root.glob("checkpoint_step*"), key=lambda p: p.name)
    state = json.loads((newest / "state.json").read_text())
    assert state["step"] == MAX_STEPS and state["resumes"] == 1 and state["preemptions"] == 1
    restart = next(i for i, line in enumerate(out.lines) if "resumed from step" in line)
    logged = [re.search(rf"step (\d+)/{total} loss", line) for line in out.lines]
    before, after = (
        [int(m.group(1)) for m in part if m] for part in (logged[:restart], logged[restart:])
    )
    took = out.arrived[restart] - noticed
    print(f"preemption: saved at step {saved}, resumed {took:.1f} s after the drain notice")
    # Nothing trained after the preemption checkpoint: the ranks waited for the teardown.
    assert before[-1] == saved and after[0] == saved + 5, (before, after)
    assert after[-1] == MAX_STEPS, after

    # The ledger: each rank trained on a run of its part of the split (cut in order, read in
    # order with no shuffle buffer), one example a step, none twice, none skipped.
    ledgers = read_ledgers(newest)
    task_ds = get_task("classification").datasets(cfg, cfg.run.data_path)["train"]
    task_ds.context.execution_options.preserve_order = True
    order = np.concatenate(
        [example_ids(b) for b in task_ds.iter_batches(batch_format="numpy", batch_size=None)]
    )
    where = {int(x): i for i, x in enumerate(order)}
    for rank, by_epoch in ledgers.items():
        ids = by_epoch[0]
        assert len(ids) == MAX_STEPS, (rank, len(ids))
        at = np.array([where[int(x)] for x in ids])  # KeyError: not in the split
        assert (np.diff(at) == 1).all(), f"rank {rank}: examples twice or skipped at {at}"
