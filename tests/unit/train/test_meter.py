"""The training loop's Meter on one process (torch.distributed not initialised), on a clock the
test sets: mean loss, throughput, MFU, excluded pauses and the reset after each read.

Ray need not run: the rank-0 gauges are ray.util.metrics Gauges, which can be created and set
without `ray.init` (they record nothing then), so they are real here, not replaced.

Run: python -m pytest tests/unit/train/test_meter.py -q
"""

import pytest
import torch
import torch.distributed as dist

from raylm.train import loop

ROW_KEYS = {"train_loss", "samples_per_s", "tokens_per_s", "mfu"}


class Clock:
    """time.perf_counter as the test sets it."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(1000.0)
    monkeypatch.setattr(loop.time, "perf_counter", clock)
    return clock


def test_read_gives_mean_loss_throughput_and_mfu(clock):
    assert not dist.is_initialized()  # one process: the sums are this meter's own
    flops_token, peak_total = 6.0e8, 2.0e12
    meter = loop.Meter(flops_token, peak_total)  # the interval starts at 1000 s
    meter.add(torch.tensor(2.0), 8, torch.tensor(1000))
    meter.add(torch.tensor(4.0), 8, torch.tensor(1500))
    meter.add(torch.tensor(3.5), 4, 500)  # token counts may come as plain ints too
    clock.now = 1010.0  # 10 s later
    row = meter.read()
    assert set(row) == ROW_KEYS
    assert row["train_loss"] == pytest.approx((2.0 + 4.0 + 3.5) / 3)  # mean per step
    assert row["samples_per_s"] == pytest.approx(20 / 10)
    assert row["tokens_per_s"] == pytest.approx(3000 / 10)
    # 300 tokens/s * 6e8 FLOPs per token = 1.8e11 FLOP/s of a 2e12 peak: 9%.
    assert row["mfu"] == pytest.approx(0.09)
    assert all(type(v) is float for v in row.values()), row  # what the gauges and JSON take


def test_exclude_takes_pauses_out_of_the_interval(clock):
    meter = loop.Meter(1.0e9, 1.0e13)
    meter.add(torch.tensor(1.0), 16, torch.tensor(4000))
    clock.now += 30.0
    meter.exclude(20.0)  # e.g. 20 s of validation and checkpointing in those 30 s
    row = meter.read()
    assert row["samples_per_s"] == pytest.approx(16 / 10)
    assert row["tokens_per_s"] == pytest.approx(4000 / 10)
    assert row["mfu"] == pytest.approx(400 * 1.0e9 / 1.0e13)  # 4%: from the 10 s trained


def test_read_resets_the_sums_and_starts_a_new_interval(clock):
    meter = loop.Meter(1.0e9, 1.0e13)
    meter.add(torch.tensor(5.0), 4, torch.tensor(400))
    clock.now += 4.0
    first = meter.read()
    assert first["train_loss"] == pytest.approx(5.0) and first["tokens_per_s"] == 100.0
    # Nothing added since: nothing counted, and no division by zero steps.
    clock.now += 2.0
    assert meter.read() == dict.fromkeys(ROW_KEYS, 0.0)
    # The next interval counts only its own steps and time (from the last read, 2 s ago).
    meter.add(torch.tensor(1.0), 2, torch.tensor(50))
    meter.add(torch.tensor(3.0), 2, torch.tensor(50))
    clock.now += 5.0
    row = meter.read()
    assert row["train_loss"] == pytest.approx(2.0)
    assert row["samples_per_s"] == pytest.approx(4 / 5)
    assert row["tokens_per_s"] == pytest.approx(100 / 5)


def test_no_peak_means_no_mfu(clock):
    meter = loop.Meter(1.0e9, 0.0)  # the peak is unknown
    meter.add(torch.tensor(1.0), 1, torch.tensor(10))
    clock.now += 1.0
    row = meter.read()
    assert row["mfu"] == 0.0 and row["tokens_per_s"] == pytest.approx(10.0)


def test_rank_zero_gauges_work_without_ray_running(clock):
    ray = pytest.importorskip("ray")
    was_up = ray.is_initialized()  # the full suite's session Ray may already run
    meter = loop.Meter(1.0e9, 1.0e13)
    assert meter.gauges is not None and set(meter.gauges) == ROW_KEYS
    assert {g._name for g in meter.gauges.values()} == {f"raylm_train_{k}" for k in ROW_KEYS}
    meter.add(torch.tensor(1.0), 1, torch.tensor(10))
    clock.now += 1.0
    meter.read()  # sets every gauge (a Gauge refuses anything but an int or float)
    assert ray.is_initialized() == was_up  # creating and setting them started nothing


def test_a_pipeline_reports_one_mean_loss_per_step_and_counts_every_micro_batch(clock):
    # A pipeline engine knows the loss only after its `grad_accum` micro-batches ran together:
    # the earlier ones count samples and tokens, the last brings their mean loss. Each of its
    # 2 stages sees the same micro-batches (copies=2): they are counted once.
    meter = loop.Meter(1.0e9, 1.0e13, copies=2)
    for step_mean in (3.0, 5.0):
        meter.add(None, 4, 100)
        meter.add(None, 4, 100)
        meter.add(torch.tensor(step_mean), 4, 100)
    clock.now += 10.0
    row = meter.read()
    assert row["train_loss"] == pytest.approx(4.0)  # the mean of the two steps' means
    assert row["samples_per_s"] == pytest.approx(24 / 2 / 10)
    assert row["tokens_per_s"] == pytest.approx(600 / 2 / 10)
