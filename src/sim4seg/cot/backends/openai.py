"""Any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, hosted APIs), or several.

Standard library only (``http.client``): one keep-alive connection per worker thread and server.
Several servers of one model are used together through a ``ServerPool`` (``pool.py``).
A request is retried with exponential backoff and jitter on 429, 5xx, timeouts,
dropped connections and malformed replies (``Retry-After`` is honoured); any other
status fails at once. ``preflight`` turns an unreachable server, an unknown model and
an authentication failure into one ``PreflightError`` before a run starts.
The API key goes into the ``Authorization`` header only: it is never logged, never
put in an error message and never written to a results file.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sim4seg.cot.backends.base import BackendError, PreflightError, TransientError
from sim4seg.cot.backends.pool import AllServersOut, PoolPolicy, ServerPool
from sim4seg.cot.images import ImageInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    """Attempts per request, the first included."""
    backoff: float = 1.0
    """Wait before the 2nd attempt, in seconds; doubles each attempt."""
    backoff_max: float = 60.0
    """Ceiling of one wait (also caps ``Retry-After``)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff < 0 or self.backoff_max < 0:
            raise ValueError("backoff and backoff_max must be >= 0")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based): ``U(0.5, 1) · backoff · 2^attempt``."""
        base = min(self.backoff_max, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            base = max(base, min(retry_after, self.backoff_max))
        return base


def _snippet(data: bytes, n: int = 200) -> str:
    text = " ".join(data.decode("utf-8", "replace").split())
    return text if len(text) <= n else text[:n] + "..."


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class _Endpoint:
    """One server: its URL and one keep-alive connection per thread."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float):
        parts = urlsplit(base_url.strip().rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PreflightError(f"base URL must look like http(s)://host[:port]/v1, got {base_url!r}")
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host, self._port, self.prefix = parts.hostname, parts.port, parts.path
        self._headers = headers
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn, self._local.used = conn, False
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange within ``timeout`` seconds; transport failures raise ``TransientError``."""
        for fresh_retry in (False, True):
            conn = self._connection()
            reused = self._local.used
            deadline = time.monotonic() + self.timeout
            try:
                conn.request(method, self.prefix + path, body=body, headers=self._headers)
                resp = conn.getresponse()
                chunks = []
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    if conn.sock is not None:
                        conn.sock.settimeout(remaining)
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
                self._local.used = True
                if resp.will_close:
                    self._drop_connection()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"".join(chunks)
            except TimeoutError:
                self._drop_connection()
                raise TransientError(f"no complete reply within {self.timeout:g}s (timeout)") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop_connection()
                if reused and not fresh_retry:
                    continue  # a keep-alive connection the server had closed: retry once, fresh
                raise TransientError(f"connection dropped ({type(e).__name__})") from None
            except (OSError, http.client.HTTPException) as e:
                self._drop_connection()
                raise TransientError(f"connection failed ({type(e).__name__}: {e})") from None
        raise AssertionError("unreachable")


class _Unreachable(PreflightError):
    """The server did not answer the preflight (as opposed to answering no)."""


class OpenAIBackend:
    """``POST {base_url}/chat/completions`` with the image as a base64 data URL, over one or several servers.

    ``base_url`` is one URL or a list of URLs of servers that serve the same ``model``; requests are spread
    over them by a ``ServerPool`` (``pool.py``: health, cool-down, per-server limit).
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        retry: RetryPolicy = RetryPolicy(),
        pool: PoolPolicy = PoolPolicy(),
    ):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise PreflightError("no server URL given")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.endpoints = [_Endpoint(u, headers, timeout) for u in urls]
        seen = [e.base_url for e in self.endpoints]
        dup = next((u for i, u in enumerate(seen) if u in seen[:i]), None)
        if dup is not None:
            raise PreflightError(f"server URL given twice: {dup}")
        self.base_urls = seen
        self.base_url = seen[0] if len(seen) == 1 else ", ".join(seen)
        self.name = model
        self.model = model
        self.timeout = timeout
        self.retry = retry
        self.pool = ServerPool(seen, pool)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    # -- API ---------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Check every server; unreachable ones start out of service, as long as one answers.

        An authentication failure or a model that is not served, on any server, is an error: the servers of
        one pool must serve the same model with the same key.
        """
        unreachable = []
        for i, ep in enumerate(self.endpoints):
            try:
                self._preflight_one(ep)
            except _Unreachable as e:
                unreachable.append((i, e))
        if len(unreachable) == len(self.endpoints):
            if len(unreachable) == 1:
                raise unreachable[0][1]
            raise PreflightError("no server answered: " + "; ".join(str(e) for _, e in unreachable))
        for i, e in unreachable:
            log.warning("%s; starting without it (it is tried again after its cool-down)", e)
            self.pool.take_out(i, "unreachable at start")

    def _preflight_one(self, ep: _Endpoint) -> None:
        """``GET /models``; check the model is served. Falls back to a 1-token request."""
        where = f"{ep.base_url}/models"
        status, data = self._preflight_call(ep, "GET", "/models", None)
        if status in (401, 403):
            raise PreflightError(
                f"authentication failed at {where} (HTTP {status}): check the API key "
                "(--api-key, SIM4SEG_COT_API_KEY or OPENAI_API_KEY)"
            )
        if status == 200:
            try:
                ids = [m["id"] for m in json.loads(data)["data"]]
            except (ValueError, KeyError, TypeError):
                raise PreflightError(f"{where} did not return a model list: {_snippet(data)}") from None
            if self.model not in ids:
                raise PreflightError(
                    f"model {self.model!r} is not served at {ep.base_url}; "
                    f"it serves: {', '.join(map(repr, ids)) or 'nothing'}"
                )
            return
        if status not in (404, 405):
            raise PreflightError(f"{where} answered HTTP {status}: {_snippet(data)}")
        # No model list (some servers): a 1-token chat request tells us as much.
        body = json.dumps(
            {"model": self.model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}
        ).encode()
        status, data = self._preflight_call(ep, "POST", "/chat/completions", body)
        if status == 200:
            return
        if status in (401, 403):
            raise PreflightError(f"authentication failed at {ep.base_url} (HTTP {status}): check the API key")
        hint = "" if ep.prefix.endswith("/v1") else " (does the base URL need a /v1 suffix?)"
        raise PreflightError(
            f"{ep.base_url}/chat/completions answered HTTP {status} for model {self.model!r}{hint}: {_snippet(data)}"
        )

    def _preflight_call(self, ep: _Endpoint, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        last = ""
        for attempt in range(min(self.retry.max_attempts, 3)):
            try:
                status, headers, data = ep.request(method, path, body)
            except TransientError as e:
                last = str(e)
            else:
                if status != 429 and status < 500:
                    return status, data
                last = f"HTTP {status}: {_snippet(data)}"
            if attempt < 2:
                time.sleep(self.retry.delay(attempt))
        raise _Unreachable(f"cannot reach {ep.base_url}: {last}")

    def generate(self, system: str, text: str, image: ImageInput, *, max_tokens: int, temperature: float) -> str:
        messages = [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image.data_url()}},
                    {"type": "text", "text": text},
                ],
            },
        ]
        body = json.dumps(
            {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        ).encode()
        return self._post_chat(body)

    def _post_chat(self, body: bytes) -> str:
        """Attempts go to the pool's choice of server; a failed one moves at once to a server not tried yet."""
        last, tried = "", set()
        several = len(self.endpoints) > 1
        for attempt in range(self.retry.max_attempts):
            retry_after = None
            server_failed = False
            try:
                i = self.pool.acquire(avoid=tried)
            except AllServersOut as e:
                last, retry_after = str(e), e.wait
            else:
                tried.add(i)
                ep = self.endpoints[i]
                where = f" [{ep.base_url}]" if several else ""
                alive = False
                try:
                    status, headers, data = ep.request("POST", "/chat/completions", body)
                except TransientError as e:
                    last = f"{e}{where}"
                else:
                    alive = status < 500
                    if status == 200:
                        try:
                            return self._content(data)
                        except TransientError as e:
                            alive, last = False, f"{e}{where}"
                    elif status == 429 or status >= 500:
                        last = f"HTTP {status}: {_snippet(data)}{where}"
                        retry_after = _retry_after(headers.get("retry-after"))
                    else:
                        raise BackendError(f"HTTP {status} from {ep.base_url}/chat/completions: {_snippet(data)}")
                finally:
                    self.pool.release(i, alive, last)
                server_failed = not alive
            if attempt + 1 < self.retry.max_attempts:
                if server_failed and self.pool.available_besides(tried):
                    wait = 0.0  # another server is in service: go there now
                else:
                    wait = self.retry.delay(attempt, retry_after)
                log.debug("attempt %d failed (%s); retrying in %.2fs", attempt + 1, last, wait)
                time.sleep(wait)
        raise BackendError(f"gave up after {self.retry.max_attempts} attempt(s): {last}")

    @staticmethod
    def _content(data: bytes) -> str:
        """The first choice's message text; a reply that is not a chat completion is transient."""
        try:
            choice = json.loads(data)["choices"][0]
            content = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise TransientError(f"malformed reply (not a chat completion): {_snippet(data, 80)}") from None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""
