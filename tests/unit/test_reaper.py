"""raylm.reaper: once the driver dies, however it dies, its Ray processes go too, and only those.

python -m pytest tests/unit/test_reaper.py -q     # a few seconds; real processes, SIGKILL
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

# A stand-in driver: one child that looks like Ray's (its command line says so, as raylet,
# gcs_server and the ray::* agents do), one that does not, then the reaper, then it waits.
DRIVER = """
import os, subprocess, sys, time
from raylm import reaper
ray_like = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)  # ray agent"])
other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)  # user tool"])
reaper.start(os.getpid())  # as runtime.ensure_ray does after starting an embedded Ray
print(ray_like.pid, other.pid, flush=True)
time.sleep(120)
"""


def test_a_sigkilled_driver_takes_its_ray_processes_and_only_those():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    ray_like, other = (psutil.Process(int(p)) for p in driver.stdout.readline().split())
    time.sleep(2.5)  # the watcher notes the driver's children once a second
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    try:
        gone, alive = psutil.wait_procs([ray_like], timeout=20)
        assert gone and not alive, "the Ray-like child outlived its driver"
        assert other.is_running(), "a child that is not Ray's was stopped too"
    finally:
        for proc in (ray_like, other):
            if proc.is_running():
                proc.kill()
