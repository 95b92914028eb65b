"""A run folder's state for `raylm runs`: what a command is doing to it, and how it ended.

    @recorded("train")   # a stage: run.json running -> finished, failed or interrupted
    def train(cfg): ...; record_config(cfg, run_dir); mark_running(run_dir); ...

`run.json` holds `state`, `command`, `started` and `updated` (Unix seconds), `ended` (or null),
`pid` and `host` of the process, and `error` (the exception's first line, or null). The state
changes only once the stage has made the folder its own (`mark_running`, after the config is
recorded): a relaunch refused before that leaves the folder's state as it was. Stages called
by another (`raylm run` calls all four) leave the state to the outermost. A process that dies
without unwinding (SIGKILL, a lost node) leaves `running` behind; a reader that finds no such
process on this host says `interrupted` (raylm.runs). The file is replaced atomically.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from raylm.fsutil import write_atomic

STATE_FILE = "run.json"
STATES = ("running", "finished", "failed", "interrupted")
F = TypeVar("F", bound=Callable[..., Any])


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """The recorded state, or None where no command recorded one (or the file is unreadable)."""
    try:
        data = json.loads((Path(run_dir) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("state") in STATES else None


def write_state(run_dir: Path, state: str, command: str, error: str | None = None) -> None:
    if state not in STATES:
        raise ValueError(f"run state {state!r} is not one of {', '.join(STATES)}")
    now = round(time.time(), 3)
    before = read_state(run_dir) or {}
    started = before.get("started") if before.get("state") == "running" else None
    record = {
        "state": state,
        "command": command,
        "started": started if state != "running" and started else now,
        "updated": now,
        "ended": None if state == "running" else now,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "error": error,
    }
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(run_dir) / STATE_FILE, json.dumps(record, indent=2) + "\n")


_OPEN: dict[str, dict[str, Any]] = {}  # run folder -> the outermost command recording it


def _key(run_dir: Path) -> str:
    return str(Path(run_dir).resolve())


def mark_running(run_dir: Path) -> None:
    """The stage has recorded its config: from here on its outcome is the folder's state."""
    entry = _OPEN.get(_key(run_dir))
    if entry is not None and not entry["written"]:
        write_state(run_dir, "running", entry["command"])
        entry["written"] = True


def _end(run_dir: Path, state: str, error: str | None = None) -> None:
    entry = _OPEN.get(_key(run_dir))
    if entry is not None and entry["written"]:
        write_state(run_dir, state, entry["command"], error)


@contextmanager
def recorded_state(run_dir: Path, command: str) -> Iterator[None]:
    """`finished`, `failed` (an exception) or `interrupted` (Ctrl-C, or a SIGTERM that Python
    turned into SystemExit) once the block ends, if it called `mark_running`."""
    key = _key(run_dir)
    if key in _OPEN:  # an outer command records this folder's state
        yield
        return
    _OPEN[key] = {"command": command, "written": False}
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        _end(run_dir, "interrupted")
        raise
    except BaseException as err:
        first = (str(err).strip().splitlines() or [""])[0]
        _end(run_dir, "failed", f"{type(err).__name__}: {first}")
        raise
    else:
        _end(run_dir, "finished")
    finally:
        _OPEN.pop(key, None)


def recorded(command: str) -> Callable[[F], F]:
    """Decorate a stage `fn(cfg, ...)`: its run folder's state is recorded around it."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def stage(cfg: Any, *args: Any, **kwargs: Any) -> Any:
            with recorded_state(cfg.run.run_dir, command):
                return fn(cfg, *args, **kwargs)

        return stage  # type: ignore[return-value]

    return wrap
