"""Submit raylm jobs to a Ray cluster through the Ray Jobs API, and follow them.

    raylm submit train examples/sentiment_zh.yaml --set train.lr=3e-4     # the CLI, raylm.cli
    submit_job("train", "examples/sentiment_zh.yaml", overrides=["train.lr=3e-4"])

The cluster is `address`, else $RAY_ADDRESS, else http://127.0.0.1:8265: a local `ray start --head`,
or a cluster.yaml cluster behind `ray dashboard cluster.yaml`. Everything that can be checked
locally is checked before the working tree is uploaded: the config validates, its file and the
working dir exist, and the Jobs API answers. The job runs `python ray_jobs/<job>.py --config ...`
in the uploaded working dir, with this checkout's raylm package ahead of any installed one.

`predict` takes a model instead of a config, and `raylm predict`'s options after `--`:

    raylm submit predict /shared/outputs/sentiment_zh -- -i s3://bucket/reviews/ -o /shared/preds
    submit_job("predict", "/shared/outputs/sentiment_zh", job_args=["-i", "...", "-o", "..."])

The model and the output folder are paths the job's driver reads and writes on the cluster (a
shared filesystem); inputs are any path or URI the cluster's nodes can read, or files inside the
uploaded working dir, given relative to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import shlex
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from raylm.recipe import load_config

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Never uploaded: environments, outputs, VCS data and caches (Ray also honours .gitignore).
EXCLUDES = [
    ".venv",
    "venv",
    ".git",
    "outputs",
    "runs",
    "benchmarks/results",
    "**/__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "*.egg-info",
    "build",
    "dist",
]


# `raylm submit run ...` mirrors `raylm run`: the whole recipe, whose job script is pipeline.py.
JOB_ALIASES = {"run": "pipeline"}


class SubmitError(RuntimeError):
    """A submission problem, with a message fit to show a user as is."""


# ------------------------------------------------------------------------------------ helpers
def resolve_address(address: str | None = None) -> str:
    """The Jobs API URL: `address`, else $RAY_ADDRESS, else the local default; http:// if bare."""
    address = (address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS).strip().rstrip("/")
    return address if "://" in address else f"http://{address}"


def build_entrypoint(job: str, config: str, overrides: list[str] | None = None) -> str:
    """`python ray_jobs/<job>.py --config <config> [--set k=v ...]`, shell-quoted."""
    args = ["python", f"ray_jobs/{job}.py", "--config", config]
    for item in overrides or []:
        args += ["--set", item]
    return shlex.join(args)


def build_runtime_env(working_dir: Path, pip: list[str] | None = None) -> dict[str, Any]:
    """Upload the working dir (minus EXCLUDES), ship its lib/raylm, add pip packages if asked."""
    env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": list(EXCLUDES)}
    package = working_dir / "lib" / "raylm"
    if package.is_dir():
        # The checkout's package, not the one installed on the nodes (maybe older), is what the
        # config was validated against; py_modules puts it first on every worker's path.
        env["py_modules"] = [str(package)]
    if pip:
        env["pip"] = list(pip)  # installed into a per-job virtualenv on each node: slow, cached
    return env


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Raise SubmitError naming `address` unless a Ray Jobs API answers there."""
    url = f"{address}/api/version"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(1)
    except urllib.error.HTTPError:
        return  # something answered over HTTP; auth and version are checked by the client
    except http.client.HTTPException:
        reason = "it does not speak HTTP: the GCS port? the Jobs API is on the dashboard port"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
    else:
        return
    raise SubmitError(
        f"no Ray Jobs API at {address} ({reason}). Start a cluster (`ray start --head`), "
        "forward one (`ray dashboard cluster.yaml`), or pass the dashboard URL with "
        "--address / RAY_ADDRESS, e.g. http://127.0.0.1:8265."
    )


def _use_token_if_available() -> None:
    # A Ray 2.60 cluster runs with token auth whenever its head found a token (~/.ray/auth_token,
    # which any local ray.init() creates), but the Jobs client attaches a token only when
    # RAY_AUTH_MODE=token is set in the client's own environment, even if RAY_AUTH_TOKEN holds
    # it: otherwise every request fails with "Missing authentication token". So when a token is
    # at hand and the mode was not chosen explicitly, choose token mode for this process.
    if os.environ.get("RAY_AUTH_MODE"):
        return  # an explicit choice, "disabled" included
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not (os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray._raylet" in sys.modules:
        # Ray read its config when it was imported: re-read it, as `ray start` does itself.
        import ray
        from ray._raylet import Config

        if not ray.is_initialized():
            Config.initialize("")


@contextlib.contextmanager
def _explicit_address():
    # Ray's client lets RAY_ADDRESS / RAY_API_SERVER_ADDRESS override the address it is given;
    # here the resolved address (argument first) must win, so hide them while it is built.
    saved = {
        k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ
    }
    try:
        yield
    finally:
        os.environ.update(saved)


def _client(address: str | None):
    """A connected JobSubmissionClient; SubmitError if unreachable or the token is refused."""
    url = resolve_address(address)
    check_reachable(url)
    _use_token_if_available()
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        with _explicit_address():
            return JobSubmissionClient(url)
    except AuthenticationError as err:
        raise SubmitError(
            f"the Ray cluster at {url} refused the request: {err}\nGive this process the "
            "cluster's token: RAY_AUTH_TOKEN=<token> (cluster.yaml clusters: from Secrets "
            "Manager) or the cluster's ~/.ray/auth_token file."
        ) from None
    except ConnectionError as err:
        raise SubmitError(f"cannot talk to the Ray Jobs API at {url}: {err}") from None


# ---------------------------------------------------------------------------------------- API
def submit_job(
    job: str,
    config_path: str,
    address: str | None = None,
    overrides: list[str] | None = None,
    num_cpus: float = 0,
    num_gpus: float = 0,
    pip: list[str] | None = None,
    working_dir: str = ".",
    job_args: list[str] | None = None,
) -> str:
    """Validate locally, upload `working_dir`, start `ray_jobs/<job>.py`; returns the job id.

    `job` names a script in ray_jobs/ (run, preprocess, train, tune, serve, ...).

    num_cpus/num_gpus reserve resources for the driver process itself. The default 0 runs the
    driver on the head node (cluster.yaml's head advertises 0 CPUs but hosts drivers); give a
    driver that computes heavily num_cpus >= 1 so it runs on a worker instead.
    """
    job = JOB_ALIASES.get(job, job)
    wd = Path(working_dir).resolve()
    if not wd.is_dir():
        raise SubmitError(f"working dir {wd} does not exist")
    jobs = sorted(p.stem for p in (wd / "ray_jobs").glob("*.py") if not p.stem.startswith("_"))
    if job not in jobs:
        where = f"{wd}/ray_jobs has: {', '.join(jobs)}" if jobs else f"no {wd}/ray_jobs/*.py"
        raise SubmitError(f"unknown job '{job}' ({where}); is {wd} the raylm repo root?")
    if job == "predict":
        return _submit_predict(config_path, wd, address, job_args or [], num_cpus, num_gpus, pip)
    if job_args:
        raise SubmitError(f"arguments after -- ({shlex.join(job_args)}) are for `predict` only")
    config = Path(config_path).resolve()
    if not config.is_file():
        raise SubmitError(f"config file {config_path} not found")
    if not config.is_relative_to(wd):
        raise SubmitError(
            f"config {config} is outside the working dir {wd}, so it would not be uploaded"
        )
    cfg = load_config(config, overrides)  # ConfigError names the file and the bad field
    for p in cfg.data.paths:
        if "://" not in p and not Path(p).is_absolute() and not (wd / p).exists():
            raise SubmitError(f"data path '{p}' not found under the working dir {wd}")

    client = _client(address)
    rel_config = config.relative_to(wd).as_posix()
    return client.submit_job(
        entrypoint=build_entrypoint(job, rel_config, overrides),
        submission_id=f"raylm-{job}-{cfg.run.name}-{uuid.uuid4().hex[:8]}",
        runtime_env=build_runtime_env(wd, pip),
        metadata={"raylm_job": job, "config": rel_config},
        entrypoint_num_cpus=num_cpus,
        entrypoint_num_gpus=num_gpus,
    )


def _submit_predict(
    model: str,
    wd: Path,
    address: str | None,
    args: list[str],
    num_cpus: float,
    num_gpus: float,
    pip: list[str] | None,
) -> str:
    """`python ray_jobs/predict.py MODEL ARGS...`: the arguments are checked by the job itself,
    but a call without --input or --output is refused here, before the upload."""
    for needed in (("--input", "-i"), ("--output", "-o")):
        if not any(a in needed or a.startswith(needed[0] + "=") for a in args):
            raise SubmitError(f"predict needs {needed[0]} after --, e.g. raylm submit predict "
                              f"{model} -- --input FILES --output DIR")  # fmt: skip
    client = _client(address)
    name = Path(model.rstrip("/")).name or "model"
    return client.submit_job(
        entrypoint=shlex.join(["python", "ray_jobs/predict.py", model, *args]),
        submission_id=f"raylm-predict-{name}-{uuid.uuid4().hex[:8]}",
        runtime_env=build_runtime_env(wd, pip),
        metadata={"raylm_job": "predict", "model": model},
        entrypoint_num_cpus=num_cpus,
        entrypoint_num_gpus=num_gpus,
    )


def _row(d: Any) -> dict[str, Any]:
    return {
        "job_id": d.submission_id,
        "status": str(d.status.value),
        "entrypoint": d.entrypoint,
        "start_time": d.start_time,
        "end_time": d.end_time,
        "message": d.message,
        "metadata": dict(d.metadata or {}),
    }


@contextlib.contextmanager
def _about(job_id: str):
    # The client reports an unknown id as RuntimeError("Request failed with status code 404...").
    try:
        yield
    except RuntimeError as err:
        if isinstance(err, SubmitError):
            raise
        if "404" in str(err) or "does not exist" in str(err):
            raise SubmitError(
                f"no job '{job_id}' on this cluster (`raylm list` shows them)"
            ) from None
        raise SubmitError(f"job '{job_id}': {err}") from None


def job_status(job_id: str, address: str | None = None) -> str:
    """PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
    client = _client(address)
    with _about(job_id):
        return str(client.get_job_status(job_id).value)


def job_info(job_id: str, address: str | None = None) -> dict[str, Any]:
    """One job as a plain dict (id, status, entrypoint, times, message, metadata)."""
    client = _client(address)
    with _about(job_id):
        return _row(client.get_job_info(job_id))


def job_logs(job_id: str, address: str | None = None, follow: bool = False) -> Iterator[str]:
    """The job's driver log: all of it so far, or (follow) chunks as they come until it ends."""
    client = _client(address)  # connect now, so errors surface before iteration
    with _about(job_id):
        if not follow:
            return iter([client.get_job_logs(job_id)])
        client.get_job_status(job_id)  # an unknown id fails here, not inside the websocket
        return _sync_iter(client.tail_job_logs(job_id))


def _sync_iter(agen: AsyncIterator[str]) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(agen.aclose())
        loop.close()


def stop_job(job_id: str, address: str | None = None) -> bool:
    """Ask the job to stop; True if it was running."""
    client = _client(address)
    with _about(job_id):
        return bool(client.stop_job(job_id))


def list_jobs(address: str | None = None) -> list[dict[str, Any]]:
    """Submitted jobs, oldest first, as plain dicts (id, status, entrypoint, times, message)."""
    rows = []
    for d in _client(address).list_jobs():
        if d.submission_id is None:
            continue  # drivers started with ray.init, not through the Jobs API
        rows.append(_row(d))
    return sorted(rows, key=lambda r: r["start_time"] or 0)
