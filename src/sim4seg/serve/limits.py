"""Admission control: a bounded queue in front of the model, a request-body limit and the bearer token.

* ``Gate``: at most ``concurrency`` predictions run and ``queue`` more wait; a request beyond that is
  refused at once with 503 and ``Retry-After`` (an estimate from the recent service time), so load
  never piles up in memory. A request that waits or runs past ``timeout_s`` gets 504; its slot is
  freed only when its worker thread has really finished (a timed-out request that had not started is
  skipped), so the number of predictions in memory never exceeds the bound.
* ``BodyLimit``: an ASGI middleware answering 413 to a body over ``max_bytes`` — from
  ``Content-Length`` before reading anything, or while reading a chunked body.
* ``check_token``: ``Authorization: Bearer <token>`` compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Refused(Exception):
    """A request the server will not take now: ``status`` (429/503/504), a message, ``Retry-After`` seconds."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


class Gate:
    """Bounded concurrency + queue for blocking work run in threads."""

    def __init__(self, concurrency: int = 1, queue: int = 8, timeout_s: float = 120.0):
        if concurrency < 1 or queue < 0 or not timeout_s > 0:
            raise ValueError(f"need concurrency >= 1, queue >= 0, timeout > 0; got {concurrency}, {queue}, {timeout_s}")
        self.concurrency, self.queue, self.timeout_s = concurrency, queue, timeout_s
        self._pending = 0
        self._mutex = threading.Lock()
        self._slots = threading.Semaphore(concurrency)
        self._service_s = 1.0  # moving average of one request's run time
        self._pool = ThreadPoolExecutor(max_workers=concurrency + queue, thread_name_prefix="sim4seg-gate")
        self.refused = 0

    @property
    def pending(self) -> int:
        """Requests admitted and not finished (running + waiting)."""
        return self._pending

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead × the mean service time / concurrency."""
        return max(1, math.ceil(self._service_s * max(1, self._pending) / self.concurrency))

    def _admit(self) -> None:
        with self._mutex:
            if self._pending >= self.concurrency + self.queue:
                self.refused += 1
                raise Refused(
                    503,
                    f"the server is busy ({self._pending} requests in progress or queued, the limit); retry later",
                    self.retry_after(),
                )
            self._pending += 1

    def _release(self, run_s: float | None) -> None:
        with self._mutex:
            self._pending -= 1
            if run_s is not None:
                self._service_s = 0.8 * self._service_s + 0.2 * run_s

    async def run(self, fn: Callable[[], T]) -> tuple[T, float]:
        """Run ``fn`` in a worker thread once a slot is free → ``(result, seconds waited for the slot)``."""
        self._admit()
        cancelled = threading.Event()
        start = time.perf_counter()
        waited: list[float] = []

        def work():
            ran = None
            try:
                with self._slots:
                    if cancelled.is_set():
                        raise Refused(504, "timed out while queued")
                    waited.append(time.perf_counter() - start)
                    t0 = time.perf_counter()
                    try:
                        return fn()
                    finally:
                        ran = time.perf_counter() - t0
            finally:
                self._release(ran)

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, work)
        try:
            result = await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            cancelled.set()
            future.add_done_callback(lambda f: f.exception())  # the late outcome is dropped, not logged as lost
            raise Refused(
                504, f"the request took longer than the server's limit of {self.timeout_s:g}s", self.retry_after()
            ) from None
        return result, waited[0] if waited else 0.0


def check_token(header: str | None, token: str) -> bool:
    """Whether ``header`` is ``Bearer <token>`` (constant-time comparison of the token)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                return await _json(send, 400, "invalid Content-Length header")
            if too_big:
                return await _json(
                    send, 413, f"the request body ({int(length)} bytes) is over the limit of {self.max_bytes} bytes"
                )
            return await self.app(scope, receive, send)
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        # no Content-Length (chunked): read at most max_bytes + 1, then replay the body
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await _json(send, 413, f"the request body is over the limit of {self.max_bytes} bytes")
            chunks.append(body)
            more = msg.get("more_body", False)
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        return await self.app(scope, replayed, send)


async def _json(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
