"""Shared fixtures. `ray_session`: one real local Ray for the whole test session."""

import os

import pytest

# No model hub here nor in CI: a hub id then fails at once instead of after the network's
# retries (20 s a try in CI). huggingface_hub reads this once, when first imported, so it is
# set here, before any test module imports transformers; subprocesses inherit it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # The dashboard stays on: Train V2 asks the State API that lives there
        # (docs/architecture.md, facts checked).
        ray.init(num_cpus=4, include_dashboard=True, log_to_driver=True)
    yield ray


def pytest_collection_modifyitems(config, items):
    """Tests marked `variant` run the same promise as another test in another layout (HAProxy
    beside the default direct ingress, ZeRO-0 on one worker beside ZeRO-1/2/3): skipped by
    `make test`, whose suite must stay under 40 minutes on 2 cores; `make test-variants` runs
    them."""
    if os.environ.get("RAYLM_TEST_VARIANTS") == "1":
        return
    why = pytest.mark.skip(reason="a layout variant (make test-variants runs it)")
    for item in items:
        if "variant" in item.keywords:
            item.add_marker(why)
