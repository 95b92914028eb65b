"""Shared fixtures. `ray_session`: one real local Ray for the whole test session."""

import pytest


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # The dashboard stays on: Train V2 asks the State API that lives there
        # (docs/architecture.md, facts checked).
        ray.init(num_cpus=4, include_dashboard=True, log_to_driver=True)
    yield ray
