"""Shared by the cluster tests and benchmarks/cluster.py: a local Ray cluster of simulated nodes, each with one
unit of a custom resource standing in for a GPU, the engines deployed on it (untrained `small` on the CPU), and the
ingress app in front. Everything stays on loopback (Ray's addresses, ICE in the replicas); Ray is stopped at the
end. Run where no packet can leave loopback (`unshare -n`, as the serve tests)."""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before Ray loads: no usage report

import pytest  # noqa: E402

ray = pytest.importorskip("ray", exc_type=ImportError)  # absent from the GPU image: the cluster tests skip there
pytest.importorskip("aiortc", exc_type=ImportError)
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from mcnet_rt.cli import build_parser  # noqa: E402
from mcnet_rt.cluster.calls import ClusterCalls  # noqa: E402
from mcnet_rt.cluster.deploy import EngineOptions, deploy  # noqa: E402
from mcnet_rt.serve.server import ingress_app  # noqa: E402
from support.serve_helpers import running_server  # noqa: E402

GPU = "fake_gpu"
NODE = {"num_cpus": 1, "resources": {GPU: 1}, "node_ip_address": "127.0.0.1",
        "object_store_memory": 100 * 1024 * 1024}


def loopback_session_functions(args):
    """A replica's (make_session, process): the real model from `args`, and in that replica's process ICE limited
    to loopback as `serve_helpers.loopback_ice` does in-process."""
    import aioice.ice

    from mcnet_rt.cli.serve import serve_session_functions

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    return serve_session_functions(args)


@contextlib.contextmanager
def local_cluster(nodes: int = 2, node: dict = NODE):
    """A Ray cluster of `nodes` simulated nodes on this machine, this process connected as its driver; yields its
    address."""
    saved = os.environ.get("PYTHONPATH")
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    os.environ["PYTHONPATH"] = os.pathsep.join(sys.path)  # the replicas import this module
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node)
        ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING",
                 _node_ip_address="127.0.0.1")
        yield cluster.address
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        for number, handler in handlers.items():  # ray.init installs its own, which outlive ray.shutdown
            signal.signal(number, handler)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@contextlib.contextmanager
def local_engines(nodes: int = 2, sessions_per_gpu: int = 1, stuck_after_s: float = 20.0):
    """One engine per simulated node; yields the deployment's handle once they are all up."""
    with local_cluster(nodes):
        args = build_parser().parse_args(["cluster", "--untrained", "small", "--device", "cpu"])
        yield deploy(EngineOptions(functools.partial(loopback_session_functions, args), replicas=nodes,
                                   sessions_per_gpu=sessions_per_gpu, gpu_resource=GPU, stuck_after_s=stuck_after_s))


@contextlib.contextmanager
def ingress(handle, token: str | None = None, retry_after_s: int = 1):
    """The ingress app forwarding to `handle`, on 127.0.0.1 from a background thread; yields its base URL."""
    calls = ClusterCalls(handle, place_timeout_s=3.0, retry_after_s=retry_after_s)
    with running_server(ingress_app(calls, token)) as (url, _):
        yield url


def replica_actor(name: str):
    return ray.get_actor(name, namespace="serve")
