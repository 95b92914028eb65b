"""Connecting to Ray: an embedded local instance or a cluster, and where runs store results."""

from __future__ import annotations

import os
from pathlib import Path

from raylm import console, reaper
from raylm.config import RunConfig, TrainConfig
from raylm.configkit import ConfigError

DASHBOARD_HOST = "127.0.0.1"  # an embedded Ray's dashboard (and its job API) stays on loopback
# Ray Data workers live for many tasks, and Arrow's allocator (mimalloc) kept what each task
# freed: it returns freed pages after a delay that it checks on its next allocation, which an
# idle worker never makes. On a 351k-row preprocess the largest idle worker held 1,034 MiB with
# the delay, 188 MiB without, at the same speed (benchmarks/preprocess.py). For a cluster, set
# it in the workers' environment (cluster.yaml, or the job's runtime_env env_vars).
WORKER_ALLOCATOR_ENV = {"MIMALLOC_PURGE_DELAY": "0"}
# Ray Data's V2 Parquet reader (Ray 2.60's default) provisions a pool of 32 footer-reading
# actors for every read_parquet call: a new process each, so a read of a small split costs
# about 3 s on 2 cores, against 0.15-0.2 s for the V1 reader (800 rows, 8 reads in a row).
# raylm reads many small splits (encoders, training, evaluation), so it uses V1: in this
# process's DataContext (configure_ray_data), and, through the environment, in the workers
# of an embedded Ray (Tune trials create their Datasets there).
WORKER_DATA_ENV = {"RAY_DATA_USE_DATASOURCE_V2": "0"}
_EMBEDDED = False  # whether ensure_ray started this process's Ray itself (no autoscaler)


def embedded() -> bool:
    """Whether this process started its own Ray (of a fixed size: no autoscaler)."""
    return _EMBEDDED


def configure_ray_data() -> None:
    """Ray Data settings for the Datasets this process creates (each copies the context): the
    V1 Parquet reader, and progress and INFO lines as `raylm -q/-v` asks (raylm.console)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.use_datasource_v2 = False  # see WORKER_DATA_ENV
    console.quiet_ray_data(context)


def ensure_ray(run: RunConfig) -> None:
    """Start (or join) Ray once per process. Embedded Ray binds its dashboard to 127.0.0.1."""
    global _EMBEDDED
    import ray

    configure_ray_data()
    if ray.is_initialized():
        return
    address = run.ray_address or os.environ.get("RAY_ADDRESS")
    # Train V2's placement-group cleanup asks the State API, which lives in the dashboard:
    # keep it on (the default) even for embedded runs (docs/architecture.md, facts checked).
    if address and address != "local":  # join a running cluster: its size is its own
        ray.init(address=address, log_to_driver=True)
    else:  # a new embedded Ray (also RAY_ADDRESS=local): run.num_cpus applies
        worker_env = {**WORKER_ALLOCATOR_ENV, **WORKER_DATA_ENV, **console.worker_env()}
        for name, value in worker_env.items():  # its workers inherit this environment
            os.environ.setdefault(name, value)  # a value the user set wins
        ray.init(
            address=address,
            num_cpus=run.num_cpus,
            object_store_memory=run.object_store_mb << 20 if run.object_store_mb else None,
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


def workers_that_fit(
    need: dict[str, float], nodes: list[dict[str, float]], strategy: str = "PACK"
) -> int:
    """How many workers needing `need` each the nodes (their total resources) can hold, placed
    as `train.placement_strategy` asks (STRICT_SPREAD: one a node; STRICT_PACK: all on one)."""
    per_node = [int(min(node.get(k, 0.0) / v for k, v in need.items() if v > 0)) for node in nodes]
    if strategy == "STRICT_SPREAD":
        return sum(min(1, n) for n in per_node)
    if strategy == "STRICT_PACK":
        return max(per_node, default=0)
    return sum(per_node)


class RunFailedError(RuntimeError):
    """A run stopped for a reason its message says in full (the CLI shows it in one line)."""


class WorkersNotStartedError(RunFailedError):
    """A joined cluster had no room for the run's workers within train.startup_timeout_s."""


def _room(train: TrainConfig) -> tuple[int, str]:
    """Workers the live nodes can hold now, and a one-line account of what the run needs."""
    import ray

    need = worker_needs(train)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fit = workers_that_fit(need, nodes, train.placement_strategy)
    have = {k: sum(n.get(k, 0.0) for n in nodes) for k in need}
    return fit, (
        f"train.num_workers={train.num_workers} workers of {need} each "
        f"({train.placement_strategy}) do not fit: the cluster holds {fit} (its nodes have "
        f"{have} in all)"
    )


def preflight(train: TrainConfig, say_every_s: float = 30.0) -> None:
    """Make sure the workers fit before Ray Train places them (it would retry forever).

    An embedded Ray cannot grow: fail at once, in one line. A joined cluster may have an
    autoscaler: reserve the workers' bundles in a placement group of the run's own strategy (the
    autoscaler adds nodes for it exactly as it would for Ray Train's), say what the run waits
    for, and give up after `train.startup_timeout_s` naming it. The reservation is released the
    moment it is granted, for Ray Train's own placement group to take the same room.
    """
    import time

    from ray.util.placement_group import placement_group, remove_placement_group

    fit, msg = _room(train)
    if fit >= train.fewest_workers:  # an elastic run starts on as few as train.min_workers
        return
    if _EMBEDDED:
        raise ConfigError(
            f"{msg}; lower train.num_workers / train.cpus_per_worker or raise run.num_cpus"
        )
    limit = train.startup_timeout_s
    print(
        f"[raylm] warning: {msg}; waiting up to {limit:g} s (train.startup_timeout_s) for the "
        "autoscaler to add nodes",
        flush=True,
    )
    bundles = [worker_needs(train)] * train.fewest_workers
    group = placement_group(bundles, strategy=train.placement_strategy)
    start = time.monotonic()
    try:
        while not group.wait(timeout_seconds=min(say_every_s, limit - (time.monotonic() - start))):
            waited = time.monotonic() - start
            if waited >= limit - 1e-3:
                raise WorkersNotStartedError(
                    f"{_room(train)[1]} after waiting {waited:.0f} s (train.startup_timeout_s="
                    f"{limit:g}): no autoscaler added room for them in time"
                )
            print(f"[raylm] still waiting ({waited:.0f} s): {_room(train)[1]}", flush=True)
    finally:
        remove_placement_group(group)
    print(f"[raylm] room for the workers after {time.monotonic() - start:.0f} s", flush=True)


def storage_path(run: RunConfig) -> str:
    """Ray Train/Tune storage: the configured URI/path, else `<output_dir>` (absolute)."""
    if run.storage_path:
        if "://" in run.storage_path:
            return run.storage_path
        return str(Path(run.storage_path).resolve())
    return str((Path(run.output_dir) / run.name / "ray").resolve())
