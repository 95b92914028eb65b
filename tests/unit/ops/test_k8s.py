"""KubeRay manifests in examples/k8s: the fields KubeRay requires, and raylm's choices.

pytest tests/unit/ops/test_k8s.py
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "examples" / "k8s"
SPEC_KEY = {"RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}


def _load(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d]
    assert len(docs) == 1, f"{name}: expected one document"
    return docs[0]


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _load("rayjob-train.yaml")


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return _load("rayservice-serve.yaml")


def _check_cluster_spec(spec: dict, where: str) -> None:
    assert spec.get("rayVersion", "").startswith("2.60"), f"{where}: rayVersion"
    assert spec.get("enableInTreeAutoscaling") is True, f"{where}: autoscaling off"
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: token auth off"

    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict), f"{where}: head rayStartParams"
    # rayStartParams values are strings in the CRD; "0" keeps tasks off the head.
    assert head["rayStartParams"].get("num-cpus") == "0", f"{where}: head takes CPU work"
    _check_pod(head["template"], f"{where}.headGroupSpec")
    assert "nvidia.com/gpu" not in str(head["template"]), f"{where}: GPU on the head"

    groups = spec["workerGroupSpecs"]
    assert groups, f"{where}: no worker groups"
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names), f"{where}: duplicate groupName"
    for g in groups:
        w = f"{where}.workerGroupSpecs[{g['groupName']}]"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", g["groupName"]), w
        for key in ("replicas", "minReplicas", "maxReplicas"):
            assert isinstance(g[key], int) and g[key] >= 0, f"{w}: {key}"
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], w
        assert g["maxReplicas"] >= 1, w
        assert isinstance(g["rayStartParams"], dict), w
        _check_pod(g["template"], w)


def _check_pod(template: dict, where: str) -> None:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: no containers"
    ray_container = containers[0]  # KubeRay runs Ray in the first container
    assert ray_container.get("name"), f"{where}: container name"
    assert ray_container.get("image"), f"{where}: container image"
    assert ":" in ray_container["image"].rsplit("/", 1)[-1], f"{where}: image tag not pinned"
    assert not ray_container["image"].endswith(":latest"), f"{where}: latest tag"
    res = ray_container.get("resources", {})
    assert res.get("limits") and res.get("requests"), f"{where}: set requests and limits"


def test_rayjob_required_fields(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["name"]
    spec = rayjob["spec"]
    _check_cluster_spec(spec[SPEC_KEY["RayJob"]], "RayJob.spec.rayClusterSpec")


def test_rayjob_runs_training_and_cleans_up(rayjob):
    spec = rayjob["spec"]
    assert spec["entrypoint"].split() == [
        "python",
        "ray_jobs/train.py",
        "--config",
        "examples/sentiment_zh.yaml",
    ]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]
    workers = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert any(
        "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
        for g in workers
    ), "no GPU worker group"


def test_rayservice_required_fields(rayservice):
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice["kind"] == "RayService"
    assert rayservice["metadata"]["name"]
    _check_cluster_spec(rayservice["spec"][SPEC_KEY["RayService"]], "RayService.rayClusterConfig")


def _serve_config(rayservice: dict) -> dict:
    raw = rayservice["spec"]["serveConfigV2"]
    assert isinstance(raw, str), "serveConfigV2 is a YAML string, not a mapping"
    return yaml.safe_load(raw)


def test_rayservice_serve_config(rayservice):
    serve = _serve_config(rayservice)
    apps = serve["applications"]
    assert apps and len({a["name"] for a in apps}) == len(apps)
    app = apps[0]
    assert app["import_path"] == "raylm.serve.app:build_app"
    assert isinstance(app.get("args"), dict) and app["args"].get("config")
    # The proxy must listen beyond loopback inside the pod, or the Serve Service gets nothing.
    assert serve["http_options"]["host"] == "0.0.0.0"


def test_serve_config_fields_known_to_ray_serve(rayservice):
    # Ray's models for `serve deploy` configs ignore unknown keys, so a typo would deploy
    # silently with defaults: check keys against the models' fields, then validate.
    pytest.importorskip("ray.serve")
    from ray.serve.schema import HTTPOptionsSchema, ServeApplicationSchema, ServeDeploySchema

    serve = _serve_config(rayservice)
    ServeDeploySchema.model_validate(serve)
    assert set(serve) <= set(ServeDeploySchema.model_fields)
    assert set(serve["http_options"]) <= set(HTTPOptionsSchema.model_fields)
    for app in serve["applications"]:
        assert set(app) <= set(ServeApplicationSchema.model_fields), app["name"]


def test_build_app_accepts_the_args(rayservice, monkeypatch):
    # What the RayService does with `args`, minus loading models: raylm's own validation.
    app_module = pytest.importorskip("raylm.serve.app")
    monkeypatch.setattr(app_module, "build_application", lambda cfg: cfg)
    args = dict(_serve_config(rayservice)["applications"][0]["args"])
    # The image holds this repo at /home/ray/raylm (examples/k8s/Dockerfile).
    args["config"] = str(ROOT / Path(args["config"]).relative_to("/home/ray/raylm"))
    cfg = app_module.build_app(args)
    assert cfg.models, "no model to serve"
    assert cfg.autoscaling is not None and cfg.autoscaling.min_replicas >= 1


def test_dockerfile_pins_the_same_ray():
    text = (K8S / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert re.fullmatch(r"rayproject/ray:2\.60\.\d+-py311-cu\d+", base), base
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text(encoding="utf-8"))
    assert cluster["docker"]["image"] == base, "cluster.yaml and the k8s image diverge"
