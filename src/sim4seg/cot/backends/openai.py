"""Any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, hosted APIs).

Standard library only (``http.client``): one keep-alive connection per worker thread.
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
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from sim4seg.cot.backends.base import BackendError, PreflightError, TransientError
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
        base = min(self.backoff_max, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)
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


class OpenAIBackend:
    """``POST {base_url}/chat/completions`` with the image as a base64 data URL."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 300.0,
                 retry: RetryPolicy = RetryPolicy()):
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PreflightError(f"base URL must look like http(s)://host[:port]/v1, got {base_url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self.name = model
        self.model = model
        self.timeout = timeout
        self.retry = retry
        self._https = parts.scheme == "https"
        self._host, self._port, self._prefix = parts.hostname, parts.port, parts.path
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._local = threading.local()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    # -- transport ---------------------------------------------------------------------------

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

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange within ``timeout`` seconds; transport failures raise ``TransientError``."""
        for fresh_retry in (False, True):
            conn = self._connection()
            reused = self._local.used
            deadline = time.monotonic() + self.timeout
            try:
                conn.request(method, self._prefix + path, body=body, headers=self._headers)
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
            except (TimeoutError, socket.timeout):
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

    # -- API ---------------------------------------------------------------------------------

    def preflight(self) -> None:
        """``GET /models``; check the model is served. Falls back to a 1-token request."""
        where = f"{self.base_url}/models"
        status, data = self._preflight_call("GET", "/models", None)
        if status in (401, 403):
            raise PreflightError(f"authentication failed at {where} (HTTP {status}): check the API key "
                                 "(--api-key, SIM4SEG_COT_API_KEY or OPENAI_API_KEY)")
        if status == 200:
            try:
                ids = [m["id"] for m in json.loads(data)["data"]]
            except (ValueError, KeyError, TypeError):
                raise PreflightError(f"{where} did not return a model list: {_snippet(data)}") from None
            if self.model not in ids:
                raise PreflightError(f"model {self.model!r} is not served at {self.base_url}; "
                                     f"it serves: {', '.join(map(repr, ids)) or 'nothing'}")
            return
        if status not in (404, 405):
            raise PreflightError(f"{where} answered HTTP {status}: {_snippet(data)}")
        # No model list (some servers): a 1-token chat request tells us as much.
        body = json.dumps({"model": self.model, "max_tokens": 1,
                           "messages": [{"role": "user", "content": "ping"}]}).encode()
        status, data = self._preflight_call("POST", "/chat/completions", body)
        if status == 200:
            return
        if status in (401, 403):
            raise PreflightError(f"authentication failed at {self.base_url} (HTTP {status}): check the API key")
        hint = "" if self._prefix.endswith("/v1") else " (does the base URL need a /v1 suffix?)"
        raise PreflightError(f"{self.base_url}/chat/completions answered HTTP {status} for model "
                             f"{self.model!r}{hint}: {_snippet(data)}")

    def _preflight_call(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        last = ""
        for attempt in range(min(self.retry.max_attempts, 3)):
            try:
                status, headers, data = self._request(method, path, body)
            except TransientError as e:
                last = str(e)
            else:
                if status != 429 and status < 500:
                    return status, data
                last = f"HTTP {status}: {_snippet(data)}"
            if attempt < 2:
                time.sleep(self.retry.delay(attempt))
        raise PreflightError(f"cannot reach {self.base_url}: {last}")

    def generate(self, system: str, text: str, image: ImageInput, *, max_tokens: int,
                 temperature: float) -> str:
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image.data_url()}},
                {"type": "text", "text": text},
            ]},
        ]
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": max_tokens,
                           "temperature": temperature}).encode()
        return self._post_chat(body)

    def _post_chat(self, body: bytes) -> str:
        last = ""
        for attempt in range(self.retry.max_attempts):
            retry_after = None
            try:
                status, headers, data = self._request("POST", "/chat/completions", body)
            except TransientError as e:
                last = str(e)
            else:
                if status == 200:
                    try:
                        return self._content(data)
                    except TransientError as e:
                        last = str(e)
                elif status == 429 or status >= 500:
                    last = f"HTTP {status}: {_snippet(data)}"
                    retry_after = _retry_after(headers.get("retry-after"))
                else:
                    raise BackendError(f"HTTP {status} from {self.base_url}/chat/completions: {_snippet(data)}")
            if attempt + 1 < self.retry.max_attempts:
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
