"""`raylm serve` target resolution, `--build` output (a valid `serve deploy` config), build_app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from raylm.config import ConfigError
from raylm.serve.cli import model_name, resolve_model_dir, serve_command
from raylm.serve.schemas import read_serve_section

ROOT = Path(__file__).resolve().parents[3]


def _fake_model(path: Path, task: str) -> Path:
    # Only the files the builder reads: no weights are loaded until a replica starts.
    path.mkdir(parents=True)
    arch = "BertForSequenceClassification" if task == "classification" else "GPT2LMHeadModel"
    (path / "config.json").write_text(json.dumps({"architectures": [arch]}))
    (path / "raylm.json").write_text(json.dumps({"task": task}))
    return path


def test_run_folder_means_its_model(tmp_path):
    model = _fake_model(tmp_path / "runs" / "my run" / "model", "classification")
    assert resolve_model_dir(tmp_path / "runs" / "my run") == model.resolve()
    assert resolve_model_dir(model) == model.resolve()
    assert model_name(model) == "my-run"
    with pytest.raises(FileNotFoundError, match="raylm export"):
        resolve_model_dir(tmp_path / "runs")


def test_read_serve_section_recipe_or_bare(tmp_path):
    assert read_serve_section(ROOT / "examples" / "serve.yaml")["port"] == 8000
    bare = tmp_path / "bare.yaml"
    bare.write_text("port: 9000\n")
    assert read_serve_section(bare) == {"port": 9000}
    with pytest.raises(ConfigError, match="not found"):
        read_serve_section(tmp_path / "missing.yaml")


def test_build_writes_a_serve_deploy_config(tmp_path):
    pytest.importorskip("ray.serve")
    from ray.serve.schema import ServeDeploySchema

    _fake_model(tmp_path / "run" / "model", "classification")
    lm = _fake_model(tmp_path / "lm", "causal_lm")
    cfg = tmp_path / "serve.yaml"
    raw = {"port": 8100, "models": {"lm": str(lm)}, "replicas": 2, "colocate": False}
    cfg.write_text(yaml.safe_dump(raw))
    out = Path(serve_command(str(tmp_path / "run"), str(cfg), build=True))
    assert out == tmp_path / "run" / "serve_deploy.yaml"
    doc = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(doc)
    app = doc["applications"][0]
    assert app["import_path"] == "raylm.serve.app:build_app"
    assert set(app["args"]["models"]) == {"run", "lm"} and app["args"]["replicas"] == 2
    assert doc["http_options"]["host"] == "127.0.0.1" and doc["http_options"]["port"] == 8100

    from ray.serve import Application

    from raylm.serve.app import Ingress, build_app
    from raylm.serve.models import ClassifierModel, GeneratorModel

    bound = build_app(app["args"])  # what `serve deploy` runs on the cluster
    assert isinstance(bound, Application)
    ingress = bound._bound_deployment  # Ray 2.60: the Application's top (ingress) deployment
    assert ingress.name == "Ingress" and ingress.func_or_class is Ingress.func_or_class
    handles, tasks, served = ingress.init_args[:3]
    # The two models the args name, each in its own deployment of its task's kind.
    assert tasks == {"run": "classification", "lm": "causal_lm"}
    assert served["models"] == app["args"]["models"] and served["port"] == 8100
    assert handles.keys() == {"run", "lm"}
    kinds = {"run": ClassifierModel, "lm": GeneratorModel}
    for name, handle in handles.items():
        assert isinstance(handle, Application)
        model = handle._bound_deployment
        assert model.name == f"model_{name}" and model.func_or_class is kinds[name].func_or_class
        assert model.init_args[:2] == (name, app["args"]["models"][name])
        assert model.num_replicas == 2  # `replicas: 2` applies to every model deployment
    assert ingress.num_replicas == 1  # the ingress only routes: replicas are for the models
    # `serve run` style: flat dotted string args over a recipe's serve section.
    flat = build_app(
        {"config": str(ROOT / "examples" / "serve.yaml"), "models.lm": str(lm), "port": "8001"}
    )
    handles, tasks, served = flat._bound_deployment.init_args[:3]
    assert tasks == {"lm": "causal_lm"} and handles == {}  # the recipe colocates its models
    assert served["port"] == 8001 and served["request_timeout_s"] == 30  # the recipe's value
    with pytest.raises(ConfigError, match="serve.checkpoint"):
        build_app({"models.lm": str(lm), "checkpoint": "s3://x"})
    with pytest.raises(ConfigError, match="no config.json"):
        build_app({"models.x": str(tmp_path / "nothing")})


def test_model_options_replicas_or_autoscaling():
    pytest.importorskip("ray.serve")
    from raylm.serve.app import model_options
    from raylm.serve.schemas import load_serve_config

    fixed = model_options(load_serve_config({"replicas": 3, "num_gpus": 1}), "m")
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 1}
    auto = model_options(load_serve_config({"autoscaling": {"max_replicas": 4}}), "m")
    assert "num_replicas" not in auto and auto["autoscaling_config"]["max_replicas"] == 4
    assert auto["max_queued_requests"] == 64 and auto["name"] == "model_m"
    from ray.serve.config import AutoscalingConfig

    assert AutoscalingConfig(**auto["autoscaling_config"]).max_replicas == 4  # Serve accepts it


def test_handle_call_errors_map_to_api_errors():
    pytest.importorskip("ray.serve")
    import asyncio

    from ray.serve.exceptions import BackPressureError

    from raylm.serve.app import call
    from raylm.serve.schemas import ApiError

    async def slow():
        await asyncio.sleep(5)

    async def rejected():
        raise BackPressureError(num_queued_requests=4, max_queued_requests=4)

    for coro, status in ((slow(), 504), (rejected(), 503)):
        with pytest.raises(ApiError) as err:
            asyncio.run(call(coro, timeout_s=0.05))
        assert err.value.status == status


def test_colocate_builds_one_deployment_with_the_model_settings(tmp_path):
    pytest.importorskip("ray.serve")
    from raylm.serve.app import build_application
    from raylm.serve.schemas import load_serve_config

    models = {n: str(_fake_model(tmp_path / n, t)) for n, t in (("c", "classification"),)}
    raw = {"models": models, "replicas": 2, "max_queued_requests": 5, "num_cpus": 2}
    separate = build_application(load_serve_config({**raw, "colocate": False}))
    colocated = build_application(load_serve_config(raw))  # the default
    # The separate layout's ingress holds a handle per model; the colocated one builds them.
    assert separate._bound_deployment.init_args[0].keys() == {"c"}
    ingress = colocated._bound_deployment
    assert ingress.init_args[0] == {} and ingress.init_args[1] == {"c": "classification"}
    assert ingress.num_replicas == 2 and ingress.max_queued_requests == 5
    assert ingress.ray_actor_options["num_cpus"] == 2


def test_batch_wait_applies_only_with_company():
    pytest.importorskip("ray.serve")
    from raylm.serve.models import AdaptiveBatchWait

    class Batched:  # the two setters `@serve.batch` gives a method
        def set_max_batch_size(self, n):
            self.size = n

        def set_batch_wait_timeout_s(self, s):
            self.waits.append(s)

    fn = Batched()
    fn.waits = []
    company = AdaptiveBatchWait(fn, {"max_batch_size": 8, "batch_wait_timeout_s": 0.02})
    assert fn.size == 8
    # Alone: dispatch at once; then a second request arrives while the first is in flight.
    with company.track(1), company.track(1):
        pass
    with company.track(3):  # one request of three texts: they can share a batch
        pass
    assert fn.waits == [0.0, 0.02, 0.02] and company.items == 0


def test_unplaceable_replicas_are_named_before_serve_waits_on_them():
    from raylm.serve.launch import replica_needs, unplaceable
    from raylm.serve.schemas import load_serve_config

    cpu_nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 8.0}]
    assert replica_needs(load_serve_config({"num_cpus": 0})) == {}
    assert unplaceable(replica_needs(load_serve_config({})), cpu_nodes) is None
    needs = replica_needs(load_serve_config({"num_cpus": 4, "num_gpus": 1}))
    assert unplaceable(needs, cpu_nodes) == (
        "no node has 4 CPU, 1 GPU for one replica (largest: 8 CPU, 0 GPU)"
    )
    # Enough in total but not on one node: still unplaceable.
    split = [{"CPU": 2.0, "GPU": 1.0}, {"CPU": 8.0}]
    assert unplaceable(needs, split).endswith("(largest: 2 CPU, 1 GPU)")
    assert unplaceable(needs, [*split, {"CPU": 4.0, "GPU": 8.0}]) is None
    assert (
        unplaceable(needs, []) == "no node has 4 CPU, 1 GPU for one replica (largest: 0 CPU, 0 GPU)"
    )


def test_entry_points_say_which_layout_each_url_takes():
    from raylm.serve.launch import INGRESS_ENV, entry_points
    from raylm.serve.schemas import load_serve_config

    url, cfg = "http://127.0.0.1:8000", load_serve_config({})
    one = ["http://127.0.0.1:30000"]
    assert entry_points(cfg, url, True, one) == [
        "direct ingress (no proxy hop): http://127.0.0.1:30000",
        "via Ray's proxy: http://127.0.0.1:8000",
    ]
    two = entry_points(cfg, url, False, [*one, "http://127.0.0.1:30001"])
    assert two[-1] == "via Ray's proxy, balancing over the ingress replicas: " + url
    haproxy = load_serve_config({"ingress": "haproxy"})
    assert entry_points(haproxy, url, True, []) == [
        "via HAProxy (direct to the ingress replicas' ports): " + url
    ]
    assert entry_points(load_serve_config({"ingress": "proxy"}), url, False, []) == [
        "via Ray's proxy: " + url
    ]
    # A running cluster without the switches: the URL, and what would turn the layout on
    (line,) = entry_points(cfg, url, False, [])
    assert line.startswith(url) and "RAY_SERVE_THROUGHPUT_OPTIMIZED=1" in line
    assert INGRESS_ENV["proxy"] == {} and set(INGRESS_ENV) == {"direct", "haproxy", "proxy"}


def test_serve_status_messages_are_told_on_one_line():
    from raylm.serve.launch import _brief

    assert _brief("") == ""
    assert _brief("  waiting for a node \n") == "waiting for a node"
    trace = "Failed 3 times. Error:\nTraceback (most recent call last):\n  File x\nValueError: bad"
    assert _brief(trace) == "Failed 3 times. Error: ... ValueError: bad"
