"""Loopback load test of ``sim4seg serve``: C concurrent clients for S seconds (default 32 for 60 s).

The server runs as its own process (``sim4seg serve``, API and page, default queue 8); every client
loops ``POST /v1/segment`` with a bundled example image and its query, and on a deliberate refusal
(503/429) waits the ``Retry-After`` it was given. Printed: requests/s, p50/p95/p99 latency of the
answered requests, the refusals, the errors (anything else: must be 0), the server's resident memory
(VmRSS) at start and end, and the per-stage latency split of one request on the idle server. The
baseline measured in the same run: the same request sent by one client at a time (sequential
latency), and the per-request HTTP overhead as its ratio to the in-server ``predict`` time.

Run: ``python benchmarks/bench_serve.py [--checkpoint DIR] [--clients 32] [--seconds 60]``. Without a
checkpoint the tiny model of ``configs/demo.yaml`` is trained for 60 steps on a synthetic M3DS first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench_tts import quick_checkpoint  # the same small trained model (benchmarks/ is the script's path)

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "sim4seg" / "serve" / "examples"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q / 100 * len(v) + 0.5)) - 1))]


async def load(url: str, files: list[tuple[bytes, str]], clients: int, seconds: float) -> dict:
    lat, refused, errors, kinds = [], 0, 0, {}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def worker(i: int):
            nonlocal refused, errors
            k = i
            while time.perf_counter() < stop:
                data, query = files[k % len(files)]
                k += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        f"{url}/v1/segment",
                        files={"image": ("x.png", data, "image/png")},
                        data={"query": query, "png": "true"},
                    )
                except httpx.HTTPError as e:
                    errors += 1
                    kinds[type(e).__name__] = kinds.get(type(e).__name__, 0) + 1
                    continue
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t0)
                elif r.status_code in (429, 503):
                    refused += 1
                    await asyncio.sleep(
                        min(float(r.headers.get("retry-after", 1)), max(0.0, stop - time.perf_counter()))
                    )
                else:
                    errors += 1
                    kinds[str(r.status_code)] = kinds.get(str(r.status_code), 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    return {"ok": len(lat), "lat": lat, "refused": refused, "errors": errors, "kinds": kinds, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--queue", type=int, default=8)
    args = ap.parse_args()
    rows = json.loads((EXAMPLES / "examples.json").read_text())
    files = [((EXAMPLES / r["file"]).read_bytes(), r["query"]) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else quick_checkpoint(Path(tmp))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        cmd = [
            sys.executable,
            "-m",
            "sim4seg",
            "serve",
            "--checkpoint",
            str(ckpt),
            "--port",
            str(port),
            "--queue",
            str(args.queue),
            "--max-new-tokens",
            "32",
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.5)
            # warm-up, then the baseline: one client, sequential
            for data, query in files:
                httpx.post(
                    f"{url}/v1/segment",
                    files={"image": ("x.png", data, "image/png")},
                    data={"query": query},
                    timeout=300,
                ).raise_for_status()
            rss0 = rss_mib(proc.pid)
            seq, inner = [], []
            for i in range(10):
                data, query = files[i % len(files)]
                t0 = time.perf_counter()
                r = httpx.post(
                    f"{url}/v1/segment",
                    files={"image": ("x.png", data, "image/png")},
                    data={"query": query},
                    timeout=300,
                )
                seq.append(time.perf_counter() - t0)
                r.raise_for_status()
                t = r.json()["timings"]
                inner.append(t["decode_s"] + t["read_encode_s"] + t["predict_s"])
            res = asyncio.run(load(url, files, args.clients, args.seconds))
            rss1 = rss_mib(proc.pid)
            data, query = files[0]
            one = httpx.post(
                f"{url}/v1/segment", files={"image": ("x.png", data, "image/png")}, data={"query": query}, timeout=300
            ).json()["timings"]
        finally:
            proc.terminate()
            proc.wait(30)
    lat = res["lat"]
    print(
        f"sim4seg serve load test: {args.clients} clients for {args.seconds:g} s on loopback, queue {args.queue}, "
        f"one model worker, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, {os.cpu_count()} CPU(s)"
    )
    print(f"  answered {res['ok']} requests in {res['wall']:.1f} s: {res['ok'] / res['wall']:.2f} requests/s")
    if lat:
        print(
            f"  latency (answered): p50 {1000 * pct(lat, 50):.0f} ms, p95 {1000 * pct(lat, 95):.0f} ms, "
            f"p99 {1000 * pct(lat, 99):.0f} ms"
        )
    print(
        f"  refused with 503/429 + Retry-After (deliberate): {res['refused']}; errors: {res['errors']} {res['kinds'] or ''}"
    )
    print(f"  server RSS: {rss0:.0f} MiB at start, {rss1:.0f} MiB at end")
    print(
        f"  baseline, one client at a time (10 requests): p50 {1000 * statistics.median(seq):.0f} ms; "
        f"in-server decode+encode+predict p50 {1000 * statistics.median(inner):.0f} ms "
        f"(HTTP + multipart + JSON overhead: {statistics.median(seq) / statistics.median(inner):.2f}x)"
    )
    print(
        "  one request on the idle server, per stage (ms): "
        + ", ".join(f"{k[:-2]} {1000 * v:.1f}" for k, v in one.items())
    )


if __name__ == "__main__":
    main()
