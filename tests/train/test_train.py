"""The training loop on a toy task: learning, accumulation, exact resume after a real kill, logs, 2-process DDP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from sim4seg.errors import InputError
from sim4seg.train import checkpoints as ckpt
from sim4seg.train.loop import Callback, TrainData, forward_task, lr_factor, train
from sim4seg.train.recipe import config_from_dict

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PY = sys.executable


class ToyData(torch.utils.data.Dataset):
    """y = x·w + 0.5 with a fixed w; ``seed`` picks the x's."""

    def __init__(self, n: int = 32, seed: int = 0):
        w = torch.linspace(-1.0, 1.0, 8).unsqueeze(1)
        self.x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
        self.y = (self.x @ w).squeeze(1) + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


class ToyTask(nn.Module):
    """A regression task module: forward(batch) → {"loss", "loss_mse", "loss_l1"}; a frozen input layer."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))

    def forward(self, batch: dict) -> dict:
        pred = self.net(batch["x"] + 0.1 * self.frozen(batch["x"])).squeeze(1)
        mse = ((pred - batch["y"]) ** 2).mean()
        l1 = (pred - batch["y"]).abs().mean()
        return {"loss": mse + 0.1 * l1, "loss_mse": mse, "loss_l1": l1}


def toy_config(out, **sections):
    d = {
        "optim": {"lr": 3e-2, "batch_size": 4, "grad_accum": 2, "epochs": 3, "warmup_steps": 2, "schedule": "cosine"},
        "train": {"output_dir": str(out), "checkpoint_every": 3, "log_every": 2, "progress": False, "keep_last": 2},
    }
    for name, values in sections.items():
        d.setdefault(name, {}).update(values)
    return config_from_dict(d)


def toy_data(n: int = 32) -> TrainData:
    return TrainData(ToyData(n, 0), ToyData(16, 1))


def weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(out) / "final" / "model.safetensors"))


def rows(out: Path, kind: str = "train") -> list[dict]:
    lines = (Path(out) / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def run_toy(out, dropout=0.0, resume=None, callbacks=(), **sections):
    return train(
        toy_config(out, **sections),
        model_factory=lambda c: ToyTask(dropout),
        datasets=toy_data(),
        callbacks=callbacks,
        resume=resume,
    )


# ---------------------------------------------------------------------------- learning and logs


def test_loss_decreases_and_logs_are_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_toy(tmp_path, optim={"epochs": 4})
    train_rows = rows(tmp_path)
    assert [r["step"] for r in train_rows] == list(range(2, 17, 2))
    for r in train_rows:
        assert {"epoch", "lr", "loss", "loss_mse", "loss_l1", "samples_per_s", "grad_norm"} <= set(r)
        assert r["samples_per_s"] > 0 and r["lr"] > 0
    assert train_rows[-1]["loss"] < 0.5 * train_rows[0]["loss"]
    val = rows(tmp_path, "val")
    assert [r["epoch"] for r in val] == [1, 2, 3, 4] and val[-1]["val/loss"] < val[0]["val/loss"]
    assert val[-1]["val/n"] == 16
    assert result.state.global_step == 16 and result.state.samples_seen == 4 * 32

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"train/loss", "train/lr", "train/loss_mse", "val/loss"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [r["step"] for r in train_rows]
    # resolved recipe beside the checkpoints; only the newest keep_last checkpoints remain
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "final" / "config.yaml").is_file()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-000015", "checkpoint-000016"]
    assert not list(tmp_path.glob(".checkpoint-*"))
    assert (tmp_path / "learning_curve.png").stat().st_size > 0


def test_checkpoints_hold_only_trainable_weights(tmp_path):
    run_toy(tmp_path, optim={"epochs": 1})
    saved = weights(tmp_path)
    assert set(saved) == {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"}
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "checkpoint-000004" / "model.safetensors"))) == set(saved)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    run_toy(tmp_path / "a", optim={"batch_size": 8, "grad_accum": 1})
    run_toy(tmp_path / "b", optim={"batch_size": 4, "grad_accum": 2})
    run_toy(tmp_path / "c", optim={"batch_size": 2, "grad_accum": 4})
    a, b, c = (weights(tmp_path / k) for k in "abc")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c[k], a[k], rtol=1e-5, atol=1e-6)
    d = run_toy(tmp_path / "d", optim={"batch_size": 8, "grad_accum": 1, "lr": 1e-3})  # the comparison can fail
    assert not torch.allclose(weights(d.output_dir)["net.3.weight"], a["net.3.weight"])


def test_schedule_warms_up_then_decays():
    f = [lr_factor(s, warmup=4, total=20, schedule="linear", min_ratio=0.0) for s in range(20)]
    assert f[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and f[4] == 1.0
    assert all(a > b for a, b in zip(f[4:], f[5:])) and f[-1] > 0
    g = [lr_factor(s, warmup=0, total=10, schedule="cosine", min_ratio=0.1) for s in range(11)]
    assert g[0] == 1.0 and g[10] == pytest.approx(0.1) and g[5] == pytest.approx(0.55)


# ---------------------------------------------------------------------------- exact resume after a kill


class _KillAt(Callback):
    """SIGKILL this process right after optimizer step ``step`` (no cleanup, no flush: a real crash)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state, logs) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _child(out: str, kill_at: int) -> None:
    run_toy(out, dropout=0.2, callbacks=[_KillAt(kill_at)])


def _python(code: str, **kwargs) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=90, **kwargs)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    reference = run_toy(tmp_path / "ref", dropout=0.2)
    # a real kill after step 8 has been logged, before epoch 2's validation and checkpoint;
    # the last checkpoint is step 6, in the middle of epoch 2 (4 steps per epoch)
    killed = tmp_path / "killed"
    proc = _python(f"import test_train; test_train._child({str(killed)!r}, 8)")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert ckpt.find(killed, "auto").name == "checkpoint-000006"
    assert not (killed / "final").exists()
    assert max(r["step"] for r in rows(killed)) == 8  # written after the checkpoint: dropped on resume
    assert not (killed / "learning_curve.png").exists()  # drawn at the end of a run

    resumed = run_toy(killed, dropout=0.2, resume="auto")
    assert resumed.state.global_step == reference.state.global_step == 12
    ref_w, res_w = weights(tmp_path / "ref"), weights(killed)
    assert set(ref_w) == set(res_w)
    for k in ref_w:
        assert torch.equal(ref_w[k], res_w[k]), k
    # the log holds each step once, and the validations of every epoch
    steps = [r["step"] for r in rows(killed)]
    assert steps == sorted(set(steps)) == [2, 4, 6, 8, 10, 12]
    assert (killed / "learning_curve.png").stat().st_size > 0  # the resumed run draws the whole log
    assert [r["step"] for r in rows(killed, "val")] == [4, 8, 12]
    assert [r["val/loss"] for r in rows(killed, "val")] == [r["val/loss"] for r in rows(tmp_path / "ref", "val")]


def test_resume_from_a_checkpoint_path_and_finished_run(tmp_path):
    run_toy(tmp_path, dropout=0.2)
    before = weights(tmp_path)
    again = run_toy(tmp_path, dropout=0.2, resume="auto")  # nothing left to do
    assert again.state.global_step == 12
    for k, v in weights(tmp_path).items():
        assert torch.equal(v, before[k])
    with pytest.raises(InputError, match="already holds checkpoints"):
        run_toy(tmp_path)
    with pytest.raises(InputError, match="not a training checkpoint"):
        run_toy(tmp_path / "other", resume=str(tmp_path / "final"))
    with pytest.raises(InputError, match="optim.batch_size = 4"):
        run_toy(tmp_path / "other2", resume=str(tmp_path / "checkpoint-000012"), optim={"batch_size": 2})


# ---------------------------------------------------------------------------- bad input


def test_clear_errors(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="needs a GPU"):
            run_toy(tmp_path / "a", train={"precision": "bf16"})

    def frozen(config):
        m = ToyTask()
        m.requires_grad_(False)
        return m

    with pytest.raises(InputError, match="no trainable parameters"):
        train(toy_config(tmp_path / "b"), model_factory=frozen, datasets=toy_data())
    with pytest.raises(InputError, match="needs its datasets"):
        train(toy_config(tmp_path / "c"), model_factory=lambda c: ToyTask())
    with pytest.raises(InputError, match="must return a 'loss'"):
        forward_task(nn.Identity(), {"x": torch.zeros(2)})
    with pytest.raises(InputError, match="DeepSpeed config not found"):
        run_toy(tmp_path / "d", train={"deepspeed": str(tmp_path / "missing.json")})
    if not torch.cuda.is_available() and "LOCAL_RANK" not in os.environ:
        with pytest.raises(InputError, match="runs under a launcher"):
            run_toy(tmp_path / "e", train={"deepspeed": str(REPO / "configs/deepspeed/zero2.json")})


# ---------------------------------------------------------------------------- two processes (gloo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process_with_the_combined_batch(tmp_path):
    script = tmp_path / "ddp_child.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, os, sys
        sys.path[:0] = [{str(HERE)!r}, {str(REPO / "src")!r}]
        import test_train
        from accelerate import PartialState
        out = sys.argv[1]
        test_train.run_toy(out, optim={{"batch_size": 2, "grad_accum": 2}})
        state = PartialState()
        with open(os.path.join(out, f"rank{{state.process_index}}.json"), "w") as f:
            json.dump({{"rank": state.process_index, "world": state.num_processes, "pid": os.getpid(),
                       "type": str(state.distributed_type), "backend": state.backend}}, f)
    """)
    )
    out = tmp_path / "ddp"
    cmd = [
        PY,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs/accelerate/cpu-2proc.yaml"),
        "--main_process_port",
        str(_free_port()),
        str(script),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=100, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    assert all(r["backend"] == "gloo" and "MULTI_CPU" in r["type"] for r in ranks)

    single = run_toy(tmp_path / "one", optim={"batch_size": 4, "grad_accum": 2})
    assert single.state.global_step == 12
    ddp_w, one_w = weights(out), weights(tmp_path / "one")
    for k in one_w:
        torch.testing.assert_close(ddp_w[k], one_w[k], rtol=1e-5, atol=1e-6)
    assert rows(out)[-1]["step"] == 12 and len(rows(out)) == 6  # one writer
    state = json.loads((out / "checkpoint-000012" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["samples_seen"] == 3 * 32
    assert (out / "checkpoint-000012" / "random_states_1.pkl").is_file()


# ---------------------------------------------------------------------------- the default task: tiny Sim4Seg


def test_cli_trains_tiny_sim4seg_and_resumes(synth_m3ds, tmp_path, capsys):
    from safetensors.torch import load_file

    from sim4seg.apps.cli import main

    out = tmp_path / "run"
    args = [
        "train",
        "--config",
        str(REPO / "configs" / "tiny-cpu.yaml"),
        "--set",
        f"data.manifest={synth_m3ds}",
        f"train.output_dir={out}",
        "optim.batch_size=2",
        "train.log_every=1",
        "train.progress=false",
        "data.max_val_samples=4",
        "--set",
        "model.trainable.lora=true",
        "model.trainable.llm=false",
        "model.trainable.vision_tower=false",
        "model.trainable.sam_encoder=false",
    ]
    assert main(args + ["--set", "train.max_steps=3"]) == 0
    assert "trained 3 step(s)" in capsys.readouterr().out
    logged = rows(out)
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert all({"loss", "loss_txt", "loss_bce", "loss_dice"} <= set(r) for r in logged)
    assert rows(out, "val")[-1]["val/n"] == 4
    # resumable checkpoints hold the trainable weights only; final/ is a full Sim4Seg checkpoint
    keys = set(load_file(str(out / "checkpoint-000003" / "model.safetensors")))
    assert any("lora_A" in k for k in keys) and any(k.startswith("phi.") for k in keys)
    assert not any("vision_tower" in k or "sam.vision_encoder" in k for k in keys)
    from sim4seg.model import checkpoint

    model, _ = checkpoint.load(out / "final")
    saved = load_file(str(out / "checkpoint-000003" / "model.safetensors"))
    state = model.state_dict()
    for k in ("phi.0.weight", next(k for k in keys if "lora_A" in k)):
        assert torch.equal(state[k], saved[k]), k

    assert main(args + ["--set", "train.max_steps=5", "--resume", "auto"]) == 0
    assert [r["step"] for r in rows(out)] == [1, 2, 3, 4, 5]
    assert json.loads((out / "checkpoint-000005" / "trainer_state.json").read_text())["global_step"] == 5
