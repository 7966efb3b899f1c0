"""``create_app``: the FastAPI app — ``POST /v1/segment``, ``POST /v1/chat/completions`` (OpenAI-compatible),
``GET /healthz``, ``GET /v1/info``, ``GET /v1/models``, the OpenAPI schema (``/openapi.json``, ``/docs``) —
with the Gradio page mounted at ``/``.

Errors are JSON ``{"error": "..."}``: 400 for a bad image or parameter, 401 without the token, 413 for
a body over the limit, 415 for a wrong content type, 422 for a missing field, 503 (``Retry-After``)
when the queue is full, 504 past the per-request timeout. A 500 means a bug: it is logged (without
the request's content) and answered with a generic message.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
import uuid

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from sim4seg._version import __version__
from sim4seg.errors import InputError
from sim4seg.serve.engine import Engine, result_json
from sim4seg.serve.limits import BodyLimit, Gate, Refused, check_token

log = logging.getLogger(__name__)

IMAGE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/tiff",
    "image/bmp",
    "application/dicom",
    "image/dicom",
    "application/octet-stream",
    "",
)
"""Content types accepted for the uploaded image part (octet-stream or none: the bytes decide)."""

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*;base64,(?P<data>.*)$", re.DOTALL)


def create_app(
    engine: Engine,
    *,
    token: str | None = None,
    concurrency: int = 1,
    queue: int = 8,
    timeout_s: float = 120.0,
    max_body_bytes: int = 32 * 2**20,
    page: bool = True,
) -> FastAPI:
    """The ASGI app around ``engine``. ``token``: require ``Authorization: Bearer <token>`` on ``/v1/*``
    (and the same token as the page's password); ``queue``: requests that may wait for the model."""
    gate = Gate(concurrency, queue, timeout_s)
    app = FastAPI(
        title="sim4seg",
        version=__version__,
        description="Medical Diagnosis Segmentation: a mask, a diagnosis and its reasoning for an image "
        "and a clinical question.",
    )
    app.state.engine, app.state.gate = engine, gate

    async def auth(request: Request) -> None:
        if token is not None and not check_token(request.headers.get("authorization"), token):
            raise HTTPException(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")

    @app.exception_handler(InputError)
    async def _input_error(request: Request, e: InputError):
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(Refused)
    async def _refused(request: Request, e: Refused):
        headers = {} if e.retry_after is None else {"Retry-After": str(e.retry_after)}
        return JSONResponse({"error": e.message}, status_code=e.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        headers = {"WWW-Authenticate": "Bearer"} if e.status_code == 401 else None
        return JSONResponse({"error": e.detail}, status_code=e.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        ctype = request.headers.get("content-type", "")
        if request.url.path == "/v1/segment" and not ctype.startswith("multipart/form-data"):
            return JSONResponse(
                {
                    "error": f"send multipart/form-data (an 'image' file and a 'query' field), "
                    f"not {ctype or 'no content type'}"
                },
                status_code=415,
            )
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err.get('loc', ())[1:]) or 'body'}: {err.get('msg')}" for err in e.errors()
        )
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal server error (logged on the server)"}, status_code=500)

    async def predict(data: bytes, filename: str | None, query: str, subset: str | None, m, n, selector, seed):
        t0 = time.perf_counter()
        query = engine.check_query(query, subset)
        tts = engine.tts_config(m, n, selector, seed)

        def job():
            t = time.perf_counter()
            image = engine.decode(data, filename)
            decoded = time.perf_counter() - t
            res = engine.segment(image, query, subset=subset, tts=tts)
            res.timings = {"decode_s": decoded, **res.timings}
            return res

        res, waited = await gate.run(job)
        return res, {"queue_s": round(waited, 6), "total_s": round(time.perf_counter() - t0, 6)}

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict:
        """Liveness and load: always open (no token), for load balancers."""
        return {"status": "ok", "pending": gate.pending, "queue_limit": gate.concurrency + gate.queue}

    @app.get("/v1/info", tags=["meta"], dependencies=[Depends(auth)])
    async def info() -> dict:
        """Backbones, label sets, version, TTS defaults and limits."""
        return {
            **engine.info(),
            "server": {
                "concurrency": gate.concurrency,
                "queue": gate.queue,
                "timeout_s": gate.timeout_s,
                "max_body_bytes": max_body_bytes,
                "auth": token is not None,
            },
        }

    @app.get("/v1/models", tags=["openai"], dependencies=[Depends(auth)])
    async def models() -> dict:
        """The one model served, in the OpenAI list format."""
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "owned_by": "sim4seg"}]}

    @app.post("/v1/segment", tags=["segment"], dependencies=[Depends(auth)])
    async def segment(
        image: UploadFile = File(..., description="PNG, JPEG, TIFF or DICOM"),
        query: str = Form(..., description="the clinical question"),
        subset: str | None = Form(
            None, description="M3DS subset whose label set the diagnosis is parsed into (see /v1/info)"
        ),
        m: int | None = Form(None, description="TTS: sampled answers"),
        n: int | None = Form(None, description="TTS: region-mask perturbations per answer"),
        selector: str | None = Form(None, description="TTS mask selector: consensus, score, vote"),
        seed: int | None = Form(None),
        png: bool = Form(True, description="include PNGs (base64)"),
    ) -> dict:
        """Segment and diagnose one image: the answer, the diagnosis, its confidence (the agreement of the m
        answers; null for one), the mask as PNG (base64) and COCO RLE, the uncertainty map, timings."""
        ctype = (image.content_type or "").split(";")[0].strip().lower()
        if ctype not in IMAGE_TYPES:
            raise HTTPException(
                415,
                f"the image part has content type {ctype!r}; send PNG, JPEG, TIFF or DICOM "
                "(image/png, image/jpeg, image/tiff, application/dicom or "
                "application/octet-stream)",
            )
        data = await image.read()
        res, extra = await predict(data, image.filename, query, subset or None, m, n, selector, seed)
        return result_json(res, png=png, extra_timings=extra)

    @app.post("/v1/chat/completions", tags=["openai"], dependencies=[Depends(auth)])
    async def chat(request: Request) -> dict:
        """OpenAI-compatible: the image as a data URL in the last user message; the answer is the message
        content and the masks (COCO RLE), diagnosis and uncertainty are in the extra field ``sim4seg``.
        Options in the body's ``sim4seg`` object: subset, m, n, selector, seed."""
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise HTTPException(415, "send a JSON body (Content-Type: application/json)")
        try:
            body = await request.json()
        except ValueError:
            raise InputError("the body is not valid JSON") from None
        query, data, mime = _chat_request(body)
        opts = body.get("sim4seg") or {}
        if not isinstance(opts, dict):
            raise InputError("'sim4seg' must be an object (subset, m, n, selector, seed)")
        unknown = sorted(set(opts) - {"subset", "m", "n", "selector", "seed"})
        if unknown:
            raise InputError(f"unknown 'sim4seg' option(s) {unknown}; known: subset, m, n, selector, seed")
        for key in ("m", "n", "seed"):
            if opts.get(key) is not None and (not isinstance(opts[key], int) or isinstance(opts[key], bool)):
                raise InputError(f"sim4seg.{key} must be an integer")
        res, extra = await predict(
            data,
            "upload.dcm" if "dicom" in mime else None,
            query,
            opts.get("subset"),
            opts.get("m"),
            opts.get("n"),
            opts.get("selector"),
            opts.get("seed"),
        )
        full = result_json(res, png=False, extra_timings=extra)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or engine.name,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": res.pred.answer}, "finish_reason": "stop"}
            ],
            "sim4seg": {
                k: full[k]
                for k in ("diagnosis", "subset", "confidence", "seg", "image_size", "masks", "uncertainty", "timings")
            },
        }

    if page:
        import gradio as gr

        from sim4seg.serve.page import build_page

        blocks = build_page(engine).queue(default_concurrency_limit=concurrency, max_size=queue)
        auth_fn = None if token is None else (lambda _user, password: check_token(f"Bearer {password}", token))
        app = gr.mount_gradio_app(app, blocks, path="/", auth=auth_fn, max_file_size=max_body_bytes, show_error=True)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


def _chat_request(body) -> tuple[str, bytes, str]:
    """``(query, image bytes, mime)`` from an OpenAI chat body, or an ``InputError`` naming what is wrong."""
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    if body.get("stream"):
        raise InputError('streaming is not supported; send "stream": false')
    if body.get("n") not in (None, 1):
        raise InputError("only one choice per request (n = 1); for test-time scaling use sim4seg.m / sim4seg.n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError("'messages' must be a non-empty list")
    user = [msg for msg in messages if isinstance(msg, dict) and msg.get("role") == "user"]
    if not user:
        raise InputError("no message with role 'user'")
    content = user[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise InputError("the user message's content must be a string or a list of parts")
    texts, images = [], []
    for part in parts:
        if not isinstance(part, dict):
            raise InputError("each content part must be an object")
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            images.append(url if isinstance(url, str) else "")
        else:
            raise InputError(f"unsupported content part type {part.get('type')!r} (text and image_url only)")
    if len(images) != 1:
        raise InputError(f"the last user message must hold exactly one image_url part, found {len(images)}")
    match = _DATA_URL.match(images[0])
    if match is None:
        raise InputError("the image must be a base64 data URL (data:image/png;base64,...); remote URLs are not fetched")
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise InputError("the image data URL is not valid base64") from None
    return " ".join(t.strip() for t in texts if t.strip()), data, (match["mime"] or "").lower()
