"""raylm.console: the console level (`raylm -q/-v`, RAYLM_VERBOSITY) and what it lets through,
raylm's own lines and Ray Data's progress bars, execution plans and INFO lines."""

from __future__ import annotations

import logging

import pytest
import yaml
from ray.data import DataContext
from typer.testing import CliRunner

from raylm import console
from raylm.cli import app


@pytest.fixture(autouse=True)
def _level(monkeypatch):
    """Every test starts at the default level, and the CLI's own setting is undone after."""
    monkeypatch.setenv(console.VERBOSITY_ENV, "1")


def test_quiet_keeps_warnings_only(monkeypatch, capsys):
    console.say("epoch 1 step 5 loss 2.0")
    monkeypatch.setenv(console.VERBOSITY_ENV, "0")
    console.say("epoch 1 step 10 loss 1.9")
    console.say("warning: checkpoint skipped")
    assert capsys.readouterr().out.splitlines() == [
        "[raylm] epoch 1 step 5 loss 2.0",
        "[raylm] warning: checkpoint skipped",
    ]


@pytest.mark.parametrize("value, level", [("0", 0), ("2", 2), ("7", 2), ("loud", 1)])
def test_verbosity_from_the_environment(monkeypatch, value, level):
    monkeypatch.setenv(console.VERBOSITY_ENV, value)
    assert console.verbosity() == level


def test_ray_data_is_quiet_outside_a_terminal_unless_verbose(monkeypatch):
    context = DataContext()
    console.quiet_ray_data(context)  # pytest's stderr is not a terminal
    assert not context.enable_progress_bars and not context.print_on_execution_start
    handlers = [h for h in logging.getLogger("ray.data").handlers]
    consoles = [h for h in handlers if type(h).__name__ != "SessionFileHandler"]
    assert consoles and all(h.level == logging.WARNING for h in consoles)
    monkeypatch.setenv(console.VERBOSITY_ENV, "2")
    console.quiet_ray_data(context)
    assert context.enable_progress_bars and context.print_on_execution_start
    assert all(h.level == logging.INFO for h in consoles)
    assert console.RAY_DATA_LOGGING.name not in str(console.worker_env())


def test_workers_get_ray_datas_config_with_a_quiet_console():
    env = console.worker_env()
    assert env[console.VERBOSITY_ENV] == "1"
    with open(env["RAY_DATA_LOGGING_CONFIG"], encoding="utf-8") as f:
        config = yaml.safe_load(f)
    assert config["handlers"]["console"]["level"] == "WARNING"
    assert config["loggers"]["ray.data"]["handlers"] == ["file", "console"]


def test_cli_sets_the_level_for_every_command(monkeypatch, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["-q", "runs", str(tmp_path)])
    assert result.exit_code == 0 and console.verbosity() == 0
    result = runner.invoke(app, ["-v", "runs", str(tmp_path)])
    assert result.exit_code == 0 and console.verbosity() == 2
    result = runner.invoke(app, ["-q", "-v", "runs", str(tmp_path)])
    assert result.exit_code != 0 and "--quiet and --verbose" in result.output
