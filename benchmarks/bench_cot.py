"""Throughput of ``cot generate`` against a local server that answers after a fixed delay.

Each sample takes two requests (medical assistant, then critic, who accepts), so at
concurrency C the ideal throughput is ``C / (2 · delay)`` samples/s. The pipeline's own
overhead (image read + encode, JSON, HTTP, fsync'ed results) shows as a ratio below 1.
The server runs in another process so that it does not compete for this one's GIL.

Several servers: each server then has ``--slots`` request slots (a GPU server's batch
capacity; more requests wait), so one server alone gives at most ``slots / (2 · delay)``
samples/s and ``--servers`` of them, used through the pool with ``--max-per-server
slots``, ideally ``servers`` times that; both are measured in the same run.

    python benchmarks/bench_cot.py [--delay 0.1] [--concurrency 1 8 32] [--servers 3 --slots 8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPLY_MEDICAL = (
    "This is an endoscopy image. A rounded, well-defined lesion protrudes from the mucosa "
    "with a smooth surface.\nDiagnosis: {label}."
)
REPLY_CRITIC = "VERDICT: ACCEPT\nREASONS:\n- none"


def _serve(delay: float, port_queue, slots: int = 0) -> None:
    import threading

    gate = threading.BoundedSemaphore(slots) if slots else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as real servers (uvicorn, vLLM) do

        def log_message(self, *args):
            pass

        def _send(self, obj) -> None:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send({"data": [{"id": "bench"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if gate is not None:
                with gate:
                    time.sleep(delay)
            else:
                time.sleep(delay)
            system = body["messages"][0]["content"]
            user = next(p["text"] for p in body["messages"][1]["content"] if p["type"] == "text")
            if "critical assistant" in system:
                reply = REPLY_CRITIC
            else:
                label = user.split("Known diagnosis: ", 1)[1].split("\n", 1)[0]
                reply = REPLY_MEDICAL.format(label=label)
            self._send({"choices": [{"message": {"role": "assistant", "content": reply}}]})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.request_queue_size = 128
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


def bench(url: str | list[str], root: Path, samples, concurrency: int, out: Path, max_per_server: int = 0) -> float:
    from sim4seg.cot.backends.openai import OpenAIBackend
    from sim4seg.cot.backends.pool import PoolPolicy
    from sim4seg.cot.pipeline import CotPipeline
    from sim4seg.cot.roles import Prompts
    from sim4seg.cot.runner import run
    from sim4seg.cot.store import ResultStore
    from sim4seg.data.schema import read_info

    backend = OpenAIBackend(url, "bench", timeout=30, pool=PoolPolicy(max_per_server=max_per_server))
    pipeline = CotPipeline(backend, backend, Prompts.load(), root, read_info(root).subsets)
    with ResultStore(out) as store:
        summary = run(pipeline, samples, store, concurrency=concurrency, progress=False)
    assert summary.status["accepted"] == len(samples), summary.text()
    return len(samples) / summary.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=0.1, help="server latency per request, seconds (default 0.1)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--rounds", type=float, default=8.0, help="samples per run = rounds x concurrency (min 16)")
    ap.add_argument("--servers", type=int, default=3, help="servers of the multi-server case (0: skip it; default 3)")
    ap.add_argument("--slots", type=int, default=8, help="request slots per server in that case (default 8)")
    args = ap.parse_args()

    from sim4seg.data.schema import read_split
    from sim4seg.data.synthetic import synthesize

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(args.delay, ports), daemon=True)
    servers = [server] + [
        ctx.Process(target=_serve, args=(args.delay, ports, args.slots), daemon=True) for _ in range(args.servers)
    ]
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
    for p in servers[1:]:
        p.start()
    slotted = [f"http://127.0.0.1:{ports.get(timeout=30)}/v1" for _ in servers[1:]]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            multi = args.servers * args.slots
            need = max(16, int(args.rounds * max(args.concurrency + [multi])))
            synthesize(tmp / "m3ds", int(need * 1.25) + 20, 0, size_range=(224, 320))
            samples = read_split(tmp / "m3ds", "train")
            print(
                f"server delay {args.delay * 1000:.0f} ms/request, 2 requests/sample; "
                f"ideal = concurrency / (2 x delay); images {len(samples)} synthetic 224-320 px; "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
            )
            print(f"{'concurrency':>11} {'samples':>8} {'samples/s':>10} {'ideal':>8} {'ratio':>6}")
            for c in args.concurrency:
                n = min(len(samples), max(16, int(args.rounds * c)))
                rate = bench(url, tmp / "m3ds", samples[:n], c, tmp / f"results-{c}.jsonl")
                ideal = c / (2 * args.delay)
                print(f"{c:>11} {n:>8} {rate:>10.2f} {ideal:>8.2f} {rate / ideal:>6.3f}")
            if args.servers:
                print(
                    f"\nservers with {args.slots} slots each, --max-per-server {args.slots}, "
                    f"concurrency {multi}; ideal = min(concurrency, servers x slots) / (2 x delay)"
                )
                print(f"{'servers':>11} {'samples':>8} {'samples/s':>10} {'ideal':>8} {'ratio':>6}")
                n = min(len(samples), max(16, int(args.rounds * multi)))
                rates = {}
                for k in (1, args.servers):
                    rate = bench(
                        slotted[:k],
                        tmp / "m3ds",
                        samples[:n],
                        multi,
                        tmp / f"results-s{k}.jsonl",
                        max_per_server=args.slots,
                    )
                    ideal = min(multi, k * args.slots) / (2 * args.delay)
                    rates[k] = rate
                    print(f"{k:>11} {n:>8} {rate:>10.2f} {ideal:>8.2f} {rate / ideal:>6.3f}")
                print(
                    f"speed-up {args.servers} servers / 1: {rates[args.servers] / rates[1]:.2f}x "
                    f"(ideal {args.servers}x)"
                )
    finally:
        for p in servers:
            p.terminate()
            p.join()


if __name__ == "__main__":
    main()
