"""cluster.yaml: valid for the installed Ray's launcher, and keeps its security and head choices.

pytest tests/unit/ops/test_cluster_yaml.py
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CLUSTER_YAML = ROOT / "cluster.yaml"


def _ray_dir() -> Path:
    # Locate the wheel without importing ray (slow, and unnecessary for a schema check).
    return Path(importlib.util.find_spec("ray").origin).parent


@pytest.fixture(scope="module")
def cfg() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workers(cfg) -> dict:
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


def test_matches_ray_schema(cfg):
    schema = json.loads((_ray_dir() / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)


def test_ray_up_offline_preparation_accepts_it(cfg):
    # What `ray up` does before it talks to AWS: merge defaults, then Ray's own cross-field checks.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_head_takes_no_work(cfg):
    head = cfg["available_node_types"][cfg["head_node_type"]]
    # CPU 0: no CPU-requesting task/actor is placed on the head; GPU 0 and a CPU instance type.
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert not re.match(r"(g|p)\d", head["node_config"]["InstanceType"]), "head must be CPU-only"
    assert head.get("max_workers", 0) == 0


def test_spot_and_on_demand_gpu_types(workers):
    def is_spot(node):
        return node["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"

    assert any(is_spot(n) for n in workers.values()), "no spot worker type"
    assert any(not is_spot(n) for n in workers.values()), "no on-demand worker type"
    for name, node in workers.items():
        assert re.match(r"(g|p)\d", node["node_config"]["InstanceType"]), f"{name}: not a GPU type"
        assert 0 <= node.get("min_workers", 0) <= node["max_workers"], name


def test_worker_caps_fit_the_global_cap(cfg, workers):
    assert sum(n.get("min_workers", 0) for n in workers.values()) <= cfg["max_workers"]
    assert all(n["max_workers"] <= cfg["max_workers"] for n in workers.values())


def test_idle_timeout_set(cfg):
    assert 0 < cfg["idle_timeout_minutes"] <= 60


def test_image_pins_ray_2_60(cfg):
    image = cfg["docker"]["image"]
    assert re.fullmatch(r"rayproject/ray(-ml)?:2\.60\.\d+-py3\d+-(cu\d+|gpu)", image), image
    assert "latest" not in image and "nightly" not in image


def test_every_node_type_uses_a_pre_created_security_group(cfg):
    # Without SecurityGroupIds Ray creates a group that allows SSH from 0.0.0.0/0.
    for name, node in cfg["available_node_types"].items():
        assert node["node_config"].get("SecurityGroupIds"), f"{name}: no SecurityGroupIds"


def test_ray_would_not_create_or_open_a_security_group(cfg):
    # Ray's AWS bootstrap step returns before any AWS call when every type names its groups.
    pytest.importorskip("boto3")  # the AWS provider module imports it; not a raylm dependency
    from ray.autoscaler._private.aws.config import _configure_security_group

    before = copy.deepcopy(cfg)
    assert _configure_security_group(copy.deepcopy(cfg)) == before


def test_no_world_open_ingress(cfg):
    text = CLUSTER_YAML.read_text(encoding="utf-8")
    config_only = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "0.0.0.0/0" not in config_only
    assert "::/0" not in config_only
    assert "IpPermissions" not in json.dumps(cfg.get("provider", {}))


def test_token_auth_on_every_ray_start(cfg):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts, key
        assert all("RAY_AUTH_MODE=token" in c for c in starts), key
        # The token comes from the secret store at start time, never from this file.
        assert any("auth_token" in c and "secretsmanager" in c for c in cfg[key]), key


def test_nodes_start_with_the_default_serve_layout(cfg):
    """Serve reads its layout switches where Ray starts: cluster.yaml starts every node with
    those of the default `serve.ingress` (direct ingress)."""
    from raylm.serve.launch import INGRESS_ENV
    from raylm.serve.schemas import ServeConfig

    default = ServeConfig.model_fields["ingress"].default
    switches = [f"{k}={v}" for k, v in INGRESS_ENV[default].items()]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert all(s in c.split("ray start")[0] for c in starts for s in switches), key


def test_no_secret_in_file():
    text = CLUSTER_YAML.read_text(encoding="utf-8")
    assert not re.search(r"RAY_AUTH_TOKEN\s*[=:]\s*(?!\$)\S", text)  # `=$(aws ...)` is fine
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # AWS access key id
    assert "aws_secret_access_key" not in text.lower()
