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


def ensure_auth_token() -> None:
    """Make sure a Ray token exists before a test starts a token-auth cluster with `ray start`.

    `ray start --head` with RAY_AUTH_MODE=token refuses to start without one, and it creates none
    (Ray's `ray.init` does): on a fresh machine a cluster test run alone would fail at setup. Like
    `ray get-auth-token --generate`, this writes ~/.ray/auth_token when no token is found there,
    at RAY_AUTH_TOKEN_PATH or in RAY_AUTH_TOKEN."""
    import os
    from pathlib import Path

    from ray._private.authentication.authentication_token_setup import generate_and_save_token

    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    if not (os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file()):
        generate_and_save_token()
