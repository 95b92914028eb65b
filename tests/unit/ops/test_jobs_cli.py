"""raylm.jobs.cli and ray_jobs/: what can be checked without a cluster.

pytest tests/unit/ops/test_jobs_cli.py
"""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest
import yaml

from raylm.jobs import cli
from raylm.jobs import submit as sub

REPO = Path(__file__).resolve().parents[3]


def _closed() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    "call",
    [
        lambda a: cli.status_command("raylm-x", a),
        lambda a: cli.logs_command("raylm-x", a),
        lambda a: cli.stop_command("raylm-x", a),
        lambda a: cli.list_command(a),
    ],
)
def test_commands_name_the_unreachable_address(call):
    address = _closed()
    with pytest.raises(sub.SubmitError, match=f"no Ray Jobs API at {address}"):
        call(address)


def test_submit_command_checks_locally_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(sub.SubmitError, match="unknown job 'train'"):
        cli.submit_command("train", "missing.yaml", address=_closed())


def test_run_is_the_pipeline_job(tmp_path, monkeypatch):
    (tmp_path / "ray_jobs").mkdir()
    (tmp_path / "ray_jobs" / "pipeline.py").write_text("")
    monkeypatch.chdir(tmp_path)
    # Gets past the job-name check to the config check: `run` resolved to pipeline.py.
    with pytest.raises(sub.SubmitError, match="config file missing.yaml not found"):
        cli.submit_command("run", "missing.yaml", address=_closed())


def test_runtime_env_yaml_matches_submit():
    env = yaml.safe_load((REPO / "ray_jobs" / "runtime_env.yaml").read_text())
    assert env["excludes"] == sub.EXCLUDES
    assert env["py_modules"] == ["lib/raylm"]


@pytest.mark.parametrize("job", ["preprocess", "train", "pipeline", "tune", "serve"])
def test_entrypoints_are_thin_and_parse(job):
    path = REPO / "ray_jobs" / f"{job}.py"
    tree = ast.parse(path.read_text())
    assert "ray job submit --working-dir . --runtime-env ray_jobs/runtime_env.yaml" in (
        ast.get_docstring(tree)
    )
    assert len(path.read_text().splitlines()) < 45
