"""A real chat-completions HTTP server on 127.0.0.1 with scripted behaviour, for the cot tests.

It plays both roles: a request whose system message mentions "critical assistant" is
a review, anything else is the medical assistant. Failures are scripted per distinct
request body: the first ``fail_times`` attempts of each body fail as ``fail`` says,
later attempts succeed (``fail_times=-1``: always fail).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Script:
    critic: str = "accept"
    """``accept``, ``reject_then_accept`` (accepts revised chains only), ``always_reject``, ``garbage``."""
    medical: str = "good"
    """``good`` or ``wrong_first`` (names a wrong diagnosis unless revising)."""
    fail: str | None = None
    """``500``, ``429``, ``stall``, ``malformed``, ``drop`` or None."""
    fail_times: int = 1
    stall: float = 1.0
    delay: float = 0.0
    """Seconds before every chat reply."""
    api_key: str | None = None
    models: tuple[str, ...] = ("tiny-med",)
    models_endpoint: bool = True
    retry_after: str | None = None
    die_after: int | None = None
    """Die when the chat request after this many arrives: stop listening, drop every connection, reply to nothing."""


@dataclass
class State:
    attempts: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)
    """Parsed successful chat requests: ``(role, body)``."""
    failures: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    auth_headers: list = field(default_factory=list)
    received: int = 0
    """Chat requests received (answered or not)."""
    dead: bool = False
    closed: threading.Event = field(default_factory=threading.Event)
    """Set once a dead server's address is free again."""
    connections: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _user_text(body: dict) -> str:
    for m in body["messages"]:
        if m["role"] == "user":
            c = m["content"]
            return c if isinstance(c, str) else "".join(p.get("text", "") for p in c if p.get("type") == "text")
    return ""


def medical_reply(text: str, mode: str) -> str:
    known = re.search(r"Known diagnosis: (.+)", text)
    if known is None:  # e.g. a preflight ping
        return "pong"
    diagnosis = known.group(1).strip()
    m = re.search(r"lists it as (.+?)\)", text)
    modality = m.group(1) if m else "medical"
    revising = "rejected it for these reasons" in text
    if mode == "wrong_first" and not revising:
        return f"This is a {modality} image. A lesion is visible.\nDiagnosis: something else."
    tag = " (revised)" if revising else ""
    return (
        f"This is a {modality} image{tag}. The region of interest shows a well-defined area "
        f"with the typical appearance.\nThese findings support the diagnosis.\nDiagnosis: {diagnosis}."
    )


def critic_reply(text: str, mode: str) -> str:
    if mode == "garbage":
        return "Hmm, hard to say."
    if mode == "accept" or (mode == "reject_then_accept" and "(revised)" in text):
        return "**VERDICT:** ACCEPT\nREASONS:\n- none"
    return "VERDICT: REJECT\nREASONS:\n- the findings are not visible in the image\n- the modality is not described"


def make_handler(script: Script, state: State, die):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as real servers (uvicorn, vLLM) do

        def setup(self):
            super().setup()
            with state.lock:
                state.connections.add(self.connection)

        def finish(self):
            with state.lock:
                state.connections.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, payload, headers: dict | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError:
                pass

        def _authorised(self) -> bool:
            auth = self.headers.get("Authorization")
            with state.lock:
                state.auth_headers.append(auth)
            if script.api_key is None or auth == f"Bearer {script.api_key}":
                return True
            self._send(401, {"error": {"message": "invalid api key"}})
            return False

        def do_GET(self):
            if not script.models_endpoint or self.path != "/v1/models":
                return self._send(404, {"error": {"message": "not found"}})
            if self._authorised():
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in script.models]})

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": {"message": "not found"}})
            if not self._authorised():
                return
            body = json.loads(raw)
            if body.get("model") not in script.models:
                return self._send(404, {"error": {"message": f"model {body.get('model')} does not exist"}})
            with state.lock:
                state.received += 1
                dying = state.dead or (script.die_after is not None and state.received > script.die_after)
            if dying:
                die()
                return self._drop()
            key = hashlib.sha256(raw).hexdigest()
            with state.lock:
                n = state.attempts.get(key, 0)
                state.attempts[key] = n + 1
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                if script.fail and (script.fail_times < 0 or n < script.fail_times):
                    with state.lock:
                        state.failures += 1
                    return self._fail()
                if script.delay:
                    time.sleep(script.delay)
                if state.dead:  # died while this request was being worked on
                    return self._drop()
                system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
                text = _user_text(body)
                role = "critic" if "critical assistant" in system else "medical"
                reply = critic_reply(text, script.critic) if role == "critic" else medical_reply(text, script.medical)
                with state.lock:
                    state.requests.append((role, body))
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}
                        ],
                    },
                )
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _fail(self) -> None:
            if script.fail == "500":
                self._send(500, {"error": {"message": "internal error"}})
            elif script.fail == "429":
                self._send(
                    429,
                    {"error": {"message": "rate limited"}},
                    {"Retry-After": script.retry_after} if script.retry_after else None,
                )
            elif script.fail == "malformed":
                self._send(200, b'{"choices": [{"message": ')
            elif script.fail == "stall":
                time.sleep(script.stall)
                self._send(500, {"error": {"message": "too late"}})
            elif script.fail == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            else:
                raise ValueError(script.fail)

    return Handler


class FakeServer:
    """``with FakeServer(Script(...)) as srv: srv.url`` → ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, script: Script | None = None, port: int = 0):
        self.script = script or Script()
        self.state = State()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(self.script, self.state, self.kill))
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def kill(self) -> None:
        """Die like a crashed server: refuse new connections, drop open ones (requests in flight get no reply)."""
        with self.state.lock:
            if self.state.dead:
                return
            self.state.dead = True
            conns = list(self.state.connections)
        self.httpd.shutdown()  # from a handler thread too: serve_forever runs in its own thread
        self.httpd.server_close()  # new connections are refused from now on
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.state.closed.set()

    def roles(self) -> list[str]:
        with self.state.lock:
            return [r for r, _ in self.state.requests]
