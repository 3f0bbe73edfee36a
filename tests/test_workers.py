"""`run.py --workers N`: rollout workers in real processes feeding one learner (engine/rollouts.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from strategies.rl.buffer import RolloutBuffer, Step
from strategies.rl.remote import EventBuffer, Learner

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), "--strategy", "rl", "--train", "--no-tui", *args]


def sim_args(tmp: Path, *extra: str) -> list[str]:
    return cli("--source", "sim", "--speed", "max", "--seed", "1", "--assets", "BTC",
               "--log-dir", str(tmp / "logs"), *extra)


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Two workers x one simulated BTC window each, saved as M with a report."""
    tmp = tmp_path_factory.mktemp("workers")
    proc = run_cli(sim_args(tmp, "--workers", "2", "--markets", "2", "--save", "M", "--report", "R.json"), tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp, json.loads((tmp / "R.json").read_text())


def test_workers_decide_with_the_weights_broadcast_after_each_update(two_workers: tuple[Path, dict]) -> None:
    _, report = two_workers
    assert report["updates"] >= 2
    for worker in ("w0", "w1"):
        versions = [int(v) for v in report["decision_versions"][worker]]  # in the order first used
        assert versions == sorted(versions), versions  # a worker never goes back to older weights
        assert versions[0] == 0 and len(versions) >= 2 and max(versions) >= 1, versions
        assert max(versions) <= report["updates"]


def test_every_decision_of_every_worker_reaches_the_learner(two_workers: tuple[Path, dict]) -> None:
    _, report = two_workers
    per_worker = {w["worker"]: w["decisions"] for w in report["workers"]}
    assert set(per_worker) == {0, 1} and all(n > 0 for n in per_worker.values())
    assert report["transitions"] == {"w0": per_worker[0], "w1": per_worker[1]}
    assert report["decisions"] == sum(per_worker.values())
    assert [w["stream"] for w in report["workers"]] == ["seed 1", "seed 100001"]  # different, reproducible streams


def test_resume_with_load_keeps_the_same_files_and_adds_up_the_statistics(two_workers: tuple[Path, dict]) -> None:
    from strategies.rl_mlx import RLStrategy

    tmp, first = two_workers
    before = RLStrategy.from_checkpoint(tmp / "M").checkpoint_stats()
    assert before.updates == first["updates"] and before.reward_count > 0
    proc = run_cli(sim_args(tmp, "--workers", "2", "--markets", "2", "--load", "M", "--report", "R2.json"), tmp)
    assert proc.returncode == 0, proc.stderr
    second = json.loads((tmp / "R2.json").read_text())
    after = RLStrategy.from_checkpoint(tmp / "M").checkpoint_stats()
    assert after.updates == before.updates + second["updates"]
    assert after.reward_count > before.reward_count
    assert sorted(p.name for p in tmp.glob("M*")) == ["M.safetensors", "M_stats.npz"]
    for versions in second["decision_versions"].values():  # the workers started from the loaded weights
        assert int(next(iter(versions))) == before.updates


def _worker_pids(pid: int) -> list[int]:
    """The learner's rollout workers (spawned children; not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _wait_training(proc: subprocess.Popen, logs: Path, deadline: float) -> None:
    while not any(len(p.read_text().splitlines()) > 1 for p in logs.glob("updates_*.csv")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)


def test_ctrl_c_stops_every_worker_and_saves_a_model_that_loads(tmp_path: Path) -> None:
    from strategies.rl_mlx import RLStrategy

    proc = subprocess.Popen(sim_args(tmp_path, "--workers", "2", "--save", "M"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_training(proc, tmp_path / "logs", time.monotonic() + 180)
    workers = _worker_pids(proc.pid)
    assert len(workers) == 2
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl+C does: every process of the group gets it
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "model saved" in out and "worker 1 (seed 100001)" in out
    assert not [p for p in workers if Path(f"/proc/{p}").exists()]
    assert RLStrategy.from_checkpoint(tmp_path / "M").checkpoint_stats().updates >= 1


def test_a_worker_that_dies_is_one_sentence_and_the_model_is_still_saved(tmp_path: Path) -> None:
    from strategies.rl_mlx import RLStrategy

    proc = subprocess.Popen(sim_args(tmp_path, "--workers", "2", "--save", "M"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_training(proc, tmp_path / "logs", time.monotonic() + 180)
    os.kill(_worker_pids(proc.pid)[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "rollout worker" in lines[0] and "stopped unexpectedly" in lines[0], err
    assert "the model was saved to M" in lines[0]
    assert RLStrategy.from_checkpoint(tmp_path / "M").checkpoint_stats().updates >= 1


@pytest.mark.parametrize(("extra", "needle"), [
    (["--source", "live"], "--source sim or replay"),
    (["--source", "sim", "--speed", "10"], "--speed max"),
    (["--source", "sim", "--tensorboard", "tb"], "--tensorboard"),
    (["--source", "sim", "--markets", "1"], "at least one window per worker"),
])
def test_workers_refuse_what_they_cannot_run_in_one_sentence(tmp_path: Path, extra: list[str], needle: str) -> None:
    proc = run_cli(cli("--workers", "2", *extra), tmp_path, timeout=60)
    assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_workers_refuse_inference_and_the_dashboard(tmp_path: Path) -> None:
    base = [sys.executable, str(ROOT / "run.py"), "--strategy", "rl", "--workers", "2"]
    no_train = run_cli([*base, "--no-tui"], tmp_path, timeout=60)
    assert no_train.returncode == 2 and "needs --strategy rl --train" in no_train.stderr
    tui = run_cli([*base, "--train"], tmp_path, timeout=60)
    assert tui.returncode == 2 and "--no-tui" in tui.stderr


def _events(steps: list[tuple[float, float]], end_reward: float, seed: int) -> list[tuple]:
    """One worker's events for market "m": (value, reward) per decision, then the settlement."""
    rng = np.random.default_rng(seed)
    buffer = EventBuffer()
    for value, reward in steps:
        buffer.start("m", Step(rng.random(18, dtype=np.float32), rng.random((5, 18), dtype=np.float32), 1,
                               -1.0, value))
        buffer.complete("m", reward)
    buffer.end("m", end_reward)
    return buffer.take_events()


def test_the_learner_keeps_the_same_market_of_two_workers_apart() -> None:
    from strategies.rl_mlx import RLStrategy

    a = _events([(0.1, 0.0), (0.2, 1.0), (0.3, 0.0)], 2.0, seed=1)
    b = _events([(-0.5, 0.0), (0.4, -1.0)], -3.0, seed=2)
    learner = Learner(RLStrategy(seed=0))
    for i in range(max(len(a), len(b))):  # interleaved, as the two workers' batches arrive
        learner.apply(0, a[i : i + 1])
        learner.apply(1, b[i : i + 1])
    assert learner.transitions == {0: 3, 1: 2}
    scale = 1.0 / (learner.agent.reward_std + 1e-8)
    together = learner.agent.buffer.take(0.95, 0.95, scale)
    expected = []
    for events in (b, a):  # each trajectory alone, as a single process would keep it; b settled first
        alone = RolloutBuffer()
        for event in events:
            if event[0] == "s":
                alone.start("m", Step(*event[2:7]))
            elif event[0] == "c":
                alone.complete("m", event[2])
            else:
                alone.end("m", event[2])
        expected.append(alone.take(0.95, 0.95, scale).advantages)
    np.testing.assert_allclose(together.advantages, np.concatenate(expected), rtol=1e-6)


def test_replay_workers_split_the_recorded_windows_between_them(tmp_path: Path) -> None:
    from streamers.library import Library

    recorded = run_cli([sys.executable, str(ROOT / "run.py"), "--strategy", "random", "--source", "sim", "--speed",
                        "max", "--seed", "5", "--markets", "3", "--assets", "BTC", "--no-tui", "--log-dir",
                        str(tmp_path / "logs"), "--record", "rec.jsonl.gz"], tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    windows = Library.open(str(tmp_path / "rec.jsonl.gz")).windows_complete
    assert windows >= 2
    proc = run_cli(cli("--source", "replay", "--replay", "rec.jsonl.gz", "--workers", "2", "--log-dir",
                       str(tmp_path / "logs"), "--save", "M", "--report", "R.json"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "R.json").read_text())
    played = [w["windows"] for w in report["workers"]]
    assert sum(played) == report["windows"] == windows and min(played) >= 1
    assert played[0] - played[1] in (0, 1)  # windows dealt in turn: worker 0 takes the odd one
    assert [w["stream"] for w in report["workers"]] == ["1 in 2 windows from #0", "1 in 2 windows from #1"]
