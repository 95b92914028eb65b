"""Spot nodes on a real multi-node Ray (a head without training room and one-slot `trainer`
nodes, on this machine), one run of `train.num_workers: [1, 2]`, ZeRO-2, through three faults:

1. a worker's node is lost without notice: the run goes on with one worker from its latest
   checkpoint, the ZeRO state of two ranks resharded onto one (DeepSpeed's universal checkpoint);
2. a node joins: the group grows back to two, one rank's state resharded onto two;
3. a node is drained with Ray's preemption notice (as the autoscaler does for a spot reclaim):
   every rank saves its ZeRO shards at once, the group is torn down at the deadline and goes on
   with the one worker left from exactly that checkpoint, no step lost.

    python -m pytest tests/chaos/test_spot_nodes.py -q       # about 3 minutes on 2 cores

The global batch and the examples of every step stay those of the two-worker run
(raylm.train.elastic), so the steps trained again after a restart repeat the losses logged
before it; the data ledger shows every example of each epoch trained on once.
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

# The run is stopped once it has shown everything; the one-worker group must not finish before
# Ray Train sees the joined node (up to 20-40 s on this machine), hence the many epochs.
EVERY, EPOCHS = 40, 6
DEADLINE_S = 5  # the preemption notice's deadline: Ray Train tears the group down when it passes


@pytest.fixture
def cluster(monkeypatch):
    """A head without training room and two nodes of one `trainer` slot each."""
    from ray.cluster_utils import Cluster

    # The controller polls the workers (and so registers a reported checkpoint) every 2 s by
    # default; a restart that still sees the removed node's slot waits this long for 2 workers
    # before it tries 1 (Ray's default: 60 s).
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    monkeypatch.setenv("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "0.5")  # Ray's default: 5 s
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "5")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": True,  # Ray Train asks its State API
            "dashboard_host": "127.0.0.1",
            "dashboard_port": free_port(),  # the session's Ray holds the default
        },
    )
    nodes = [cluster.add_node(num_cpus=1, resources={"trainer": 1}) for _ in range(2)]
    try:
        yield cluster, nodes
    finally:
        cluster.shutdown()


class Output:
    """A driver's stdout, read line by line in the background."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
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


def _drain(address: str, node_id: str) -> None:
    """What the autoscaler does when the cloud says a spot node will be reclaimed."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    subprocess.run(
        [ray_cli, "drain-node", "--address", address, "--node-id", node_id,
         "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaim (test)",
         "--deadline-remaining-seconds", str(DEADLINE_S)],
        check=True,
        capture_output=True,
    )  # fmt: skip


def _registered(root: Path) -> set[int]:
    """Steps of the checkpoints Ray Train has registered (a restart resumes from these)."""
    snapshot = root / "checkpoint_manager_snapshot.json"
    try:
        results = json.loads(snapshot.read_text())["checkpoint_results"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return set()
    return {int(r["metrics"]["step"]) for r in results}


def _wait(what, within_s: float, out: Output):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if found := what():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(out.lines[-30:]))


def _line_after(out: Output, pattern: str, since: int, within_s: float) -> int:
    """Index of the first line from `since` on that matches."""
    found = lambda: next(  # noqa: E731
        (i for i in range(since, len(out.lines)) if re.search(pattern, out.lines[i])), None
    )
    return _wait(lambda: (i := found()) is not None and i + 1, within_s, out) - 1


def _losses(lines: list[str], total: int) -> dict[int, str]:
    return {
        int(m.group(1)): m.group(2)
        for line in lines
        if (m := re.search(rf"step (\d+)/{total} loss (\S+)", line))
    }


def test_a_run_on_spot_nodes_shrinks_grows_and_survives_a_preemption(
    tmp_path, ray_session, cluster
):
    ray_cluster, nodes = cluster
    write_sentiment_corpus(tmp_path / "corpus.jsonl", n=2400, seed=3)
    raw = sentiment_recipe(
        tmp_path,
        "elastic",
        lr=3e-5,  # the synthetic reviews are easy: a loss well above 0 shows differences
        shuffle_buffer=0,
        num_workers=[1, 2],
        zero_stage=2,
        batch_size=8,
        log_every=5,
        eval_every=EVERY,
        epochs=EPOCHS,
        resources_per_worker={"trainer": 1},
        keep_checkpoints=20,
        max_failures=2,
        elastic_resize_s=2,
    )
    # No dropout: a step's loss then depends on its examples and weights alone, on any ranks.
    raw["model"].update(hidden_size=256, dropout=0.0)
    cfg = config_from_dict(raw)
    stages.preprocess(cfg)  # on the session's Ray; the run below joins the cluster
    cfg.run.ray_address = ray_cluster.address
    dump_config(cfg, tmp_path / "elastic.yaml")
    root = checkpoint_root(tmp_path / "runs" / "elastic")
    driver = subprocess.Popen(
        [sys.executable, "-m", "raylm.cli", "train", str(tmp_path / "elastic.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Output(driver)
    try:
        total = int(out.wait_for(r"step \d+/(\d+) loss", 180).group(1))
        # 2 -> 1: a worker's node goes for good, after a checkpoint and a few steps past it.
        _wait(lambda: EVERY in _registered(root), 120, out)
        out.wait_for(rf"step {EVERY + 5}/{total} loss", 30)
        since = len(out.lines)
        ray_cluster.remove_node(nodes[1])
        lost = time.monotonic()
        shrink = _line_after(out, r"elastic: 1 worker\(s\), 2 micro-batch", since, 120)
        shrunk = time.monotonic()
        # 1 -> 2: a node joins once the one-worker group has a checkpoint. Ray Train sees the
        # node within Ray Data's autoscaling coordinator's tick (20 s) plus
        # train.elastic_resize_s, and restarts the group on two workers from its latest
        # checkpoint (one rank's ZeRO state, resharded onto two).
        _wait(lambda: max(_registered(root)) > EVERY, 120, out)
        since = len(out.lines)
        joined_node = ray_cluster.add_node(num_cpus=1, resources={"trainer": 1})
        joined = time.monotonic()
        grow = _line_after(out, r"elastic: 2 worker\(s\), 1 micro-batch", since, 120)
        grown = time.monotonic()
        # 2 -> 1 again: the joined node is reclaimed with notice, and no node replaces it.
        _line_after(out, rf"step \d+/{total} loss", grow, 60)
        since = len(out.lines)
        _drain(ray_cluster.address, joined_node.node_id)
        noticed = time.monotonic()
        at = _line_after(out, r"saves its shards at step (\d+)", since, 60)
        saved = int(re.search(r"saves its shards at step (\d+)", out.lines[at]).group(1))
        time.sleep(max(0.0, DEADLINE_S + 2 - (time.monotonic() - noticed)))
        ray_cluster.remove_node(joined_node)  # what the cloud does at the deadline
        preempt = _line_after(out, r"elastic: 1 worker\(s\), 2 micro-batch", at, 120)
        back = time.monotonic()
        # The run has shown what it must once the one worker left has saved a checkpoint (not
        # an epoch's end: that one carries no epoch in progress): it is stopped there.
        last = _wait(
            lambda: max((s for s in _registered(root) if s > saved and s % EVERY == 0), default=0),
            120,
            out,
        )
        driver.terminate()
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
        (tmp_path / "driver.log").write_text("\n".join(out.lines))  # for a failure's reader
    lines = out.lines
    print(
        f"spot: 2 -> 1 in {shrunk - lost:.1f} s, 1 -> 2 in {grown - joined:.1f} s, preempted "
        f"at step {saved}, going on {back - noticed:.1f} s after the notice"
    )

    # Each restart resumed from the latest registered checkpoint, resharding its ZeRO state.
    resumes = [int(m.group(1)) for m in out.find(r"resumed from step (\d+)")]
    assert resumes[0] == EVERY and resumes[1] > EVERY and resumes[2] == saved, resumes
    assert len(out.find(r"resharded the ZeRO state of 2 rank\(s\) onto 1")) == 2
    assert len(out.find(r"resharded the ZeRO state of 1 rank\(s\) onto 2")) == 1
    one = root / f"checkpoint_step{resumes[1]:07d}"  # saved by the one-worker group
    assert len(list((one / "ds").rglob("*optim_states.pt"))) == 1
    newest = root / f"checkpoint_step{last:07d}"
    assert len(list((newest / "ds").rglob("*optim_states.pt"))) == 1  # the one worker left
    state = json.loads((newest / "state.json").read_text())
    assert state["step"] == last and state["resumes"] == 3 and state["preemptions"] == 1

    # The preemption checkpoint holds every rank's part (manifests, both ZeRO optimizer shards),
    # and nothing was trained after it: the ranks waited for the teardown, no step lost.
    folder = root / f"checkpoint_step{saved:07d}"
    assert check_checkpoint(folder).ok, check_checkpoint(folder)
    assert len(list((folder / "ds").rglob("*optim_states.pt"))) == 2
    assert json.loads((folder / "state.json").read_text())["preemptions"] == 1
    third, fourth = _losses(lines[grow:preempt], total), _losses(lines[preempt:], total)
    assert max(third) == saved and min(fourth) == saved + 5, (sorted(third), sorted(fourth))

    # The loss curve is unbroken: the steps trained again after each restart, on the other
    # worker count, repeat the losses logged before it (same examples, same global batch).
    # Phases split at each new group's first line. The kill came 5 steps past a checkpoint, so
    # the first restart trains steps again; when the resize lands is Ray's choice, so the
    # second may not (steps lost: none).
    phases = [lines[:shrink], lines[shrink:grow], lines[grow:preempt]]
    first, second, third = (_losses(p, total) for p in phases)
    for before, after, start in ((first, second, resumes[0]), (second, third, resumes[1])):
        again = sorted(s for s in before if s > start and s in after)
        assert again or start == resumes[1], (start, before, after)
        for s in again:
            assert abs(float(before[s]) - float(after[s])) <= 2e-4, (s, before[s], after[s])
    print(f"steps trained again: {len([s for s in first if s > resumes[0]])} and "
          f"{len([s for s in second if s > resumes[1]])} log intervals")  # fmt: skip

    # The ledger: the ranks' ledgers together hold each example of the epoch once: the last
    # complete epoch all of both parts, the one in progress the micro-batches of its steps so
    # far, from the front of each part.
    ds = get_task("classification").datasets(cfg, cfg.run.data_path)["train"]
    ds.context.execution_options.preserve_order = True
    order = np.concatenate(
        [example_ids(b) for b in ds.iter_batches(batch_format="numpy", batch_size=None)]
    )
    half = len(order) // 2  # the two fixed parts, cut in order (split(2, equal=True))
    parts = [order[:half], order[half:2 * half]]  # fmt: skip
    per_epoch = -(-half // 8)  # micro-batches of a part (batch 8)
    assert last % per_epoch, "the newest checkpoint is an epoch's end: no epoch in progress"
    ledgers = read_ledgers(newest)
    now, done = divmod(last, per_epoch)  # the epoch in progress, its steps so far
    seen = {e: np.sort(np.concatenate([r[e] for r in ledgers.values()])) for e in (now - 1, now)}
    assert np.array_equal(seen[now - 1], np.sort(np.concatenate(parts)))
    assert np.array_equal(seen[now], np.sort(np.concatenate([p[: done * 8] for p in parts])))
