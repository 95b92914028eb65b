"""Autoscaling on one machine: work that needs more nodes than exist adds them; idle ones go.

    pytest tests/integration/test_autoscale.py            # 2-3 minutes on 2 cores

A private Ray cluster with Ray's fake multi-node provider (worker "nodes" are extra raylets on this
machine): head with 0 CPUs like cluster.yaml's, one worker type with 2 CPUs and a custom `accel`
resource (a stand-in for a GPU type), min 0 / max 2, a 6 s idle timeout. The driver runs raylm's
preprocess and a 2-worker TorchTrainer + DeepSpeed run whose workers each ask for `accel`
(`train.resources_per_worker`) strictly spread (`train.placement_strategy`), so the autoscaler
must add two nodes; the run trains to a checkpoint, then the idle nodes must disappear.

Why not `ray.cluster_utils.AutoscalingCluster`: its start() and shutdown() run `ray stop --force`,
which kills every Ray process on the machine (a session `ray.init` fixture's, other people's), it
binds the default ports, and the wheel lacks the example.yaml its constructor reads. This fixture
starts the same thing (`ray start --head --autoscaling-config=...` with RAY_FAKE_CLUSTER=1) on
free ports, its own temp dir and its own process group, and kills only that group.

Coexists with a session-scoped `ray.init` fixture: this process never calls ray.init; the driver
runs in a subprocess. Running it in a process that already holds a Ray session is therefore fine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(sys.platform != "linux", reason="teardown finds processes through /proc"),
]

IDLE_TIMEOUT_MINUTES = 0.1
# The driver: raylm's own preprocess + TorchTrainer run on the fake cluster. Its 2 workers each
# ask for the worker type's `accel` resource, strictly spread, so two nodes must appear.
DRIVER = textwrap.dedent(
    """
    import json, sys, threading, time
    import ray
    from raylm import stages
    from raylm.recipe import load_config

    ray.init(address=sys.argv[1], log_to_driver=False)
    alive = lambda: sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    out = {"nodes_before": len(alive()), "peak_nodes": 0, "timeline": []}
    stop = threading.Event()
    t_start = time.time()

    def watch():
        # Also a timeline of the live node set (seconds, ids' last 6 hex) for a failure's message.
        last = None
        while not stop.is_set():
            ids = alive()
            out["peak_nodes"] = max(out["peak_nodes"], len(ids))
            if ids != last:
                out["timeline"].append([round(time.time() - t_start, 1), [i[-6:] for i in ids]])
                last = ids
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cfg = load_config(sys.argv[2])
    t0 = time.time()
    stages.preprocess(cfg)
    summary = stages.train(cfg)
    out["train_s"] = round(time.time() - t0, 1)
    out["steps"] = max(r["step"] for r in summary["history"])
    out["checkpoint"] = summary["best_checkpoint"]
    stop.set()
    watcher.join()

    t1 = time.time()
    while len(alive()) > 1 and time.time() - t1 < 120:
        time.sleep(1)
    out["scale_down_s"] = round(time.time() - t1, 1)
    out["nodes_after"] = len(alive())
    print("RESULT " + json.dumps(out), flush=True)
    """
)
CONFIG = """\
data:
  source: jsonl
  paths: [{tmp}/corpus.jsonl]
  labels: [neg, pos]
  max_length: 32
  tokenizer: {{vocab_size: 300, min_frequency: 1}}
model: {{task: classification, preset: tiny, hidden_size: 32, num_heads: 2}}
train:
  num_workers: 2
  resources_per_worker: {{accel: 1}}   # only the accel-worker nodes have it
  placement_strategy: STRICT_SPREAD   # one worker per node
  epochs: 1
  max_steps: 6
  batch_size: 16
  log_every: 2
  warmup_ratio: 0.0
  shuffle_buffer: 64
run: {{name: autoscale, output_dir: {tmp}/runs, baseline: false}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_config(gcs_address: str) -> dict:
    # A complete launcher config (what Ray's missing fake_multi_node/example.yaml would provide):
    # the autoscaler reads `auth` and the node types, and nothing may be left to defaults.
    return {
        "cluster_name": "raylm-autoscale-test",
        "max_workers": 2,
        "upscaling_speed": 2.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,  # not the default 6379: other clusters may hold it
            "launch_multiple": True,  # create `count` nodes per request, not one per round
            # All fake nodes share one IP: key load reports by node id, or the autoscaler never
            # sees a worker as idle (nor as alive: it then tries to "recover" it over SSH).
            "use_node_id_as_ip": True,
            # Nothing to SSH into or set up: no updaters, no launch-config drift checks.
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {},
        "docker": {},
        "head_node_type": "ray.head.default",  # the fake provider's fixed name for the head
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "accel-worker": {
                # 2 CPUs: one for the Train worker, one for the Ray Data tasks that feed it.
                "resources": {"CPU": 2, "accel": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except OSError:  # already gone
        return False


def _names(pid: int, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _kill_group(pgid: int, temp_dir: str) -> None:
    """Kill this cluster's process group, then any of its processes that left the group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + 5
        while any(_in_group(p, pgid) for p in _pids()) and time.time() < deadline:
            time.sleep(0.2)
    # Every process of this cluster has its private temp dir on its command line.
    for pid in _pids():
        if pid != os.getpid() and _names(pid, temp_dir):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def fake_cluster():
    from ray._private.services import get_node_ip_address

    from ray_state import ensure_auth_token

    # Short path: Ray's unix sockets live under it and socket paths are limited to ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="raylm-as-", dir="/tmp")
    gcs = f"{get_node_ip_address()}:{_free_port()}"
    config_path = Path(temp_dir) / "autoscaler.json"
    config_path.write_text(json.dumps(_cluster_config(gcs)))
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        f"--port={gcs.rsplit(':', 1)[1]}",
        f"--autoscaling-config={config_path}",
        f"--temp-dir={temp_dir}",
        "--num-cpus=0",
        f"--dashboard-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--ray-client-server-port={_free_port()}",
        "--disable-usage-stats",
    ]
    # Token auth on, as in cluster.yaml; the token is ~/.ray/auth_token (created if missing).
    ensure_auth_token()
    env = dict(
        os.environ, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_AUTH_MODE="token"
    )
    env.pop("RAY_ADDRESS", None)
    # Own session = own process group: everything this cluster starts, fake nodes included,
    # inherits it, so teardown can kill exactly this cluster.
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
        yield {"address": gcs, "temp_dir": temp_dir}
    finally:
        _kill_group(proc.pid, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _monitor_log(temp_dir: str) -> list[str]:
    log = Path(temp_dir) / "session_latest" / "logs" / "monitor.log"
    return log.read_text(errors="replace").splitlines() if log.exists() else ["(no monitor.log)"]


def _autoscaler_log(lines: list[str], tail: int = 60) -> str:
    # Its launches and terminations from the whole run, then the tail.
    events = [ln for ln in lines if re.search(r"Adding \d+ node|Terminat|Launch", ln)]
    return (
        "\n--- autoscaler events (monitor.log) ---\n"
        + "\n".join(events[-40:])
        + "\n--- autoscaler (monitor.log, last lines) ---\n"
        + "\n".join(lines[-tail:])
    )


def _removed_over_max(lines: list[str]) -> int:
    """Nodes the autoscaler launched beyond `max_workers` and then terminated itself."""
    return sum("Terminating the node" in ln and "(max_workers_per_type)" in ln for ln in lines)


def test_training_job_scales_workers_up_then_idle_nodes_go(fake_cluster, tmp_path):
    from raylm.data.synthetic import write_sentiment_corpus

    write_sentiment_corpus(tmp_path / "corpus.jsonl", n=300)
    config = tmp_path / "autoscale.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    # ray.init with an explicit address never turns token auth on by itself: say so.
    env = dict(os.environ, RAY_ADDRESS=fake_cluster["address"], RAY_AUTH_MODE="token")
    t0 = time.time()
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, fake_cluster["address"], str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    monitor = _monitor_log(fake_cluster["temp_dir"])
    (tmp_path / "monitor.log").write_text("\n".join(monitor))  # kept with the test's files
    log = _autoscaler_log(monitor)
    assert run.returncode == 0 and lines, run.stdout[-2000:] + run.stderr[-3000:] + log
    result = json.loads(lines[-1][len("RESULT ") :])
    print(f"autoscale: {result}, driver wall {time.time() - t0:.0f}s")
    over_max = _removed_over_max(monitor)
    print(f"autoscale: {over_max} node(s) launched over the max and removed by the autoscaler")

    assert result["nodes_before"] == 1, log  # just the head: min_workers is 0
    # The autoscaler added two workers (the max) and held no more. Ray's legacy autoscaler may
    # launch one node over the max when demand arrives while an idle node is being terminated (seen
    # here: a preprocessing node goes idle just as the training placement group asks for two); it
    # terminates it as soon as it registers ("max_workers_per_type"). Such nodes are counted apart.
    assert 3 <= result["peak_nodes"] <= 3 + over_max, f"{result['timeline']}{log}"
    assert result["steps"] == 6  # the 2-worker run trained on them (the 0-CPU head cannot)
    assert (Path(result["checkpoint"]) / "hf" / "model.safetensors").is_file()
    assert result["nodes_after"] == 1, f"idle workers still up after {result['scale_down_s']}s{log}"
