"""What `raylm submit|status|logs|stop|list` do: call raylm.jobs.submit, print for a person.

    raylm submit train examples/sentiment_zh.yaml --set train.num_workers=4 --follow
    raylm status|logs|stop JOB_ID        raylm logs JOB_ID --follow        raylm list

Every function raises SubmitError, ConfigError or FileNotFoundError with a message fit to show
as is (the typer commands print it and exit non-zero); nothing here calls sys.exit. The address
is --address, else $RAY_ADDRESS, else http://127.0.0.1:8265 (the dashboard port, not 6379).
"""

from __future__ import annotations

import time
from typing import Any

from raylm.jobs.submit import (
    SubmitError,
    job_info,
    job_logs,
    list_jobs,
    resolve_address,
    stop_job,
    submit_job,
)

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _out(text: str = "", end: str = "\n") -> None:
    print(text, end=end, flush=True)


def _when(ts_ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts_ms / 1000)) if ts_ms else "-"


def _took(row: dict[str, Any]) -> str:
    start, end = row.get("start_time"), row.get("end_time")
    if not start:
        return "-"
    seconds = ((end or time.time() * 1000) - start) / 1000
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}min"


def _follow(job_id: str, address: str | None) -> str:
    """Stream the log until the job ends; return its final status, raise if it did not succeed."""
    for chunk in job_logs(job_id, address, follow=True):
        _out(chunk, end="")
    row = job_info(job_id, address)
    for _ in range(20):  # the log stream can close a moment before the status turns final
        if row["status"] in TERMINAL:
            break
        time.sleep(0.5)
        row = job_info(job_id, address)
    if row["status"] != "SUCCEEDED":
        raise SubmitError(f"job {job_id} {row['status']}: {row.get('message') or 'no message'}")
    _out(f"job {job_id} SUCCEEDED in {_took(row)}")
    return row["status"]


def submit_command(
    job: str,
    config: str,
    address: str | None = None,
    overrides: list[str] | None = None,
    num_cpus: float = 0,
    num_gpus: float = 0,
    follow: bool = False,
    job_args: list[str] | None = None,
) -> str:
    """Validate, upload the current dir, start ray_jobs/<job>.py; print how to follow it."""
    url = resolve_address(address)
    job_id = submit_job(
        job, config, address=url, overrides=overrides, num_cpus=num_cpus, num_gpus=num_gpus,
        job_args=job_args,
    )  # fmt: skip
    flag = f" --address {address}" if address else ""
    _out(f"submitted {job_id} to {url}")
    if not follow:
        _out(f"  raylm status {job_id}{flag}")
        _out(f"  raylm logs {job_id}{flag} --follow")
        _out(f"  raylm stop {job_id}{flag}")
        _out(f"  dashboard: {url}/#/jobs/{job_id}")
        return job_id
    _follow(job_id, address)
    return job_id


def status_command(job_id: str, address: str | None = None) -> str:
    row = job_info(job_id, address)
    _out(f"{job_id}: {row['status']} ({_took(row)}, started {_when(row['start_time'])})")
    if row.get("message"):
        _out(f"  {row['message']}")
    _out(f"  {row['entrypoint']}")
    return row["status"]


def logs_command(job_id: str, address: str | None = None, follow: bool = False) -> None:
    if follow:
        _follow(job_id, address)
        return
    for chunk in job_logs(job_id, address):
        _out(chunk, end="" if chunk.endswith("\n") or not chunk else "\n")


def stop_command(job_id: str, address: str | None = None) -> bool:
    stopped = stop_job(job_id, address)
    if stopped:
        _out(f"stopping {job_id}")
    else:
        _out(f"{job_id} was not running ({job_info(job_id, address)['status']})")
    return stopped


def list_command(address: str | None = None) -> list[dict[str, Any]]:
    rows = list_jobs(address)
    if not rows:
        _out(f"no jobs submitted to {resolve_address(address)}")
        return rows
    width = max(len(r["job_id"]) for r in rows)
    _out(f"{'JOB ID':<{width}}  {'STATUS':<9}  {'STARTED':<19}  {'TOOK':>7}  ENTRYPOINT")
    for r in rows:
        _out(
            f"{r['job_id']:<{width}}  {r['status']:<9}  {_when(r['start_time']):<19}  "
            f"{_took(r):>7}  {r['entrypoint']}"
        )
    return rows
