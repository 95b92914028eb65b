"""Real Ray Jobs: a tiny recipe submitted to a private local head runs to a stored model.

    pytest tests/integration/test_jobs.py   # minutes on 2 idle cores; 15+ under heavy load

A head of its own (`ray start --head` on 127.0.0.1, free ports, its own temp dir and process
group, token auth on as Ray 2.60 does it) with 4 CPUs for the jobs' Ray Data tasks and Train
workers. The working dir shipped is a copy of lib/raylm + ray_jobs/ with a generated JSONL corpus
and a config inside it, plus decoy .venv/, outputs/ and .git/ folders that must not be uploaded.

  * `raylm submit`'s functions run the pipeline job (preprocess, train, export, evaluate) to
    SUCCEEDED; its log shows the workers' step lines; checkpoint and exported model land in the
    storage path.
  * The plain `ray job submit --working-dir` CLI (with ray_jobs/runtime_env.yaml) runs the train
    job on the same data.
  * The PYTHONPATH question: the shipped copy of raylm.train.loop carries a probe that records
    who imported it. Ray Train workers must have imported the shipped copy (the installed raylm
    has no probe), as they must on a cluster without raylm installed.

The client calls run in subprocesses: Ray reads RAY_AUTH_MODE once per process, and this pytest
process may already hold the session `ray_session` with other settings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from test_autoscale import _free_port, _kill_group  # same folder: pytest's rootdir import

from ray_state import ensure_auth_token
from raylm.data.synthetic import write_sentiment_corpus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(sys.platform != "linux", reason="teardown finds processes through /proc"),
]

REPO = Path(__file__).resolve().parents[2]
DECOYS = (".venv", "outputs", ".git")
PROBE = textwrap.dedent(
    """

    # --- test_jobs.py probe: which process imported this (shipped) copy ---
    import os as _os
    import sys as _sys

    if _os.environ.get("RAYLM_IMPORT_PROBE"):
        _path = _os.path.join(_os.environ["RAYLM_IMPORT_PROBE"], f"{_os.getpid()}.json")
        with open(_path, "w") as _f:
            _f.write('{"file": "%s", "argv0": "%s"}' % (__file__, _sys.argv[0]))
    """
)
CONFIG = """\
data:
  source: jsonl
  paths: [data/corpus.jsonl]        # relative: read from the uploaded working dir
  labels: [neg, pos]
  max_length: 32
  tokenizer: {{vocab_size: 300, min_frequency: 1}}
  dedup: {{exact: false}}           # no shuffle stage: this test is about jobs, not data
model: {{task: classification, preset: tiny, hidden_size: 32, num_heads: 2}}
train:
  num_workers: 1
  epochs: 1
  max_steps: 8
  batch_size: 16
  lr: 2.0e-3
  log_every: 2
  warmup_ratio: 0.0
  shuffle_buffer: 64
run:
  name: api
  output_dir: {storage}/runs
  storage_path: {storage}/ray
  baseline: false
"""


@pytest.fixture(scope="module")
def head():
    temp_dir = tempfile.mkdtemp(prefix="raylm-jobs-", dir="/tmp")  # short: unix socket paths
    probe = Path(temp_dir) / "probe"
    probe.mkdir()
    dashboard = _free_port()
    cmd = [
        *(sys.executable, "-m", "ray.scripts.scripts", "start", "--head"),
        "--node-ip-address=127.0.0.1",
        f"--port={_free_port()}",
        f"--temp-dir={temp_dir}",
        "--num-cpus=4",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--ray-client-server-port={_free_port()}",
        "--disable-usage-stats",
    ]
    # Token auth as `ray start` does it in 2.60 (token in ~/.ray/auth_token, created if missing).
    ensure_auth_token()
    # Every job driver and worker inherits this environment, the probe switch included.
    env = dict(os.environ, RAY_AUTH_MODE="token", RAYLM_IMPORT_PROBE=str(probe))
    # Job entrypoints say `python`, as on a cluster: make that this interpreter (the venv's),
    # whether or not the venv is activated (`make test` does not activate it).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
        yield {"url": f"http://127.0.0.1:{dashboard}", "temp_dir": temp_dir, "probe": probe}
    finally:
        _kill_group(proc.pid, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("wd")
    storage = tmp_path_factory.mktemp("storage")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "lib" / "raylm", wd / "lib" / "raylm", ignore=skip)
    shutil.copytree(REPO / "ray_jobs", wd / "ray_jobs", ignore=skip)
    loop = wd / "lib" / "raylm" / "train" / "loop.py"
    loop.write_text(loop.read_text() + PROBE)
    (wd / "data").mkdir()
    write_sentiment_corpus(wd / "data" / "corpus.jsonl", n=300)
    (wd / "examples").mkdir()
    (wd / "examples" / "tiny.yaml").write_text(CONFIG.format(storage=storage))
    for decoy in DECOYS:  # what a real checkout holds and an upload must leave behind
        (wd / decoy).mkdir()
        (wd / decoy / "DECOY_MARKER").write_text("must not be uploaded")
    return wd, storage


def _client_env(head) -> dict:
    env = dict(os.environ, RAY_ADDRESS=head["url"], RAY_AUTH_MODE="token")
    env.pop("RAYLM_IMPORT_PROBE", None)
    return env


def _run(args: list[str], cwd: Path, head, timeout: float) -> subprocess.CompletedProcess:
    run = subprocess.run(
        args, cwd=cwd, env=_client_env(head), capture_output=True, text=True, timeout=timeout
    )
    driver_logs = Path(head["temp_dir"], "session_latest", "logs")
    tail = "".join(
        f"\n--- {p.name} ---\n{p.read_text(errors='replace')[-1500:]}"
        for p in sorted(driver_logs.glob("job-driver-*.log"))
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + tail
    return run


def _result(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


API_CLIENT = textwrap.dedent(
    """
    import json, sys, time
    from raylm.jobs import cli, submit

    t0 = time.time()
    job_id = cli.submit_command("run", "examples/tiny.yaml", follow=True)  # run = pipeline
    took = time.time() - t0
    status = cli.status_command(job_id)
    rows = cli.list_command()
    logs = "".join(submit.job_logs(job_id))
    out = {"job_id": job_id, "status": status, "seconds": round(took, 1), "logs": logs,
           "listed": [r["job_id"] for r in rows]}
    print("RESULT " + json.dumps(out), flush=True)
    """
)


@pytest.fixture(scope="module")
def pipeline_job(head, workdir):
    wd, storage = workdir
    t0 = time.time()
    run = _run([sys.executable, "-c", API_CLIENT], wd, head, timeout=600)
    result = _result(run.stdout)
    print(f"pipeline job: {result['seconds']}s submit->SUCCEEDED, {time.time() - t0:.0f}s wall")
    return {**result, "stdout": run.stdout}


def _checkpoint_models(storage: Path, name: str) -> list[Path]:
    return sorted((storage / "ray" / name).glob("checkpoint_*/hf/model.safetensors"))


def test_pipeline_job_succeeds_with_model_in_storage(pipeline_job, workdir):
    _, storage = workdir
    assert pipeline_job["status"] == "SUCCEEDED"
    assert pipeline_job["job_id"].startswith("raylm-pipeline-api-")
    assert pipeline_job["job_id"] in pipeline_job["listed"]
    # --follow streamed the log before the final line; the workers' step lines are in it.
    assert f"job {pipeline_job['job_id']} SUCCEEDED" in pipeline_job["stdout"]
    logs = pipeline_job["logs"]
    steps = [ln for ln in logs.splitlines() if "[raylm] epoch 1/1 step" in ln]
    assert len(steps) >= 3, logs[-3000:]  # steps 2, 4, 6, 8 at log_every 2
    assert "step 8/" in steps[-1]
    assert "[raylm] exported model to" in logs and "[raylm] test accuracy" in logs
    assert _checkpoint_models(storage, "api"), sorted(storage.rglob("*"))[:50]
    run_dir = storage / "runs" / "api"
    assert (run_dir / "model" / "model.safetensors").is_file()
    # The test block scores every row of the preprocessed test split, no more and no fewer:
    # rows of the confusion matrix are the true labels, so they sum per class to the split's
    # label counts, and the accuracy is its trace over its total.
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    cm = test["confusion_matrix"]
    assert stats["labels"] == ["neg", "pos"] and [len(row) for row in cm] == [2, 2], (stats, cm)
    total = sum(map(sum, cm))
    assert total == stats["splits"]["test"] == test["count"] > 0, (cm, stats["splits"])
    label_counts = stats["label_counts"]["test"]
    assert [sum(row) for row in cm] == [label_counts.get(name, 0) for name in stats["labels"]]
    assert test["accuracy"] == pytest.approx((cm[0][0] + cm[1][1]) / total)
    assert 0.0 <= test["accuracy"] <= 1.0


PREDICT_CLIENT = textwrap.dedent(
    """
    import json, sys
    from raylm.jobs import cli

    args = ["--input", "data/corpus.jsonl", "--output", sys.argv[2], "--concurrency", "1"]
    job_id = cli.submit_command("predict", sys.argv[1], follow=True, job_args=args)
    print("RESULT " + json.dumps({"job_id": job_id}), flush=True)
    """
)


def test_predict_job_labels_every_line_of_an_uploaded_file(pipeline_job, head, workdir):
    wd, storage = workdir
    out = storage / "predicted"
    model = storage / "runs" / "api"  # the pipeline job's run folder, on the "shared" disk
    t0 = time.time()
    run = _run([sys.executable, "-c", PREDICT_CLIENT, str(model), str(out)], wd, head, 600)
    print(f"predict job: {time.time() - t0:.0f}s")
    assert _result(run.stdout)["job_id"].startswith("raylm-predict-api-")
    summary = json.loads((out / "summary.json").read_text())
    lines = len((wd / "data" / "corpus.jsonl").read_text().splitlines())
    assert summary["rows"] == lines and summary["predicted"] > 0.9 * lines, summary
    assert summary["predicted"] + sum(summary["rejected"].values()) == lines
    assert summary["actors"] == 1 and summary["task"] == "classification"


def test_train_job_through_plain_ray_cli(pipeline_job, head, workdir):
    wd, storage = workdir
    data_dir = storage / "runs" / "api" / "data"  # preprocessed by the pipeline job
    cmd = [
        *(sys.executable, "-m", "ray.scripts.scripts", "job", "submit"),
        f"--address={head['url']}",
        "--working-dir=.",
        "--runtime-env=ray_jobs/runtime_env.yaml",
        "--submission-id=cli-train",
        "--",
        *("python", "ray_jobs/train.py", "--config", "examples/tiny.yaml"),
        *("--set", "run.name=cli", "--set", f"run.data_dir={data_dir}"),
    ]
    t0 = time.time()
    run = _run(cmd, wd, head, timeout=600)
    print(f"ray job submit (train): {time.time() - t0:.0f}s")
    assert "Job 'cli-train' succeeded" in run.stdout, run.stdout[-3000:]
    assert "[raylm] epoch 1/1 step 8/" in run.stdout  # the CLI tails the driver log
    assert _checkpoint_models(storage, "cli")
    assert (storage / "runs" / "cli" / "train_result.json").is_file()


def test_workers_import_the_shipped_raylm_and_decoys_stay_home(pipeline_job, head):
    records = [json.loads(p.read_text()) for p in head["probe"].glob("*.json")]
    assert records, "no process imported the shipped raylm.train.loop"
    workers = [r for r in records if r["argv0"].endswith("default_worker.py")]
    drivers = [r for r in records if r["argv0"].endswith(("pipeline.py", "train.py"))]
    assert workers and drivers, records  # Train workers too, not only the job driver
    for r in records:
        assert not r["file"].startswith(str(REPO)), r  # never the checkout's installed copy
        assert "runtime_resources" in r["file"], r  # but the uploaded package
    uploaded = Path(head["temp_dir"], "session_latest", "runtime_resources")
    assert list(uploaded.rglob("ray_jobs/pipeline.py"))  # the search below looks in the right place
    assert not list(uploaded.rglob("DECOY_MARKER")), list(uploaded.rglob("DECOY_MARKER"))
