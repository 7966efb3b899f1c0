"""``sim4seg cot generate``: end to end, a killed run resumed, secrets, bad input."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cot_fake_server import FakeServer, Script
from cot_helpers import generate_args
from sim4seg.apps.cli import main
from sim4seg.cot.store import ResultStore, read_records

FAST = ["--backoff", "0.01", "--max-attempts", "3", "--timeout", "2"]


def _generate(manifest, out, url, *extra):
    return main(generate_args(manifest, out, "--base-url", url, "--model", "tiny-med", *FAST, *extra))


def test_generate_end_to_end_writes_results_run_and_summary(manifest, train, tmp_path, capsys):
    out = tmp_path / "out"
    with FakeServer(Script(critic="reject_then_accept")) as srv:
        assert _generate(manifest, out, srv.url, "--concurrency", "4") == 0
    stdout, stderr = capsys.readouterr()
    recs = list(read_records(out / "results.jsonl"))
    assert sorted(r["id"] for r in recs) == sorted(s.id for s in train)
    assert all(r["status"] == "accepted" and r["rounds"] == 2 for r in recs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accepted"] == len(train) and summary["acceptance_rate"] == 1.0 and summary["mean_rounds"] == 2.0
    assert f"accepted {len(train)}" in stdout and "acceptance rate 100.0%" in stdout
    assert "accepted=" in stderr and "queued=" in stderr and "failed=" in stderr  # progress bar counts
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "tiny-med" and run["split"] == "train" and run["config"]["max_rounds"] == 3
    # Re-running is a no-op: everything is already done.
    with FakeServer() as srv:
        assert _generate(manifest, out, srv.url) == 0
        assert srv.roles() == []
    assert len(list(read_records(out / "results.jsonl"))) == len(train)


def test_killed_run_resumes_with_every_sample_exactly_once(manifest, train, tmp_path):
    out = tmp_path / "out"
    results = out / "results.jsonl"
    with FakeServer(Script(delay=0.05)) as srv:
        cmd = [
            sys.executable,
            "-m",
            "sim4seg",
            "cot",
            "generate",
            "--manifest",
            str(manifest),
            "--split",
            "train",
            "--out",
            str(out),
            "--base-url",
            srv.url,
            "--model",
            "tiny-med",
            "--concurrency",
            "2",
            "--no-progress",
            *FAST,
        ]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120  # a bound, not a timing: the CLI imports torch, slow on a busy machine
        while time.monotonic() < deadline:
            if results.exists() and results.read_bytes().count(b"\n") >= 5:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        done_before = results.read_bytes().count(b"\n")
        assert 5 <= done_before < len(train)
        with open(results, "a", encoding="utf-8") as f:  # what a kill in the middle of a write leaves
            f.write('{"id": "' + train[-1].id + '", "status": "acc')
        assert _generate(manifest, out, srv.url, "--concurrency", "2", "--no-progress") == 0
        medical_requests = srv.roles().count("medical")
    ids = Counter(r["id"] for r in read_records(results))
    assert set(ids) == {s.id for s in train}
    assert set(ids.values()) == {1}
    # Only the samples in flight at the kill (at most the 2 x concurrency window) were asked for twice.
    assert len(train) <= medical_requests <= len(train) + 4


def test_partial_last_line_is_cut_off(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "a", "status": "accepted", "cot": "x"}\n{"id": "b", "stat', encoding="utf-8")
    with ResultStore(path) as store:
        assert set(store.state) == {"a"}
        store.append({"id": "b", "status": "queued", "cot": "y"})
    assert [r["id"] for r in read_records(path)] == ["a", "b"]


def test_api_key_never_logged_or_written(manifest, train, tmp_path, capsys, caplog, monkeypatch):
    secret = "sk-test-DO-NOT-LEAK-1234"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    with FakeServer(Script(api_key=secret, fail="500", fail_times=1)) as srv:
        assert (
            main(
                [
                    "-v",
                    "cot",
                    "generate",
                    "--manifest",
                    str(manifest),
                    "--split",
                    "train",
                    "--out",
                    str(out),
                    "--base-url",
                    srv.url,
                    "--model",
                    "tiny-med",
                    "--limit",
                    "3",
                    *FAST,
                ]
            )
            == 0
        )
        assert srv.state.auth_headers[-1] == f"Bearer {secret}"
    captured = capsys.readouterr()
    texts = [captured.out, captured.err, caplog.text] + [p.read_text() for p in out.iterdir()]
    assert "attempt 1 failed" in caplog.text  # the debug log did run
    assert not any(secret in t for t in texts)


def test_bad_server_is_one_clear_error_before_the_run(manifest, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("SIM4SEG_COT_API_KEY", raising=False)
    out = tmp_path / "out"
    with FakeServer() as srv:
        assert main(generate_args(manifest, out, "--base-url", srv.url, "--model", "nope", *FAST)) == 2
        assert srv.roles() == []
    assert "error: model 'nope' is not served" in capsys.readouterr().err
    assert not out.exists()
    with FakeServer(Script(api_key="right")) as srv:
        assert _generate(manifest, out, srv.url) == 2
    assert "authentication failed" in capsys.readouterr().err


def test_base_url_and_model_from_environment(manifest, train, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with FakeServer() as srv:
        monkeypatch.setenv("SIM4SEG_COT_BASE_URL", srv.url)
        monkeypatch.setenv("SIM4SEG_COT_MODEL", "tiny-med")
        assert main(generate_args(manifest, out, "--limit", "2", "--no-progress", *FAST)) == 0
    assert len(list(read_records(out / "results.jsonl"))) == 2


def test_missing_base_url_is_an_input_error(manifest, tmp_path, capsys, monkeypatch):
    for name in ("SIM4SEG_COT_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(generate_args(manifest, str(tmp_path / "o"), "--model", "m")) == 2
    assert "--base-url" in capsys.readouterr().err


def test_retry_failed_redoes_failed_samples_only(manifest, train, tmp_path):
    out = tmp_path / "out"
    with FakeServer(Script(fail="500", fail_times=-1)) as srv:
        assert _generate(manifest, out, srv.url, "--limit", "2", "--abort-after", "0", "--no-progress") == 0
    with FakeServer() as srv:
        assert _generate(manifest, out, srv.url, "--limit", "3", "--no-progress") == 0  # 3 new ones
        assert _generate(manifest, out, srv.url, "--retry-failed", "--limit", "2", "--no-progress") == 0
    recs = list(read_records(out / "results.jsonl"))
    last = {r["id"]: r["status"] for r in recs}
    assert [r["status"] for r in recs] == ["failed"] * 2 + ["accepted"] * 5
    assert list(last.values()) == ["accepted"] * 5


def test_another_model_as_critic(manifest, train, tmp_path):
    out = tmp_path / "out"
    with FakeServer(Script(models=("tiny-med", "tiny-critic"))) as srv:
        assert _generate(manifest, out, srv.url, "--critic-model", "tiny-critic", "--limit", "2", "--no-progress") == 0
        used = {(role, body["model"]) for role, body in srv.state.requests}
    assert used == {("medical", "tiny-med"), ("critic", "tiny-critic")}
    assert {r["critic_model"] for r in read_records(out / "results.jsonl")} == {"tiny-critic"}
    with FakeServer() as srv:  # the critic model is not served: one clear error
        assert _generate(manifest, tmp_path / "o2", srv.url, "--critic-model", "tiny-critic") == 2


def test_help_and_prompts_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["cot", "-h"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for name in ("generate", "apply", "review-export", "review-import", "prompts"):
        assert name in text
    assert main(["cot", "prompts", "--out", str(tmp_path / "p")]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(
        ["medical_system.txt", "medical.txt", "revision.txt", "critic_system.txt", "critic.txt"]
    )
    assert main(["cot", "prompts", "--out", str(tmp_path / "p")]) == 2  # would overwrite


def test_resuming_with_other_settings_warns(manifest, tmp_path, caplog):
    out = tmp_path / "out"
    with FakeServer(Script(models=("tiny-med", "other"))) as srv:
        assert _generate(manifest, out, srv.url, "--limit", "1", "--no-progress") == 0
        assert "this output was started with" not in caplog.text
        assert (
            main(
                generate_args(
                    str(manifest),
                    str(out),
                    "--base-url",
                    srv.url,
                    "--model",
                    "other",
                    "--limit",
                    "1",
                    "--no-progress",
                    *FAST,
                )
            )
            == 0
        )
    assert "this output was started with model='tiny-med', this run uses 'other'" in caplog.text
