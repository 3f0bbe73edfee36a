"""Speed of the RL agent: batched decisions, one PPO update, save and load, checkpoint sizes.

usage: python benchmarks/bench_agent.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strategies.base import MarketState
from strategies.rl_mlx import PPOConfig, RLStrategy


def _timings(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _states(rng: np.random.Generator, tick: int) -> list[MarketState]:
    return [
        MarketState(
            market_id=f"{asset}-{tick // 1800}",
            asset=asset,
            prob=float(rng.uniform(0.2, 0.8)),
            spread=0.01,
            returns_1m=float(rng.normal(0, 0.001)),
            trade_flow_imbalance=float(rng.uniform(-1, 1)),
            time_remaining=1.0 - (tick % 1800) / 1800,
        )
        for asset in ("BTC", "ETH", "SOL", "XRP")
    ]


def bench_decisions(repeats: int) -> None:
    rng = np.random.default_rng(0)
    batches = [_states(rng, t) for t in range(repeats)]
    for mode in ("eval", "train"):
        agent = RLStrategy(PPOConfig(buffer_size=10**9), seed=0)  # no update interrupts the timing
        getattr(agent, mode)()
        tick = iter(batches)
        samples = np.array(_timings(lambda a=agent, it=tick: a.act_batch(next(it)), repeats)) * 1e6
        print(
            f"act_batch, 4 markets, {mode:5s}: median {np.median(samples):7.1f} µs   "
            f"p99 {np.percentile(samples, 99):7.1f} µs   ({repeats} calls)"
        )


def _fill(agent: RLStrategy, rng: np.random.Generator, transitions: int) -> None:
    """Collect until `transitions` are ready (about one in ten trades realizes a reward)."""
    tick = 0
    while agent.buffer.ready < transitions:
        states = _states(rng, tick)
        actions = agent.act_batch(states)
        for state, action in zip(states, actions, strict=True):
            agent.record(state.market_id, float(rng.normal(0, 5)) if action and rng.random() < 0.1 else 0.0)
        tick += 1


def bench_update(repeats: int) -> None:
    config = PPOConfig()
    agent = RLStrategy(PPOConfig(buffer_size=10**9), seed=1)  # collects without updating; we call update()
    agent.train()
    rng = np.random.default_rng(1)
    samples = []
    for i in range(repeats + 1):
        _fill(agent, rng, config.buffer_size)
        start = time.perf_counter()
        agent.update()
        elapsed = time.perf_counter() - start
        if i == 0:
            print(f"PPO update, first (includes mx.compile): {elapsed * 1e3:7.1f} ms")
            continue
        samples.append(elapsed * 1e3)
    print(
        f"PPO update, {config.buffer_size} transitions x {config.n_epochs} epochs x batch {config.batch_size}: "
        f"median {statistics.median(samples):7.1f} ms   max {max(samples):7.1f} ms   ({repeats} updates, "
        "KL early stop may shorten some)"
    )


def bench_persistence(repeats: int) -> None:
    agent = RLStrategy(seed=2)
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "rl_model"
        save = _timings(lambda: agent.save(base), repeats)
        load = _timings(lambda: agent.load(base), repeats)
        weights = base.with_name("rl_model.safetensors").stat().st_size
        stats = base.with_name("rl_model_stats.npz").stat().st_size
    print(f"save (2 files, fsync, atomic rename): median {statistics.median(save) * 1e3:6.2f} ms")
    print(f"load (parse, checksum, validate):     median {statistics.median(load) * 1e3:6.2f} ms")
    print(f"files: rl_model.safetensors {weights / 1024:.1f} KiB, rl_model_stats.npz {stats / 1024:.1f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000, help="decision calls (updates and saves use fewer)")
    args = parser.parse_args()
    bench_decisions(args.repeats)
    bench_update(max(5, args.repeats // 200))
    bench_persistence(max(5, args.repeats // 100))


if __name__ == "__main__":
    main()
