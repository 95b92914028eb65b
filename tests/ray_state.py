"""What runs on this test session's Ray, from Ray's State API.

from ray_state import alive_actor_pids   # tests/ray_state.py (tests/ is on sys.path)
"""

from __future__ import annotations


def alive_actor_pids(class_name: str) -> set[int]:
    """PIDs of the live actors of `class_name` (e.g. "RayTrainWorker") on this session's Ray:
    asked by address, since other Ray instances may run on the machine."""
    import ray
    from ray.util.state import list_actors

    filters = [("class_name", "=", class_name), ("state", "=", "ALIVE")]
    actors = list_actors(address=ray.get_runtime_context().gcs_address, filters=filters)
    return {a.pid for a in actors}
