"""Connecting to Ray: an embedded local instance or a cluster, and where runs store results."""

from __future__ import annotations

import os
from pathlib import Path

from raylm.config import RunConfig


def ensure_ray(run: RunConfig) -> None:
    """Start (or join) Ray once per process. Embedded Ray binds its dashboard to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    address = run.ray_address or os.environ.get("RAY_ADDRESS")
    # Train V2's placement-group cleanup asks the State API, which lives in the dashboard:
    # keep it on (the default) even for embedded runs (docs/architecture.md, facts checked).
    if address and address != "local":  # join a running cluster: its size is its own
        ray.init(address=address, log_to_driver=True)
    else:  # a new embedded Ray (also RAY_ADDRESS=local): run.num_cpus applies
        ray.init(address=address, num_cpus=run.num_cpus, log_to_driver=True)


def storage_path(run: RunConfig) -> str:
    """Ray Train/Tune storage: the configured URI/path, else `<output_dir>` (absolute)."""
    if run.storage_path:
        if "://" in run.storage_path:
            return run.storage_path
        return str(Path(run.storage_path).resolve())
    return str((Path(run.output_dir) / run.name / "ray").resolve())
