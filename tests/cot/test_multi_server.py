"""CoT generation over several real local servers: one dies mid-run, one comes back, per-server limits."""

from __future__ import annotations

import threading
import time
from collections import Counter

from cot_fake_server import FakeServer, Script
from cot_helpers import FAST_RETRY, generate_args, make_pipeline
from sim4seg.apps.cli import main
from sim4seg.cot.backends.pool import PoolPolicy
from sim4seg.cot.runner import pending_samples, run
from sim4seg.cot.store import ResultStore, read_records

FAST = ["--backoff", "0.01", "--max-attempts", "4", "--timeout", "2", "--no-progress"]


def _answered(srv: FakeServer) -> int:
    with srv.state.lock:
        return len(srv.state.requests)


def test_a_server_dying_mid_run_loses_nothing_and_its_share_moves(manifest, train, tmp_path):
    scripts = [Script(delay=0.02), Script(delay=0.02), Script(delay=0.02, die_after=6)]
    with FakeServer(scripts[0]) as a, FakeServer(scripts[1]) as b, FakeServer(scripts[2]) as c:
        pipeline = make_pipeline([a.url, b.url, c.url], manifest, pool=PoolPolicy(cooldown=30))
        results = tmp_path / "out" / "results.jsonl"
        with ResultStore(results) as store:
            todo, _ = pending_samples(train, store)
            summary = run(pipeline, todo, store, concurrency=6, progress=False)
        stats = pipeline.medical.pool.stats()
        answered = [_answered(s) for s in (a, b, c)]
        assert c.state.dead and c.state.received >= 7
    assert summary.status["accepted"] == len(train) and summary.status["failed"] == 0, summary.text()
    ids = Counter(r["id"] for r in read_records(results))
    assert set(ids) == {s.id for s in train} and set(ids.values()) == {1}  # every sample exactly once
    # The dead server answered at most its 6; the two others took over the rest of the 2 requests per sample.
    assert answered[2] <= 6 and answered[0] + answered[1] + answered[2] >= 2 * len(train)
    assert answered[0] > 6 and answered[1] > 6
    assert stats[2]["taken_out"] == 1 and not stats[2]["in_service"]
    assert stats[0]["taken_out"] == stats[1]["taken_out"] == 0 and stats[2]["failed"] >= 3


def test_a_server_that_comes_back_is_used_again_after_its_cooldown(manifest, train, tmp_path):
    with FakeServer(Script(delay=0.05)) as a:
        b = FakeServer(Script(delay=0.05, die_after=2))
        port = int(b.url.rsplit(":", 1)[1].split("/")[0])
        with b:
            pipeline = make_pipeline(
                [a.url, b.url],
                manifest,
                retry=FAST_RETRY,
                pool=PoolPolicy(fail_threshold=1, cooldown=0.1, cooldown_max=0.2),
            )
            out = {}

            def work():
                with ResultStore(tmp_path / "results.jsonl") as store:
                    out["summary"] = run(pipeline, train, store, concurrency=2, progress=False)

            t = threading.Thread(target=work)
            t.start()
            assert b.state.closed.wait(10)
            # Restart only once the client has seen it dead (else a request would simply reach the new one).
            deadline = time.monotonic() + 10
            while pipeline.medical.pool.stats()[1]["taken_out"] == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            with FakeServer(Script(delay=0.05), port=port) as b2:  # restarted on the same address
                t.join(30)
                back = _answered(b2)
        stats = pipeline.medical.pool.stats()
    assert out["summary"].status["accepted"] == len(train)
    assert back > 0 and stats[1]["taken_out"] >= 1 and stats[1]["in_service"]


def test_per_server_limit_holds_on_every_server(manifest, train, tmp_path):
    with FakeServer(Script(delay=0.05)) as a, FakeServer(Script(delay=0.05)) as b:
        pipeline = make_pipeline([a.url, b.url], manifest, pool=PoolPolicy(max_per_server=2))
        with ResultStore(tmp_path / "results.jsonl") as store:
            summary = run(pipeline, train[:12], store, concurrency=8, progress=False)
        peaks = (a.state.max_in_flight, b.state.max_in_flight)
    assert summary.status["accepted"] == 12
    assert peaks == (2, 2)


def test_cli_takes_several_base_urls_and_a_file_of_them(manifest, train, tmp_path, capsys):
    url_file = tmp_path / "servers.txt"
    with FakeServer() as a, FakeServer() as b, FakeServer() as c:
        url_file.write_text(f"# two more\n{b.url}\n\n{c.url}  # the third\n")
        assert (
            main(
                generate_args(
                    str(manifest),
                    str(tmp_path / "o"),
                    "--base-url",
                    a.url,
                    "--base-urls-file",
                    str(url_file),
                    "--model",
                    "tiny-med",
                    "--concurrency",
                    "6",
                    "--max-per-server",
                    "2",
                    *FAST,
                )
            )
            == 0
        )
        answered = [_answered(s) for s in (a, b, c)]
    stdout = capsys.readouterr().out
    assert sum(answered) == 2 * len(train) and min(answered) > 0
    for srv in (a, b, c):
        assert f"server {srv.url}: " in stdout
    import json

    run_info = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run_info["base_url"] == [a.url, b.url, c.url] and run_info["servers"]["max_per_server"] == 2
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [s["url"] for s in summary["servers"]] == [a.url, b.url, c.url]


def test_cli_starts_without_an_unreachable_server_but_not_without_all(manifest, train, tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with FakeServer() as a:
        assert (
            main(
                generate_args(
                    str(manifest),
                    str(tmp_path / "o"),
                    "--base-url",
                    dead,
                    "--base-url",
                    a.url,
                    "--model",
                    "tiny-med",
                    "--limit",
                    "3",
                    "--cooldown",
                    "300",
                    *FAST,
                )
            )
            == 0
        )
        assert _answered(a) == 6
    assert "taken out 1 time(s)" in capsys.readouterr().out
    assert (
        main(
            generate_args(
                str(manifest),
                str(tmp_path / "p"),
                "--base-url",
                dead,
                "--base-url",
                dead.replace("/v1", "/v2"),
                "--model",
                "tiny-med",
                *FAST,
            )
        )
        == 2
    )
    assert "no server answered" in capsys.readouterr().err


def test_bad_server_list_names_the_file_and_line(manifest, tmp_path, capsys):
    url_file = tmp_path / "servers.txt"
    url_file.write_text("http://127.0.0.1:1/v1\nlocalhost:8000\n")
    assert (
        main(
            generate_args(
                str(manifest), str(tmp_path / "o"), "--base-urls-file", str(url_file), "--model", "tiny-med", *FAST
            )
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{url_file}:2" in err and "not a server URL: 'localhost:8000'" in err
