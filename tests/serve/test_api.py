"""The REST API over real HTTP (uvicorn on a free localhost port) with the tiny trained model: every endpoint,
bad uploads (4xx with a clear message, never 5xx), the bearer token, the queue limit and the timeout."""

from __future__ import annotations

import base64
import io
import struct
import threading
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from serve_helpers import LiveServer
from sim4seg.apps.cli import main
from sim4seg.data.schema import load_split
from sim4seg.serve import rle
from sim4seg.serve.app import create_app


def _sample(root):
    _, samples = load_split(root, "test")
    return next(s for s in samples if s.subset == "busi")


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _dicom(pixels: bool = True) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = "Doe^Jane", "PID-SECRET-123"
    ds.Rows, ds.Columns, ds.PhotometricInterpretation, ds.SamplesPerPixel = 40, 56, "MONOCHROME2", 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels:
        ds.PixelData = (np.random.default_rng(0).random((40, 56)) * 4000).astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _bomb(side: int = 4000) -> bytes:
    """A valid 1-bit PNG of side×side black pixels: a few kB on disk, 16 megapixels decoded."""
    raw = zlib.compress(b"".join(b"\x00" + bytes((side + 7) // 8) for _ in range(side)), 9)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def test_meta_endpoints_and_schema(live):
    r = httpx.get(f"{live.url}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    info = httpx.get(f"{live.url}/v1/info").json()
    assert info["backbones"]["lvlm"] == "LlavaForConditionalGeneration" and info["backbones"]["segmenter"] == "SamModel"
    assert "malignant" in info["label_sets"]["busi"]["labels"] and info["version"]
    assert httpx.get(f"{live.url}/v1/models").json()["data"][0]["object"] == "model"
    paths = httpx.get(f"{live.url}/openapi.json").json()["paths"]
    assert {"/v1/segment", "/v1/chat/completions", "/healthz", "/v1/info"} <= set(paths)
    page = httpx.get(f"{live.url}/")
    assert page.status_code == 200 and "gradio" in page.text.lower()


def test_segment_returns_mask_png_rle_uncertainty_and_timings(live, synth_m3ds):
    s = _sample(synth_m3ds)
    data = (synth_m3ds / s.image).read_bytes()
    r = httpx.post(
        f"{live.url}/v1/segment",
        files={"image": ("case.png", data, "image/png")},
        data={"query": s.query, "subset": s.subset, "m": "2", "n": "3"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    w, h = Image.open(io.BytesIO(data)).size
    assert body["image_size"] == {"width": w, "height": h}
    assert body["seg"] is True and "[SEG]" in body["answer"]
    assert body["diagnosis"] in (None, *{"normal", "benign", "malignant"})
    assert 0.0 < body["confidence"] <= 1.0 and body["confidence"] == body["uncertainty"]["diagnosis_agreement"]
    mask = body["masks"][0]
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask["png_base64"])))) > 127
    assert png.shape == (h, w) and np.array_equal(rle.decode(mask["rle"]), png) and mask["area"] == png.sum()
    unc = body["uncertainty"]
    assert unc["candidates"] == 6
    umap = np.asarray(Image.open(io.BytesIO(base64.b64decode(unc["png_base64"]))))
    assert umap.shape == (h, w) and abs(umap.mean() / 255 - unc["mean"]) < 2e-3
    assert {"decode_s", "read_encode_s", "generate_s", "masks_s", "select_s", "queue_s", "total_s"} <= set(
        body["timings"]
    )
    # greedy single answer: no confidence, no map
    r = httpx.post(
        f"{live.url}/v1/segment",
        files={"image": ("case.png", data, "image/png")},
        data={"query": s.query, "m": "1", "n": "1"},
        timeout=60,
    )
    assert r.json()["confidence"] is None and r.json()["uncertainty"]["mean"] is None


def test_segment_dicom_never_echoes_its_metadata(live):
    r = httpx.post(
        f"{live.url}/v1/segment",
        files={"image": ("scan.dcm", _dicom(), "application/dicom")},
        data={"query": "Segment the fracture in this X-ray image."},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["image_size"] == {"width": 56, "height": 40}
    assert "Doe" not in r.text and "PID-SECRET" not in r.text


@pytest.mark.parametrize(
    "name,payload,ctype,status,message",
    [
        ("empty", b"", "image/png", 400, "empty"),
        ("truncated", None, "image/png", 400, "truncated"),
        ("not an image", b"just some text, not pixels", "image/png", 400, "not an image"),
        ("decompression bomb", _bomb(), "image/png", 400, "pixel"),
        ("DICOM without pixels", _dicom(pixels=False), "application/dicom", 400, "pixel"),
        ("wrong content type", b"%PDF-1.4", "application/pdf", 415, "content type"),
    ],
)
def test_bad_uploads_are_4xx_with_a_clear_message(live, synth_m3ds, name, payload, ctype, status, message, caplog):
    if payload is None:
        payload = (synth_m3ds / _sample(synth_m3ds).image).read_bytes()[:200]
    r = httpx.post(
        f"{live.url}/v1/segment", files={"image": ("x", payload, ctype)}, data={"query": "segment it"}, timeout=30
    )
    assert r.status_code == status, (name, r.text)
    assert message in r.json()["error"].lower(), r.json()


def test_bad_requests_are_4xx(live, synth_m3ds):
    url = f"{live.url}/v1/segment"
    img = _png(np.zeros((20, 20, 3)))
    r = httpx.post(url, json={"query": "x"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    r = httpx.post(url, files={"image": ("a.png", img, "image/png")})
    assert r.status_code == 422 and "query" in r.json()["error"]
    r = httpx.post(url, files={"image": ("a.png", img, "image/png")}, data={"query": "x", "m": "99"})
    assert r.status_code == 400 and "m must be in 1..8" in r.json()["error"]
    r = httpx.post(url, files={"image": ("a.png", img, "image/png")}, data={"query": "x", "selector": "oracle"})
    assert r.status_code == 400 and "ground truth" in r.json()["error"]
    r = httpx.post(url, files={"image": ("a.png", img, "image/png")}, data={"query": "x", "subset": "nope"})
    assert r.status_code == 400 and "unknown subset" in r.json()["error"]
    big = b"\0" * (2 * 2**20 + 10)
    r = httpx.post(url, files={"image": ("a.png", big, "image/png")}, data={"query": "x"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b"\0" * 65536

    r = httpx.post(url, content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413


def test_chat_completions_is_openai_compatible(live, synth_m3ds):
    s = _sample(synth_m3ds)
    data = (synth_m3ds / s.image).read_bytes()
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    body = {
        "model": "sim4seg",
        "messages": [
            {"role": "system", "content": "You are a radiologist."},
            {
                "role": "user",
                "content": [{"type": "text", "text": s.query}, {"type": "image_url", "image_url": {"url": url}}],
            },
        ],
        "sim4seg": {"subset": s.subset, "m": 2, "n": 2},
    }
    r = httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["role"] == "assistant"
    assert "[SEG]" in out["choices"][0]["message"]["content"]
    w, h = Image.open(io.BytesIO(data)).size
    assert rle.decode(out["sim4seg"]["masks"][0]["rle"]).shape == (h, w)
    assert out["sim4seg"]["uncertainty"]["candidates"] == 4
    bad = {
        **body,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x"},
                    {"type": "image_url", "image_url": {"url": "https://e.org/a.png"}},
                ],
            }
        ],
    }
    r = httpx.post(f"{live.url}/v1/chat/completions", json=bad)
    assert r.status_code == 400 and "data URL" in r.json()["error"]
    r = httpx.post(f"{live.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "no image"}]})
    assert r.status_code == 400 and "exactly one image_url" in r.json()["error"]
    r = httpx.post(f"{live.url}/v1/chat/completions", json={**body, "stream": True})
    assert r.status_code == 400 and "streaming" in r.json()["error"]


def test_bearer_token(engine):
    server = LiveServer(create_app(engine, token="s3cret-token", page=False))
    try:
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # open for load balancers
        r = httpx.get(f"{server.url}/v1/info")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "token" in r.json()["error"]
        assert httpx.get(f"{server.url}/v1/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{server.url}/v1/info", headers={"Authorization": "Basic s3cret-token"}).status_code == 401
        r = httpx.get(f"{server.url}/v1/info", headers={"Authorization": "Bearer s3cret-token"})
        assert r.status_code == 200 and r.json()["server"]["auth"] is True
        r = httpx.post(
            f"{server.url}/v1/segment",
            files={"image": ("a.png", _png(np.zeros((9, 9, 3))), "image/png")},
            data={"query": "x"},
        )
        assert r.status_code == 401
    finally:
        server.stop()


def test_queue_limit_gives_503_with_retry_after_and_the_timeout_504(engine):
    from sim4seg.serve.engine import Engine

    started, release = threading.Event(), threading.Event()

    class Held(Engine):
        def segment(self, *a, **k):
            started.set()
            release.wait(20)
            return super().segment(*a, **k)

    held = Held(engine.predictor, limits=engine.limits)
    server = LiveServer(create_app(held, queue=0, page=False, timeout_s=30))
    img = _png(np.full((24, 24, 3), 90))
    results = {}

    def first():
        results["first"] = httpx.post(
            f"{server.url}/v1/segment",
            files={"image": ("a.png", img, "image/png")},
            data={"query": "segment it"},
            timeout=60,
        )

    t = threading.Thread(target=first)
    try:
        t.start()
        assert started.wait(20)
        r = httpx.post(
            f"{server.url}/v1/segment", files={"image": ("a.png", img, "image/png")}, data={"query": "segment it"}
        )
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["error"]
        assert httpx.get(f"{server.url}/healthz").json()["pending"] == 1
        release.set()
        t.join(60)
        assert results["first"].status_code == 200
    finally:
        release.set()
        server.stop()
    started.clear()
    release.clear()
    server = LiveServer(create_app(held, queue=0, page=False, timeout_s=0.5))
    try:
        r = httpx.post(
            f"{server.url}/v1/segment",
            files={"image": ("a.png", img, "image/png")},
            data={"query": "segment it"},
            timeout=30,
        )
        assert r.status_code == 504 and "longer than" in r.json()["error"] and "retry-after" in r.headers
        # the slot stays taken until the work has really ended: no pile-up of predictions in memory
        assert httpx.get(f"{server.url}/healthz").json()["pending"] == 1
        release.set()
    finally:
        release.set()
        server.stop()


def test_serve_command_is_registered(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out
    assert main(["serve", "--checkpoint", "/nonexistent/ckpt", "--no-page"]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err


def test_access_log_never_shows_an_uploaded_file_name():
    import logging

    from sim4seg.serve.commands import RedactFilePaths

    rec = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/gradio_api/file=/tmp/gradio/ab12/Doe_Jane_chest.dcm", "1.1", 200),
        None,
    )
    assert RedactFilePaths().filter(rec)
    assert "Doe" not in rec.getMessage() and "file=<redacted>" in rec.getMessage()
