"""Spot-node preemption inside the worker loop: hear Ray Train's notice, say what happens, and
wait for the teardown after the checkpoint (raylm.train.loop saves it).

Ray Train's `PreemptionWatcher` polls the cluster for nodes drained with the preemption reason
(the autoscaler's drain of a reclaimed spot node, or `ray drain-node --reason
DRAIN_NODE_REASON_PREEMPTION`) and marks the workers; `ray.train.get_preemption_info()` hands
the notice to the training function. It is a barrier of all ranks, so the loop asks at the same
steps on every rank (`notice`). At the deadline Ray Train tears the group down and restarts it
from the newest checkpoint: a step trained after the preemption checkpoint would be trained
again, so the ranks wait instead (`await_teardown`). Returning early is no way out (a run that
returns has finished) and raising would be charged to `train.max_failures`.
"""

from __future__ import annotations

import time
from typing import Any

NO_DEADLINE_S = 120  # Ray Train's own wait after a notice that gives no deadline
TEARDOWN_MARGIN_S = 30  # still alive this long after the deadline: the node was not taken


def notice(every: int, step: int) -> Any:
    """Ray Train's PreemptionInfo when a node of this run is being preempted, else None. Asked
    at every `every`-th step (train.preemption_poll_steps; 0: never) by every rank alike."""
    if not every or step % every:
        return None
    import ray.train

    return ray.train.get_preemption_info()


def describe(info: Any, step: int) -> str:
    """The warning rank 0 prints on a notice."""
    left = (info.deadline_ms / 1000 - time.time()) if info.deadline_ms else None
    when = f"{left:.0f} s before its deadline" if left is not None else "no deadline given"
    nodes = ", ".join(n[:8] for n in info.preempted_node_ids)
    return (
        f"warning: node(s) {nodes} (ranks {info.preempted_ranks}) are being preempted, {when}: "
        f"every rank saves its shards at step {step}; the run resumes from there"
    )


def checkpoint_metrics(best_metric: str, best_mode: str, step: int, epoch: float) -> dict:
    """What the preemption checkpoint reports: no validation (a notice gives seconds, not
    minutes), so the best metric gets the worst value: never taken for the best checkpoint,
    while as the newest it is the one a restart resumes from."""
    worst = float("inf") if best_mode == "min" else float("-inf")
    return {best_metric: worst, "step": step, "epoch": round(epoch, 4), "preemption": True}


def await_teardown(info: Any) -> None:
    """Sleep until Ray Train tears the group down at the notice's deadline; returns only if the
    group is still alive 30 s after it (a drain that took no node: training goes on)."""
    deadline = info.deadline_ms / 1000 if info.deadline_ms else time.time() + NO_DEADLINE_S
    while time.time() < deadline + TEARDOWN_MARGIN_S:
        time.sleep(0.5)
