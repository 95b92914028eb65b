"""What a run prints: raylm's own lines, and how much of Ray's.

    raylm -q run ...   # quiet: warnings, errors and the result only
    raylm run ...      # raylm's stage and step lines; Ray Data's progress bars in a terminal only
    raylm -v run ...   # verbose: Ray Data's progress bars and execution plans everywhere

The level travels in the environment (`RAYLM_VERBOSITY` 0/1/2), so the workers of an embedded
Ray, which inherit it, print as their driver does. Outside a terminal Ray Data's progress bars
print a line per update: in a plain run's log they were a quarter of all lines. Ray Data's INFO
lines ("Starting execution", the plan, "execution finished") go to its log files
(`/tmp/ray/session_latest/logs/ray-data`), not the console, unless verbose; so does Ray's
warning that token authentication is on, which raylm turns on itself.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

VERBOSITY_ENV = "RAYLM_VERBOSITY"
QUIET, NORMAL, VERBOSE = 0, 1, 2
# Ray Data's own logging config with its console handler at WARNING (files keep every line):
# what an embedded Ray's workers read, through RAY_DATA_LOGGING_CONFIG.
RAY_DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")
# Ray's warnings that a raylm user can do nothing about (shown with -v).
UNACTIONABLE = (
    "ray._private.authentication.authentication_token_setup",  # raylm turns token auth on
    "ray.data._internal.progress",  # "Progress bars disabled": raylm turned them off
)


def verbosity() -> int:
    try:
        return min(VERBOSE, max(QUIET, int(os.environ.get(VERBOSITY_ENV, NORMAL))))
    except ValueError:
        return NORMAL


def set_verbosity(level: int) -> None:
    os.environ[VERBOSITY_ENV] = str(level)


def say(msg: str) -> None:
    """A raylm console line; a quiet run keeps warnings only."""
    if verbosity() > QUIET or msg.startswith(("warning", "error")):
        print(f"[raylm] {msg}", flush=True)


def worker_env() -> dict[str, str]:
    """Environment for an embedded Ray's workers (they inherit the driver's at start)."""
    env = {VERBOSITY_ENV: str(verbosity())}
    if verbosity() < VERBOSE:
        env["RAY_DATA_LOGGING_CONFIG"] = str(RAY_DATA_LOGGING)
    return env


def quiet_ray_data(context) -> None:
    """Progress bars and INFO lines of Ray Data for the Datasets made with `context`, and the
    console handlers of this process's Ray Data logger."""
    loud = verbosity() >= VERBOSE
    context.enable_progress_bars = loud or (verbosity() > QUIET and sys.stderr.isatty())
    context.print_on_execution_start = loud
    level = logging.INFO if loud else logging.WARNING
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler":  # its log files keep every line
            handler.setLevel(level)
    for name in UNACTIONABLE:
        logging.getLogger(name).setLevel(logging.WARNING if loud else logging.ERROR)
