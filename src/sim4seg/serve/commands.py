"""``sim4seg serve``: the REST API and the web page for one checkpoint."""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger(__name__)

TOKEN_ENV = "SIM4SEG_SERVE_TOKEN"


class RedactFilePaths(logging.Filter):
    """Cut the file part out of access-log paths such as ``/gradio_api/file=/tmp/gradio/<hash>/<upload name>``:
    an uploaded file's name may carry a patient's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "file=" in args[2]:
            record.args = args[:2] + (args[2].split("file=", 1)[0] + "file=<redacted>",) + args[3:]
        return True


def serve(
    checkpoint: str,
    host: str,
    port: int,
    token: str | None,
    queue: int,
    timeout: float,
    max_body_mb: float,
    max_pixels: int,
    max_new_tokens: int,
    device: str,
    no_page: bool,
) -> int:
    """Serve CHECKPOINT over HTTP: POST /v1/segment, POST /v1/chat/completions (OpenAI-compatible), GET /healthz,
    GET /v1/info, the OpenAPI schema at /openapi.json (/docs), and the web page at /. The model is loaded once
    and runs one request at a time; --queue more may wait, the rest get 503 with Retry-After."""
    import uvicorn

    from sim4seg.errors import InputError
    from sim4seg.serve.app import create_app
    from sim4seg.serve.engine import Engine, Limits

    token = token or os.environ.get(TOKEN_ENV) or None
    if queue < 0 or timeout <= 0 or max_body_mb <= 0 or max_pixels < 1:
        raise InputError("--queue must be >= 0 and --timeout, --max-body-mb, --max-pixels > 0")
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"WARNING: serving on {host} without a token: anyone who can reach it can use the model "
            f"(set --token or {TOKEN_ENV}, or bind 127.0.0.1 behind a reverse proxy)"
        )
    engine = Engine.from_checkpoint(
        checkpoint, limits=Limits(max_pixels=max_pixels), device=device, max_new_tokens=max_new_tokens
    )
    app = create_app(
        engine, token=token, queue=queue, timeout_s=timeout, max_body_bytes=int(max_body_mb * 2**20), page=not no_page
    )
    shown = f"[{host}]" if ":" in host else host
    print(
        f"sim4seg serve: {checkpoint} on http://{shown}:{port}/ (page{' off' if no_page else ''}; API /v1; "
        f"schema /docs; token {'required' if token else 'off'})",
        flush=True,
    )
    logging.getLogger("uvicorn.access").addFilter(RedactFilePaths())
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True, server_header=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="REST API + web page for a checkpoint (FastAPI, Gradio)", description=serve.__doc__
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="Sim4Seg checkpoint directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--token",
        default=None,
        help=f"require 'Authorization: Bearer TOKEN' on /v1/* (default: ${TOKEN_ENV} if set; the page "
        "then asks for it as its password)",
    )
    p.add_argument("--queue", type=int, default=8, help="requests that may wait for the model (default 8)")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request limit in seconds (default 120)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="request body limit in MiB (default 32)")
    p.add_argument(
        "--max-pixels", type=int, default=40_000_000, help="refuse images above this many pixels (default 40 million)"
    )
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default 64)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default cpu)")
    p.add_argument("--no-page", action="store_true", help="API only, no web page")
    p.set_defaults(handler=serve)
