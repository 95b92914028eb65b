"""The worker loop's side of a preemption (raylm.train.preemption); the real drain of a node
is tests/chaos/test_spot_nodes.py."""

from __future__ import annotations

import time

from ray.train import PreemptionInfo

from raylm.train import preemption


def _info(deadline_s: float | None) -> PreemptionInfo:
    deadline_ms = int((time.time() + deadline_s) * 1000) if deadline_s is not None else None
    return PreemptionInfo(deadline_ms=deadline_ms, preempted_node_to_ranks={"ab" * 28: [1, 3]})


def test_ray_is_asked_only_at_the_polling_steps():
    # Outside a Ray Train worker the question would raise: these steps never ask it.
    assert preemption.notice(0, 10) is None  # train.preemption_poll_steps 0: never
    assert preemption.notice(5, 12) is None


def test_the_warning_names_nodes_ranks_deadline_and_step():
    text = preemption.describe(_info(30), 40)
    assert text.startswith("warning: node(s) abababab (ranks [1, 3]) are being preempted")
    assert "before its deadline" in text and "at step 40" in text
    assert "no deadline given" in preemption.describe(_info(None), 40)


def test_the_checkpoint_is_never_the_best():
    low = preemption.checkpoint_metrics("val_loss", "min", 40, 1.25)
    high = preemption.checkpoint_metrics("val_f1", "max", 40, 1.25)
    assert low["val_loss"] == float("inf") and high["val_f1"] == float("-inf")
    assert low["step"] == 40 and low["epoch"] == 1.25 and low["preemption"] is True


def test_a_group_not_torn_down_after_the_deadline_goes_on():
    began = time.monotonic()
    preemption.await_teardown(_info(-preemption.TEARDOWN_MARGIN_S - 1))
    assert time.monotonic() - began < 1
