"""The engine deployment's options, deploying it on a running Ray cluster, and `mcnet-rt cluster` itself: the
page (serve's ingress app, with its token and checks) is served from this process, offers go to the replicas."""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before Ray loads: no usage report leaves the machine
import ray  # noqa: E402
from ray import serve  # noqa: E402

from ..errors import InputError  # noqa: E402
from ..serve.limits import IDLE_TIMEOUT_S  # noqa: E402
from ..serve.server import ingress_app, serve as serve_app  # noqa: E402
from .calls import ClusterCalls  # noqa: E402
from .replica import EngineReplica  # noqa: E402

log = logging.getLogger("mcnet_rt.cluster")
APP_NAME = "mcnet-rt"


@dataclass
class EngineOptions:
    """`sessions()` -> (make_session, process) is called once in each replica (it loads the model there).
    `gpu_resource` None: one real GPU per replica (num_gpus=1); a name: one unit of that custom resource."""

    sessions: Callable
    replicas: int
    sessions_per_gpu: int = 8
    ice_servers: list[dict] = field(default_factory=list)
    gpu_resource: str | None = None
    idle_s: float = IDLE_TIMEOUT_S
    stuck_after_s: float = 1.0
    health_check_period_s: float = 2.0

    def actor_options(self) -> dict:
        if self.gpu_resource is None:
            return {"num_gpus": 1, "num_cpus": 1}
        return {"resources": {self.gpu_resource: 1}, "num_cpus": 0}


def ice_servers(urls: list[str], username: str | None, credential: str | None) -> list[dict]:
    """RTCIceServer dicts (for the page and aiortc alike) from STUN/TURN URLs; turn: ones need credentials."""
    servers = []
    for url in urls:
        if url.startswith("stun:"):
            servers.append({"urls": url})
        elif url.startswith(("turn:", "turns:")):
            if not username or not credential:
                raise InputError(f"ICE server {url}: a TURN server needs a username and a credential",
                                 options=("ice_username", "ice_credential"))
            servers.append({"urls": url, "username": username, "credential": credential})
        else:
            raise InputError(f"ICE server {url}: expected a stun:, turn: or turns: URL", options=("ice_server",))
    return servers


def deploy(options: EngineOptions) -> Any:
    """Deploy the engines (Ray must be initialised); the deployment's handle once every replica is up."""
    serve.start(proxy_location="Disabled")  # the page is served by the ingress; Serve opens no HTTP port
    # A call waits for a free slot in the router's queue (bounded here; the ingress gives up after its own timeout).
    deployment = serve.deployment(
        EngineReplica, name="engine", num_replicas=options.replicas, ray_actor_options=options.actor_options(),
        max_ongoing_requests=options.sessions_per_gpu, max_queued_requests=options.replicas * options.sessions_per_gpu,
        health_check_period_s=options.health_check_period_s, graceful_shutdown_timeout_s=5)
    app = deployment.bind(options.sessions, options.sessions_per_gpu, options.ice_servers, options.idle_s,
                          options.stuck_after_s)
    return serve.run(app, name=APP_NAME, route_prefix=None)


def gpus_in_cluster() -> int:
    count = int(ray.cluster_resources().get("GPU", 0))
    if count < 1:
        raise InputError("the Ray cluster has no GPU (start its nodes with `ray start`, which finds their GPUs, "
                         "or give the number of GPUs)", options=("gpus",))
    return count


def run(args: argparse.Namespace, token: str | None, session_functions: Callable[[], tuple]) -> int:
    """`mcnet-rt cluster`: join the cluster, deploy one engine per GPU, serve the page until a signal; the
    deployment is removed at the end (its GPUs freed). `session_functions` makes a replica's (make_session,
    process) on its GPU (the command's model options, bound by the CLI)."""
    servers = ice_servers(args.ice_server, args.ice_username, args.ice_credential)
    ray.init(address=args.address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        replicas = args.gpus if args.gpus is not None else gpus_in_cluster()
        options = EngineOptions(session_functions, replicas, args.sessions_per_gpu, servers)
        handle = deploy(options)
        log.info("%d engines, %d sessions each", replicas, args.sessions_per_gpu)
        return serve_app(ingress_app(ClusterCalls(handle), token, servers), args.host, args.port, token)
    finally:
        serve.delete(APP_NAME)
        ray.shutdown()
