"""Throughput of ``cot generate`` against a local server that answers after a fixed delay.

Each sample takes two requests (medical assistant, then critic, who accepts), so at
concurrency C the ideal throughput is ``C / (2 · delay)`` samples/s. The pipeline's own
overhead (image read + encode, JSON, HTTP, fsync'ed results) shows as a ratio below 1.
The server runs in another process so that it does not compete for this one's GIL.

    python benchmarks/bench_cot.py [--delay 0.1] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPLY_MEDICAL = ("This is an endoscopy image. A rounded, well-defined lesion protrudes from the mucosa "
                 "with a smooth surface.\nDiagnosis: {label}.")
REPLY_CRITIC = "VERDICT: ACCEPT\nREASONS:\n- none"


def _serve(delay: float, port_queue) -> None:
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


def bench(url: str, root: Path, samples, concurrency: int, out: Path) -> float:
    from sim4seg.cot.backends.openai import OpenAIBackend
    from sim4seg.cot.pipeline import CotPipeline
    from sim4seg.cot.roles import Prompts
    from sim4seg.cot.runner import run
    from sim4seg.cot.store import ResultStore
    from sim4seg.data.schema import read_info

    backend = OpenAIBackend(url, "bench", timeout=30)
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
    args = ap.parse_args()

    from sim4seg.data.schema import read_split
    from sim4seg.data.synthetic import synthesize

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(args.delay, ports), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            need = max(16, int(args.rounds * max(args.concurrency)))
            synthesize(tmp / "m3ds", int(need * 1.25) + 20, 0, size_range=(224, 320))
            samples = read_split(tmp / "m3ds", "train")
            print(f"server delay {args.delay * 1000:.0f} ms/request, 2 requests/sample; "
                  f"ideal = concurrency / (2 x delay); images {len(samples)} synthetic 224-320 px")
            print(f"{'concurrency':>11} {'samples':>8} {'samples/s':>10} {'ideal':>8} {'ratio':>6}")
            for c in args.concurrency:
                n = min(len(samples), max(16, int(args.rounds * c)))
                rate = bench(url, tmp / "m3ds", samples[:n], c, tmp / f"results-{c}.jsonl")
                ideal = c / (2 * args.delay)
                print(f"{c:>11} {n:>8} {rate:>10.2f} {ideal:>8.2f} {rate / ideal:>6.3f}")
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
