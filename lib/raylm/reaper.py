"""Leave no process of an embedded Ray behind when its driver dies, however it dies.

    python -m raylm.reaper DRIVER_PID       # started by runtime.ensure_ray, in its own session

`ray.init()` in a driver starts a whole Ray: GCS, raylet, dashboard, and the raylet's agents.
On a clean exit `ray.shutdown()` stops them all, and a SIGKILLed driver takes the GCS and the
raylet down with it, but the raylet's `ray::DashboardAgent` and `ray::RuntimeEnvAgent` then live
on under PID 1 until someone kills them by hand. This small process watches the driver: every
second it notes the driver's descendants, and once the driver is gone it gives Ray a few seconds
to stop them, then terminates (and finally kills) those still running. A recorded PID counts
only with its recorded start time, so a PID reused by an unrelated process is never touched.
Only psutil and the standard library: it starts in a fraction of a second.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

GRACE_S = 5.0  # Ray's own shutdown first
POLL_S = 1.0


def _is_ray(proc: psutil.Process) -> bool:
    """Ray's processes: ray::* workers and agents, raylet, gcs_server, the dashboard's."""
    return any("ray" in part for part in proc.cmdline()[:3])


def _descendants(driver: psutil.Process) -> dict[int, float]:
    """The driver's descendants that are Ray's (other children of the driver are left alone)."""
    found = {}
    try:
        children = driver.children(recursive=True)
    except psutil.Error:  # the driver is going away right now
        return found
    for proc in children:
        try:
            if _is_ray(proc):
                found[proc.pid] = proc.create_time()
        except psutil.Error:  # this one is going away right now
            pass
    return found


def _still_running(seen: dict[int, float]) -> list[psutil.Process]:
    alive = []
    for pid, started in seen.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            pass
    return alive


def reap(seen: dict[int, float], grace_s: float = GRACE_S) -> list[int]:
    """Wait `grace_s` for the recorded processes to exit; SIGTERM, then SIGKILL, the rest.
    Returns the PIDs it had to stop."""
    deadline = time.monotonic() + grace_s
    while (left := _still_running(seen)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for proc in left:
        proc.terminate()
    _, survivors = psutil.wait_procs(left, timeout=3)
    for proc in survivors:
        proc.kill()
    return [p.pid for p in left]


def watch(driver_pid: int, me: int) -> list[int]:
    """Note the driver's descendants until the driver exits, then reap them."""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return []
    seen: dict[int, float] = {}
    while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
        seen.update(_descendants(driver))
        seen.pop(me, None)
        time.sleep(POLL_S)
    return reap(seen)


def start(driver_pid: int) -> subprocess.Popen:
    """Start the watcher for `driver_pid`, detached from the driver's session and terminal (a
    Ctrl-C to the driver's process group must not stop it first)."""
    return subprocess.Popen(
        [sys.executable, "-m", "raylm.reaper", str(driver_pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


if __name__ == "__main__":
    import os

    watch(int(sys.argv[1]), os.getpid())
