"""The server pool on its own (a fake clock): spreading, per-server limit, cool-down, trial after it."""

from __future__ import annotations

import threading

import pytest

from sim4seg.cot.backends.pool import AllServersOut, PoolPolicy, ServerPool


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _pool(n=3, **kw):
    clock = Clock()
    return ServerPool([f"http://s{i}/v1" for i in range(n)], PoolPolicy(**kw), clock=clock), clock


def test_requests_are_spread_over_the_least_loaded_servers():
    pool, _ = _pool(3)
    got = [pool.acquire() for _ in range(6)]
    assert sorted(got) == [0, 0, 1, 1, 2, 2]
    pool.release(1, True)
    pool.release(1, True)
    assert pool.acquire() == 1  # now the least loaded
    assert pool.acquire(avoid={0, 2}) in (1,) and pool.acquire(avoid={1}) in (0, 2)


def test_per_server_limit_blocks_until_a_request_finishes():
    pool, _ = _pool(2, max_per_server=1)
    assert {pool.acquire(), pool.acquire()} == {0, 1}
    got = []
    t = threading.Thread(target=lambda: got.append(pool.acquire()))
    t.start()
    t.join(0.2)
    assert t.is_alive() and not got  # both servers at their limit: waits
    pool.release(1, True)
    t.join(2)
    assert got == [1]


def test_repeated_failures_take_a_server_out_and_an_answer_resets_the_count():
    pool, clock = _pool(2, fail_threshold=3, cooldown=10)
    for ok in (False, False, True, False, False):  # never 3 in a row
        pool.release(pool.acquire(avoid={1}), ok)
    assert pool.stats()[0]["taken_out"] == 0
    pool.release(pool.acquire(avoid={1}), False)  # the third in a row
    s = pool.stats()[0]
    assert s["taken_out"] == 1 and s["failed"] == 5 and not s["in_service"]
    assert all(pool.acquire() == 1 for _ in range(5))  # only the healthy one
    clock.t = 9.9
    assert pool.acquire() == 1


def test_trial_after_cooldown_backs_off_and_a_success_restores_the_server():
    pool, clock = _pool(2, fail_threshold=1, cooldown=10, cooldown_max=25)
    pool.release(pool.acquire(avoid={1}), False)  # out until t=10
    clock.t = 10.0
    assert pool.acquire(avoid={1}) == 0  # its trial request
    assert pool.acquire(avoid={1}) == 1  # one trial at a time
    pool.release(0, False)  # the trial failed: out for 2 x 10 s
    clock.t = 29.9
    assert pool.acquire(avoid={1}) == 1
    clock.t = 30.0
    assert pool.acquire(avoid={1}) == 0
    pool.release(0, False)  # out for min(25, 40) s
    clock.t = 54.9
    assert pool.acquire(avoid={1}) == 1
    clock.t = 55.0
    assert pool.acquire(avoid={1}) == 0
    pool.release(0, True)  # back in service, the back-off forgotten
    assert pool.stats()[0]["in_service"] and pool.stats()[0]["taken_out"] == 3
    assert pool.acquire(avoid={1}) == 0 and pool.acquire(avoid={1}) == 0  # no trial limit any more
    pool.release(0, False)
    clock.t = 65.0
    assert pool.acquire(avoid={1}) == 0  # the next cool-down is 10 s again


def test_all_servers_out_says_when_the_first_is_back():
    pool, clock = _pool(2, fail_threshold=1, cooldown=10)
    pool.release(pool.acquire(), False)
    clock.t = 4.0
    pool.release(pool.acquire(), False)
    assert not pool.available_besides(())
    with pytest.raises(AllServersOut, match="all 2 servers are out of service") as err:
        pool.acquire()
    assert err.value.wait == pytest.approx(6.0)
    clock.t = 10.0
    assert pool.available_besides(()) and not pool.available_besides({0})
    assert pool.acquire() == 0


def test_a_single_server_is_never_taken_out():
    pool, _ = _pool(1, fail_threshold=1)
    for _ in range(5):
        pool.release(pool.acquire(), False)
    pool.take_out(0, "unreachable")
    assert pool.acquire() == 0 and pool.stats()[0]["taken_out"] == 0


def test_policy_is_validated():
    for bad in ({"fail_threshold": 0}, {"cooldown": -1}, {"max_per_server": -1}):
        with pytest.raises(ValueError):
            PoolPolicy(**bad)
