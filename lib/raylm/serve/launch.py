"""Starting the Serve app on a Ray cluster: `deploy` (what `raylm serve` runs), with the startup
watch (what it waits on, a timeout, clear errors) and Ray's direct-ingress URLs.

In Python:  url = deploy({"demo": "outputs/serve_demo/model"}, {"port": 8000})
The application itself (ingress, model deployments, `build_app`) is in app.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from ray import serve

from raylm.serve.app import build_application
from raylm.serve.schemas import ServeConfig, ServeStartupError, http_options, load_serve_config

# What Ray's environment needs, where its processes start, for each `serve.ingress` layout:
#   direct   Ray's throughput-optimized Serve: each ingress replica also answers HTTP on its own
#            port (30000 up) on serve.host, so a client skips the proxy hop (measured fastest);
#   haproxy  the same with HAProxy in front on serve.port, balancing over those ports; its stats
#            and metrics ports (8404, 9101) listen on every interface whatever serve.host says;
#   proxy    Ray Serve's own HTTP proxy only.
# Ray reads them once, when it starts: a Ray that `raylm serve` starts gets them; a running
# cluster keeps what it was started with (cluster.yaml starts its nodes with `direct`'s).
INGRESS_ENV: dict[str, dict[str, str]] = {
    "direct": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "proxy": {},
}


def deploy(
    model_paths: dict[str, str],
    serve_cfg: ServeConfig | dict[str, Any] | None = None,
    blocking: bool = False,
) -> str:
    """Start Serve (HTTP on cfg.host:port) and run the app; return its base URL.

    Uses the connected Ray, else `ray.init()` (RAY_ADDRESS or a new local one). `blocking` waits
    until Ctrl-C, then deletes the app.
    """
    import ray

    if not isinstance(serve_cfg, ServeConfig):
        serve_cfg = load_serve_config(serve_cfg or {})
    cfg = serve_cfg.model_copy(update={"models": {**serve_cfg.models, **model_paths}})
    cfg = load_serve_config(cfg.model_dump())  # re-validate the merged model names
    app = build_application(cfg)
    started = start_ray(cfg) if not ray.is_initialized() else False
    serve.start(http_options=http_options(cfg))
    if short := unplaceable(replica_needs(cfg), _node_resources()):
        hint = "replicas wait for a node that fits (an autoscaler), up to serve.startup_timeout_s"
        print(f"raylm serve: warning: {short}; {hint}", flush=True)
    run_until_running(app, cfg)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    url = f"http://{host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"
    if blocking:
        for line in entry_points(cfg, url, started, direct_ingress_urls(cfg)):
            print(f"raylm serve: {line}", flush=True)
        print(f"raylm serve: docs at {url}/docs; Ctrl-C stops", flush=True)
        _wait_for_signal()
        serve.delete(cfg.app_name)
    return url


def start_ray(cfg: ServeConfig, **init_args: Any) -> bool:
    """`ray.init(**init_args)` for serving: connect to RAY_ADDRESS or a Ray running on this
    machine, else start one whose processes get `cfg.ingress`'s switches (INGRESS_ENV).
    True if it started one."""
    import ray

    os.environ.update(INGRESS_ENV[cfg.ingress])  # read by the processes a new local Ray starts
    ray.init(**init_args)
    node = getattr(ray._private.worker, "_global_node", None)
    return bool(node is not None and node.head)


def entry_points(cfg: ServeConfig, url: str, started: bool, direct: list[str]) -> list[str]:
    """Where to send requests, fastest first, each with the layout it takes (what `raylm serve`
    prints once the app runs). `url`: the app on serve.port; `direct`: its ingress replicas' own
    URLs (direct_ingress_urls); `started`: whether this process started the Ray."""
    if direct:
        balance = ", balancing over the ingress replicas" if len(direct) > 1 else ""
        lines = [f"direct ingress (no proxy hop): {u}" for u in direct]
        return [*lines, f"via Ray's proxy{balance}: {url}"]
    if started and cfg.ingress == "haproxy":
        return [f"via HAProxy (direct to the ingress replicas' ports): {url}"]
    if started or cfg.ingress == "proxy":
        return [f"via Ray's proxy: {url}"]
    switches = " ".join(f"{k}={v}" for k, v in INGRESS_ENV[cfg.ingress].items())
    return [  # a running cluster keeps the layout it was started with
        f"{url} (the running cluster's layout: serve.ingress '{cfg.ingress}' takes effect "
        f"where the cluster's Ray starts with {switches})"
    ]


def replica_needs(cfg: ServeConfig) -> dict[str, float]:
    """Resources one replica of the deployment holding the models reserves (ingress: 0 CPUs)."""
    return {k: v for k, v in (("CPU", cfg.num_cpus), ("GPU", cfg.num_gpus)) if v > 0}


def unplaceable(needs: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """Why no live node can hold one replica (checked on node totals), or None if one can."""
    if not needs or any(all(n.get(k, 0) >= v for k, v in needs.items()) for n in nodes):
        return None
    largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
    have = {k: largest.get(k, 0) for k in needs}
    return f"no node has {_fmt_res(needs)} for one replica (largest: {_fmt_res(have)})"


def _fmt_res(res: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in res.items())


def _node_resources() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def _pending(app_name: str) -> str:
    """The app's deployments that are not yet healthy, with Serve's message on each."""
    app = serve.status().applications.get(app_name)
    if app is None:
        return "the application is being created"
    parts = []
    for name, dep in app.deployments.items():
        if dep.status.value != "HEALTHY":
            replicas = ", ".join(f"{n} {state}" for state, n in dep.replica_states.items())
            state = f"{dep.status.value} ({replicas})" if replicas else dep.status.value
            parts.append(f"{name} {state} {_brief(dep.message)}".strip())
    return "; ".join(parts) or f"application {app.status.value}"


def _brief(message: str) -> str:
    """A Serve status message on one line: a replica's traceback becomes its last line."""
    lines = [x.strip() for x in message.strip().splitlines() if x.strip()]
    return " ... ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else "".join(lines)


def run_until_running(app: Any, cfg: ServeConfig, poll_s: float = 2.0) -> None:
    """`serve.run` (which waits until every replica runs), saying what it waits for while it
    waits, and giving up after `cfg.startup_timeout_s` with the app removed.

    Raises ServeStartupError on timeout or when a replica fails to start (Serve's message kept).
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            serve.run(app, name=cfg.app_name, route_prefix=cfg.route_prefix, blocking=False)
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            failure.append(err)

    t0 = time.monotonic()
    runner = threading.Thread(target=run, name="raylm-serve-run", daemon=True)
    runner.start()
    said = None
    while runner.is_alive():
        runner.join(poll_s)
        waited = time.monotonic() - t0
        if not runner.is_alive() or waited < 10:
            continue
        pending = _pending(cfg.app_name)
        if pending != said:  # say it once per change, not every poll
            print(f"raylm serve: waiting ({waited:.0f} s): {pending}", flush=True)
            said = pending
        if waited > cfg.startup_timeout_s:
            serve.delete(cfg.app_name, _blocking=False)
            raise ServeStartupError(
                f"serve app '{cfg.app_name}' not running after {cfg.startup_timeout_s:g} s "
                f"(serve.startup_timeout_s); removed it. Waiting on: {pending}"
            )
    if failure:  # e.g. a replica that cannot load its model: Serve gives up after retries
        err = failure[0]
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise err
        why = _pending(cfg.app_name)  # Serve's error says only which deployment failed
        raise ServeStartupError(f"serve app '{cfg.app_name}' failed to start: {why}") from err


def direct_ingress_urls(cfg: ServeConfig) -> list[str]:
    """The app's ingress replicas' own URLs under Ray's direct ingress, else [].

    Ray turns it on where it starts with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (or
    RAY_SERVE_ENABLE_DIRECT_INGRESS=1): each ingress replica then answers HTTP on its own port
    (30000 up) with the same host as the proxy, skipping the proxy hop. Ray marks it alpha.
    """
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    groups = ray.get(controller.get_target_groups.remote(cfg.app_name))
    loopback = cfg.host in ("127.0.0.1", "localhost", "::1")
    return [  # without direct ingress the groups are the proxies'
        f"http://{'127.0.0.1' if loopback else t.ip}:{t.port}{g.route_prefix.rstrip('/')}"
        for g in groups
        if g.app_name == cfg.app_name and g.protocol.value == "HTTP"
        for t in g.targets
    ]


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM (`docker stop`, Kubernetes), then return to clean up."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
