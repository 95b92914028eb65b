"""Connecting to Ray: an embedded local instance or a cluster, and where runs store results."""

from __future__ import annotations

import os
from pathlib import Path

from raylm import reaper
from raylm.config import RunConfig, TrainConfig
from raylm.configkit import ConfigError

DASHBOARD_HOST = "127.0.0.1"  # an embedded Ray's dashboard (and its job API) stays on loopback
_EMBEDDED = False  # whether ensure_ray started this process's Ray itself (no autoscaler)


def ensure_ray(run: RunConfig) -> None:
    """Start (or join) Ray once per process. Embedded Ray binds its dashboard to 127.0.0.1."""
    global _EMBEDDED
    import ray

    if ray.is_initialized():
        return
    address = run.ray_address or os.environ.get("RAY_ADDRESS")
    # Train V2's placement-group cleanup asks the State API, which lives in the dashboard:
    # keep it on (the default) even for embedded runs (docs/architecture.md, facts checked).
    if address and address != "local":  # join a running cluster: its size is its own
        ray.init(address=address, log_to_driver=True)
    else:  # a new embedded Ray (also RAY_ADDRESS=local): run.num_cpus applies
        ray.init(
            address=address,
            num_cpus=run.num_cpus,
            dashboard_host=DASHBOARD_HOST,
            log_to_driver=True,
        )
        _EMBEDDED = True
        reaper.start(os.getpid())  # no Ray process outlives this driver, even if SIGKILLed


def worker_needs(train: TrainConfig) -> dict[str, float]:
    """Ray resources one training worker reserves."""
    need = {"CPU": train.cpus_per_worker, **train.resources_per_worker}
    if train.use_gpu:
        need["GPU"] = 1.0
    return need


def workers_that_fit(need: dict[str, float], nodes: list[dict[str, float]]) -> int:
    """How many workers needing `need` each the nodes (their total resources) can hold."""
    return sum(int(min(node.get(k, 0.0) / v for k, v in need.items() if v > 0)) for node in nodes)


def preflight(train: TrainConfig) -> None:
    """Fail at once, in one line, when the workers cannot fit: Ray Train would otherwise retry
    forever. On a cluster that Ray was joined to, an autoscaler may add nodes: say what the run
    waits for instead."""
    import ray

    need = worker_needs(train)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fit = workers_that_fit(need, nodes)
    if fit >= train.num_workers:
        return
    have = {k: sum(n.get(k, 0.0) for n in nodes) for k in need}
    msg = (
        f"train.num_workers={train.num_workers} workers of {need} each do not fit: the "
        f"cluster holds {fit} (its nodes have {have} in all)"
    )
    if _EMBEDDED:
        raise ConfigError(
            f"{msg}; lower train.num_workers / train.cpus_per_worker or raise run.num_cpus"
        )
    print(f"[raylm] warning: {msg}; waiting for the autoscaler to add nodes", flush=True)


def storage_path(run: RunConfig) -> str:
    """Ray Train/Tune storage: the configured URI/path, else `<output_dir>` (absolute)."""
    if run.storage_path:
        if "://" in run.storage_path:
            return run.storage_path
        return str(Path(run.storage_path).resolve())
    return str((Path(run.output_dir) / run.name / "ray").resolve())
