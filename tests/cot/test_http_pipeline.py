"""The pipeline and the OpenAI-compatible backend against a real scripted HTTP server."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from cot_fake_server import FakeServer, Script
from cot_helpers import FAST_RETRY, make_pipeline
from sim4seg.cot.backends.base import BackendError, PreflightError
from sim4seg.cot.backends.openai import OpenAIBackend, RetryPolicy
from sim4seg.cot.images import ImageInput
from sim4seg.cot.runner import pending_samples, run
from sim4seg.cot.store import ResultStore
from sim4seg.data.io import read_image


def _run(pipeline, samples, tmp_path, concurrency=4, **kw):
    with ResultStore(tmp_path / "out" / "results.jsonl") as store:
        todo, skipped = pending_samples(samples, store)
        summary = run(pipeline, todo, store, concurrency=concurrency, progress=False, skipped=skipped, **kw)
        return summary, dict(store.state)


def test_accept_first_round(manifest, train, tmp_path):
    with FakeServer(Script(critic="accept")) as srv:
        summary, state = _run(make_pipeline(srv.url, manifest), train[:6], tmp_path)
        roles = srv.roles()
    assert summary.status["accepted"] == 6 and summary.rejections == 0
    assert roles.count("medical") == 6 and roles.count("critic") == 6
    for s in train[:6]:
        rec = state[s.id]
        assert rec["status"] == "accepted" and rec["rounds"] == 1
        assert rec["cot"].startswith("This is a ") and "Diagnosis:" not in rec["cot"] and "[SEG]" not in rec["cot"]
        assert rec["diagnosis"] == s.diagnosis


def test_request_carries_image_question_and_diagnosis(manifest, train, tmp_path):
    s = train[0]
    with FakeServer() as srv:
        _run(make_pipeline(srv.url, manifest), [s], tmp_path)
        role, body = srv.state.requests[0]
    assert role == "medical" and body["model"] == "tiny-med"
    user = body["messages"][1]["content"]
    url = next(p["image_url"]["url"] for p in user if p["type"] == "image_url")
    text = next(p["text"] for p in user if p["type"] == "text")
    assert s.query in text and f"Known diagnosis: {s.diagnosis}" in text
    header, b64 = url.split(",", 1)
    assert header in ("data:image/png;base64", "data:image/jpeg;base64")
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
    original = read_image(manifest / s.image)
    assert sent.shape == original.shape
    if header.endswith("png;base64"):
        assert np.array_equal(sent, original)


def test_reject_then_accept_sends_feedback(manifest, train, tmp_path):
    with FakeServer(Script(critic="reject_then_accept")) as srv:
        summary, state = _run(make_pipeline(srv.url, manifest), train[:4], tmp_path)
        medical_texts = [b["messages"][1]["content"][1]["text"] for r, b in srv.state.requests if r == "medical"]
    assert summary.status["accepted"] == 4 and summary.rejections == 4
    assert summary.rounds == {2: 4}
    rec = state[train[0].id]
    assert [h["accepted"] for h in rec["history"]] == [False, True]
    assert rec["history"][0]["by"] == "critic" and "(revised)" in rec["cot"]
    revisions = [t for t in medical_texts if "rejected it for these reasons" in t]
    assert len(revisions) == 4
    assert all("- the findings are not visible in the image" in t for t in revisions)


def test_wrong_diagnosis_rejected_without_the_critic(manifest, train, tmp_path):
    with FakeServer(Script(medical="wrong_first")) as srv:
        summary, state = _run(make_pipeline(srv.url, manifest), train[:3], tmp_path)
        roles = srv.roles()
    assert summary.status["accepted"] == 3
    assert roles.count("critic") == 3 and roles.count("medical") == 6
    first = state[train[0].id]["history"][0]
    assert first["by"] == "check" and "something else" in first["reasons"][0]


@pytest.mark.parametrize("mode", ["always_reject", "garbage"])
def test_still_rejected_goes_to_human_queue(manifest, train, tmp_path, mode):
    with FakeServer(Script(critic=mode)) as srv:
        summary, state = _run(make_pipeline(srv.url, manifest, max_rounds=2), train[:3], tmp_path)
        assert srv.roles().count("critic") == 6
    assert summary.status["queued"] == 3 and summary.status["accepted"] == 0
    rec = state[train[0].id]
    assert rec["status"] == "queued" and rec["rounds"] == 2 and rec["cot"]
    assert rec["critic_notes"]
    if mode == "garbage":
        assert "could not read a verdict" in rec["critic_notes"][0]


@pytest.mark.parametrize("fail", ["500", "429", "malformed", "drop", "stall"])
def test_transient_failures_are_retried(manifest, train, tmp_path, fail):
    with FakeServer(Script(fail=fail, fail_times=2, stall=0.6)) as srv:
        summary, state = _run(make_pipeline(srv.url, manifest, timeout=0.3), train[:2], tmp_path, concurrency=2)
        failures = srv.state.failures
    assert summary.status["accepted"] == 2, summary.text()
    assert failures == 2 * 2 * 2  # 2 samples x 2 requests x 2 failed attempts each


def test_persistent_500_fails_sample_with_reason_and_run_goes_on(manifest, train, tmp_path):
    with FakeServer(Script(fail="500", fail_times=-1)) as srv:
        summary, state = _run(make_pipeline(srv.url, manifest), train[:3], tmp_path, concurrency=2, abort_after=0)
        assert srv.state.failures == 3 * FAST_RETRY.max_attempts
    assert summary.status["failed"] == 3
    rec = state[train[0].id]
    assert rec["status"] == "failed" and rec["error_kind"] == "medical assistant"
    assert "gave up after 4 attempt(s): HTTP 500" in rec["error"]
    assert "HTTP 500" in summary.text()


def test_abort_after_consecutive_server_failures(manifest, train, tmp_path):
    with FakeServer(Script(fail="500", fail_times=-1)) as srv:
        summary, state = _run(make_pipeline(srv.url, manifest), train, tmp_path, concurrency=1, abort_after=3)
    assert summary.aborted and "3 samples in a row" in summary.aborted
    assert len(state) < len(train)


def test_unreadable_image_fails_only_that_sample(manifest, train, tmp_path):
    (manifest / train[1].image).write_bytes(b"not an image at all")
    with FakeServer() as srv:
        summary, state = _run(make_pipeline(srv.url, manifest), train[:4], tmp_path)
    assert summary.status["accepted"] == 3 and summary.status["failed"] == 1
    rec = state[train[1].id]
    assert rec["error_kind"] == "image" and train[1].image.split("/")[-1] in rec["error"]
    assert any(k.startswith("image: ") for k in summary.failures)


def test_concurrency_is_bounded_and_used(manifest, train, tmp_path):
    with FakeServer(Script(delay=0.05)) as srv:
        summary, _ = _run(make_pipeline(srv.url, manifest), train[:16], tmp_path, concurrency=4)
        peak = srv.state.max_in_flight
    assert summary.status["accepted"] == 16
    assert 2 <= peak <= 4


def test_retry_after_header_is_honoured():
    policy = RetryPolicy(max_attempts=3, backoff=0.01, backoff_max=5.0)
    assert all(0.005 <= policy.delay(0) <= 0.01 for _ in range(50))
    assert policy.delay(0, retry_after=0.5) >= 0.5
    assert policy.delay(0, retry_after=100) == 5.0
    assert all(policy.delay(10) <= 5.0 for _ in range(20))


def test_client_error_is_not_retried():
    image = ImageInput(np.zeros((8, 8, 3), np.uint8))
    with FakeServer() as srv:
        backend = OpenAIBackend(srv.url, "other-model", timeout=1.0, retry=FAST_RETRY)
        with pytest.raises(BackendError, match="HTTP 404"):
            backend.generate("s", "t", image, max_tokens=8, temperature=0)
        assert len(srv.state.auth_headers) == 1  # one request, no retries


# -- preflight ---------------------------------------------------------------------------------


def test_preflight_unreachable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", timeout=0.5, retry=FAST_RETRY)
    with pytest.raises(PreflightError, match=f"cannot reach http://127.0.0.1:{port}/v1"):
        backend.preflight()


def test_preflight_unknown_model():
    with FakeServer() as srv:
        with pytest.raises(PreflightError, match="model 'nope' is not served.*'tiny-med'"):
            OpenAIBackend(srv.url, "nope", retry=FAST_RETRY).preflight()
        OpenAIBackend(srv.url, "tiny-med", retry=FAST_RETRY).preflight()


def test_preflight_auth_failure_and_key_never_in_messages():
    with FakeServer(Script(api_key="sk-right")) as srv:
        with pytest.raises(PreflightError, match="authentication failed") as err:
            OpenAIBackend(srv.url, "tiny-med", "sk-wrong-secret", retry=FAST_RETRY).preflight()
        assert "sk-wrong-secret" not in str(err.value)
        backend = OpenAIBackend(srv.url, "tiny-med", "sk-right", retry=FAST_RETRY)
        backend.preflight()
        assert "sk-right" not in repr(backend)
        assert srv.state.auth_headers[-1] == "Bearer sk-right"


def test_preflight_without_models_endpoint_falls_back_to_one_token_request():
    with FakeServer(Script(models_endpoint=False)) as srv:
        OpenAIBackend(srv.url, "tiny-med", retry=FAST_RETRY).preflight()
        assert json.loads(json.dumps(srv.state.requests[-1][1]))["max_tokens"] == 1
        with pytest.raises(PreflightError, match="HTTP 404 for model 'nope'"):
            OpenAIBackend(srv.url, "nope", retry=FAST_RETRY).preflight()
