"""Spreading requests over several servers of one model: health, cool-down, per-server limit.

A server that fails ``fail_threshold`` requests in a row (connection refused or reset,
timeout, 5xx, a reply that is not a chat completion) is taken out of service for
``cooldown`` seconds; each time it is taken out again without a success in between the
cool-down doubles, up to ``cooldown_max``. When its cool-down ends it gets one trial
request (the others keep going elsewhere): a success puts it back in service, a failure
takes it out again for the doubled time. A server that answers at all — a 4xx, a 429
(busy, not broken) — is alive and counts as a success here; the request's own retry
policy deals with the answer.

With a single server there is nowhere else to send a request, so nothing is taken out:
the request's retry backoff alone applies, as before there were pools.

``acquire`` picks the least loaded server in service (fewest requests in flight, then
fewest served), preferring servers the request has not tried yet, and blocks while every
server in service is at ``max_per_server`` requests in flight. When every server is out it
raises ``AllServersOut`` with the seconds until the first one may be tried again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from sim4seg.cot.backends.base import TransientError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolPolicy:
    fail_threshold: int = 3
    """Failed requests in a row that take a server out of service."""
    cooldown: float = 10.0
    """Seconds out of service the first time; doubles each time it is taken out again without a success."""
    cooldown_max: float = 300.0
    """Ceiling of one cool-down, in seconds."""
    max_per_server: int = 0
    """Requests in flight per server at most (0: no limit beyond the run's concurrency)."""

    def __post_init__(self) -> None:
        if self.fail_threshold < 1:
            raise ValueError(f"fail_threshold must be >= 1, got {self.fail_threshold}")
        if self.cooldown < 0 or self.cooldown_max < 0:
            raise ValueError("cooldown and cooldown_max must be >= 0")
        if self.max_per_server < 0:
            raise ValueError(f"max_per_server must be >= 0 (0: no limit), got {self.max_per_server}")


class AllServersOut(TransientError):
    """Every server is cooling down; ``wait`` is the seconds until the first may be tried again."""

    def __init__(self, message: str, wait: float):
        super().__init__(message)
        self.wait = wait


@dataclass
class ServerState:
    url: str
    in_flight: int = 0
    streak: int = 0
    """Failed requests in a row."""
    outages: int = 0
    """Times taken out of service since the last success (sets the next cool-down)."""
    out_until: float | None = None
    """``None``: in service; else out until this clock time, then one trial request."""
    trial: bool = False
    """A trial request is in flight."""
    requests: int = 0
    failed: int = 0
    taken_out: int = 0


class ServerPool:
    """Thread-safe: ``i = acquire(avoid)``, send to server ``i``, then ``release(i, ok)``."""

    def __init__(
        self, urls: Sequence[str], policy: PoolPolicy = PoolPolicy(), clock: Callable[[], float] = time.monotonic
    ):
        if not urls:
            raise ValueError("a server pool needs at least one URL")
        self.servers = [ServerState(u) for u in urls]
        self.policy = policy
        self.clock = clock
        self._cond = threading.Condition()
        self._breaker = len(urls) > 1

    def __len__(self) -> int:
        return len(self.servers)

    def _usable(self, s: ServerState, now: float, capacity: bool = True) -> bool:
        if s.out_until is not None:
            return s.out_until <= now and not s.trial
        return not capacity or not self.policy.max_per_server or s.in_flight < self.policy.max_per_server

    def acquire(self, avoid: Collection[int] = ()) -> int:
        """A server's index for one request; blocks while those in service are all at their limit."""
        with self._cond:
            while True:
                now = self.clock()
                free = [i for i, s in enumerate(self.servers) if self._usable(s, now)]
                if free:
                    i = min(free, key=lambda i: (i in avoid, self.servers[i].in_flight, self.servers[i].requests, i))
                    s = self.servers[i]
                    if s.out_until is not None:
                        s.trial = True
                        log.info("server %s: cool-down over, sending a trial request", s.url)
                    s.in_flight += 1
                    s.requests += 1
                    return i
                cooling = [s.out_until for s in self.servers if s.out_until is not None and not s.trial]
                busy = any(s.out_until is None or s.trial for s in self.servers)
                if not busy:
                    wait = max(0.0, min(cooling) - now)
                    raise AllServersOut(
                        f"all {len(self.servers)} servers are out of service after repeated "
                        f"failures; the first may be tried again in {wait:.1f}s",
                        wait,
                    )
                # Wait for a request to finish, or for a cool-down to end.
                wake = [t - now for t in cooling]
                self._cond.wait(max(0.0, min(wake)) if wake else None)

    def release(self, i: int, ok: bool, reason: str = "") -> None:
        """Record how server ``i`` answered: ``ok`` (it answered) or a failure of the server itself."""
        with self._cond:
            s = self.servers[i]
            s.in_flight -= 1
            was_trial, s.trial = s.trial, False
            if ok:
                if s.out_until is not None:
                    log.warning("server %s is back in service", s.url)
                s.streak = s.outages = 0
                s.out_until = None
            else:
                s.failed += 1
                s.streak += 1
                if self._breaker and (was_trial or (s.out_until is None and s.streak >= self.policy.fail_threshold)):
                    self._take_out(s, reason)
            self._cond.notify_all()

    def take_out(self, i: int, reason: str) -> None:
        """Take server ``i`` out of service now (e.g. it did not answer the preflight)."""
        with self._cond:
            if self._breaker:
                self._take_out(self.servers[i], reason)
            self._cond.notify_all()

    def _take_out(self, s: ServerState, reason: str) -> None:
        p = self.policy
        seconds = min(p.cooldown_max, p.cooldown * 2**s.outages)
        s.outages += 1
        s.taken_out += 1
        s.out_until = self.clock() + seconds
        log.warning(
            "server %s taken out of service for %.1fs after %d failed request(s) in a row%s",
            s.url,
            seconds,
            s.streak,
            f" (last: {reason})" if reason else "",
        )

    def available_besides(self, tried: Collection[int]) -> bool:
        """Whether a server in service (or due a trial) exists that is not in ``tried``."""
        with self._cond:
            now = self.clock()
            return any(i not in tried and self._usable(s, now, capacity=False) for i, s in enumerate(self.servers))

    def stats(self) -> list[dict]:
        """Per server: URL, requests sent, failed, times taken out, and whether it is in service now."""
        with self._cond:
            now = self.clock()
            return [
                {
                    "url": s.url,
                    "requests": s.requests,
                    "failed": s.failed,
                    "taken_out": s.taken_out,
                    "in_service": s.out_until is None or s.out_until <= now,
                }
                for s in self.servers
            ]
