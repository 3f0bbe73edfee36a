"""The product as users run it: run.py on the simulator, saving, resuming, replaying, stopping."""

from __future__ import annotations

import csv
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PHASE3, PHASE5, RUN_PY, copy_model, run_cli, run_cli_process

WALL_FIELDS = {"wall_seconds", "decisions_per_second", "logs", "recording"}  # and where the files went
UPDATE_COLUMNS = [
    "timestamp", "update_num", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
    "explained_variance", "buffer_avg_reward", "buffer_win_rate", "cumulative_pnl", "cumulative_trades",
    "cumulative_win_rate",
]


def sim_args(tmp: Path, *extra: str, seed: str = "3", markets: str = "1", assets: str = "BTC,ETH") -> list[str]:
    return ["--source", "sim", "--speed", "max", "--seed", seed, "--markets", markets, "--assets", assets,
            "--no-tui", "--log-dir", str(tmp / "logs"), *extra]


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in WALL_FIELDS}


def test_training_run_saves_model_logs_and_report(tmp_path: Path) -> None:
    proc = run_cli("--strategy", "rl", "--train", *sim_args(tmp_path), "--save", "M",
                   "--report", "R.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "M.safetensors").stat().st_size > 100_000
    stats = np.load(tmp_path / "M_stats.npz", allow_pickle=False)
    for key in ("reward_mean", "reward_std", "reward_count", "input_dim", "hidden_size", "critic_hidden_size",
                "history_len", "temporal_dim", "gamma", "buffer_size"):
        assert key in stats.files
    report = json.loads((tmp_path / "R.json").read_text())
    assert report["strategy"] == "rl" and report["source"] == "sim" and report["windows"] == 1
    assert report["model_saved"] == "M" and report["fill"] == "book" and report["latency_ms"] == 300
    assert report["decisions"] > 0 and report["updates"] >= 1
    trades = read_csv(report["logs"]["trades"])
    assert len(trades) == report["trades"]
    assert sum(float(t["pnl"]) for t in trades) == pytest.approx(report["pnl"], abs=1e-3)
    assert sum(float(t["fee"]) for t in trades) == pytest.approx(report["fees"], abs=1e-3)
    with open(report["logs"]["updates"], newline="") as fh:
        assert next(csv.reader(fh)) == UPDATE_COLUMNS
    assert len(read_csv(report["logs"]["updates"])) == report["updates"]
    episodes = read_csv(report["logs"]["episodes"])
    assert {e["asset"] for e in episodes} == {"BTC", "ETH"}


def test_training_with_latency_longer_than_a_tick_saves_and_resumes(tmp_path: Path) -> None:
    args = sim_args(tmp_path, seed="21", markets="2", assets="BTC")
    proc = run_cli("--strategy", "rl", "--train", "--latency-ms", "700", *args, "--save", "M", "--report", "R.json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first = json.loads((tmp_path / "R.json").read_text())
    assert first["latency_ms"] == 700 and first["windows"] == 2 and first["updates"] >= 1
    assert first["trades"] > 0 and first["model_saved"] == "M"
    count_1 = int(np.load(tmp_path / "M_stats.npz")["reward_count"])
    proc = run_cli("--strategy", "rl", "--train", "--load", "M", "--latency-ms", "700",
                   *sim_args(tmp_path, seed="22", markets="2", assets="BTC"), "--report", "R2.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert int(np.load(tmp_path / "M_stats.npz")["reward_count"]) > count_1
    assert json.loads((tmp_path / "R2.json").read_text())["updates"] >= 1


def test_same_seed_gives_identical_reports_and_trades(tmp_path: Path) -> None:
    reports, trades = [], []
    for i in range(2):
        d = tmp_path / f"run{i}"
        d.mkdir()
        proc = run_cli("--strategy", "fair_value", *sim_args(d, seed="5"), "--report", "R.json", cwd=d)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((d / "R.json").read_text())
        reports.append(comparable(report))
        trades.append(read_csv(report["logs"]["trades"]))
    assert reports[0] == reports[1]
    assert trades[0] == trades[1]
    assert reports[0]["decisions"] > 0


def test_replay_of_a_recorded_sim_run_reproduces_its_trades(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl.gz"
    proc = run_cli("--strategy", "fair_value", *sim_args(tmp_path, seed="7"), "--record", str(rec),
                   "--report", "live.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("--strategy", "fair_value", "--source", "replay", "--replay", str(rec), "--markets", "1",
                   "--assets", "BTC,ETH", "--no-tui", "--log-dir", str(tmp_path / "logs2"),
                   "--report", "replay.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    live = json.loads((tmp_path / "live.json").read_text())
    replay = json.loads((tmp_path / "replay.json").read_text())
    assert live["trades"] > 0
    strip = WALL_FIELDS | {"source", "feed", "seed", "data_source", "recorded_source", "decisions", "library"}
    assert {k: v for k, v in live.items() if k not in strip} == {k: v for k, v in replay.items() if k not in strip}
    # the run decided once or twice in the next window before its last one settled; the recording ends
    # there, so the replay skips that window as cut and makes the same decisions, less those
    assert replay["library"]["windows_complete"] == 1 and replay["library"]["windows_cut"] == 1
    assert 0 < live["decisions"] - replay["decisions"] <= 2 * 2
    # the recording's header says what produced it: the sim run's source, seed and full profile
    assert replay["recorded_source"] == live["data_source"]
    assert live["data_source"]["sim_profile"]["name"] == "realistic"
    assert read_csv(live["logs"]["trades"]) == read_csv(replay["logs"]["trades"])


def test_resume_continues_reward_statistics_and_inference_never_writes(tmp_path: Path) -> None:
    proc = run_cli("--strategy", "rl", "--train", "--gamma", "1.0", *sim_args(tmp_path, seed="11"), "--save", "M",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    count_1 = int(np.load(tmp_path / "M_stats.npz")["reward_count"])
    assert count_1 > 0
    proc = run_cli("--strategy", "rl", "--train", "--load", "M", *sim_args(tmp_path, seed="12"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stats = np.load(tmp_path / "M_stats.npz")
    assert int(stats["reward_count"]) > count_1  # continued, not restarted
    assert float(stats["gamma"]) == 1.0  # the resumed run kept the discount the model was trained with
    before = (digest(tmp_path / "M.safetensors"), digest(tmp_path / "M_stats.npz"))
    proc = run_cli("--strategy", "rl", "--load", "M", *sim_args(tmp_path, seed="13"), "--report", "R.json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (digest(tmp_path / "M.safetensors"), digest(tmp_path / "M_stats.npz")) == before
    assert json.loads((tmp_path / "R.json").read_text())["model_saved"] is None
    assert not list(tmp_path.glob("rl_model*"))


def test_published_phase5_model_trades_greedy_and_phase3_is_refused(tmp_path: Path) -> None:
    copy_model(PHASE5, "rl_model", tmp_path)
    copy_model(PHASE3, "rl_model_prob_pnl", tmp_path)
    proc = run_cli("--strategy", "rl", "--load", "rl_model", *sim_args(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("--strategy", "rl", "--load", "rl_model_prob_pnl", *sim_args(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "actor.fc1.weight" in proc.stderr or "temporal_encoder" in proc.stderr
    proc = run_cli("--strategy", "rl", "--load", "nothing_here", *sim_args(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nothing_here" in proc.stderr


def test_live_source_without_network_exits_2_naming_the_venue(tmp_path: Path) -> None:
    closed = "http://127.0.0.1:9"  # discard port: nothing listens there
    env = {
        "UPDOWN_GAMMA_URL": closed, "UPDOWN_CLOB_URL": closed, "UPDOWN_CLOB_WS_URL": "ws://127.0.0.1:9",
        "UPDOWN_RTDS_WS_URL": "ws://127.0.0.1:9", "UPDOWN_BINANCE_FUTURES_WS_URL": "ws://127.0.0.1:9",
        "UPDOWN_BINANCE_FUTURES_REST_URL": closed, "UPDOWN_BINANCE_SPOT_WS_URL": "ws://127.0.0.1:9",
    }
    start = time.monotonic()
    # a process of its own: the URLs come from its environment, and the live clients' logging reaches its stderr
    proc = run_cli_process("--strategy", "momentum", "--source", "live", "--no-tui", "--log-dir", str(tmp_path),
                           cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--source sim" in lines[0] and "127.0.0.1:9" in lines[0]
    assert time.monotonic() - start < 45


def test_sigterm_during_a_speed_60_training_run_saves_and_exits_0(tmp_path: Path) -> None:
    # a process of its own: SIGTERM is delivered to it as a service manager would
    proc = subprocess.Popen(
        [sys.executable, str(RUN_PY), "--strategy", "rl", "--train", "--source", "sim", "--speed", "60",
         "--seed", "4", "--assets", "BTC,ETH", "--no-tui", "--log-dir", str(tmp_path / "logs"), "--save", "M",
         "--report", "R.json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(12)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.monotonic() - stopped_at < 10
    assert (tmp_path / "M.safetensors").exists() and (tmp_path / "M_stats.npz").exists()
    report = json.loads((tmp_path / "R.json").read_text())
    assert report["model_saved"] == "M" and report["decisions"] > 0
    assert "Traceback" not in err


def test_checkpoint_every_saves_during_the_run_and_keeps_the_last_k_backups(tmp_path: Path) -> None:
    proc = run_cli("--strategy", "rl", "--train", *sim_args(tmp_path, seed="6"), "--save", "M",
                   "--checkpoint-every", "3", "--keep-backups", "2", "--report", "R.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "R.json").read_text())
    assert report["updates"] >= 6  # at least two periodic checkpoints happened
    weights = sorted(tmp_path.glob("M_backup_*.safetensors"))
    stats = sorted(tmp_path.glob("M_backup_*_stats.npz"))
    assert 1 <= len(weights) <= 2 and len(stats) == len(weights)
    for w in weights:
        assert (tmp_path / (w.name[: -len(".safetensors")] + "_stats.npz")).exists()
    assert (tmp_path / "M.safetensors").exists()
