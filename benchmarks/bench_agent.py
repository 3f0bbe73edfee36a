"""Speed of the RL agent: batched decisions, one PPO update (numpy and MLX backends), save and load.

usage: python benchmarks/bench_agent.py [--repeats N] [--skip-mlx-update]

Prints: act_batch latency for a 4-market tick in eval and train mode (median, p99), the largest
difference between the numpy decision network and the MLX networks, one PPO update on a full buffer
(256 transitions x 10 epochs x batch 64, KL early stop off so every update runs all 40 minibatch
steps) for the default numpy backend and the compiled MLX step, where one minibatch step's time goes
(forward, loss, backward, clip + Adam) with the numba loops and on the plain numpy path, save and load
times, file sizes.
Timings are wall-clock on whatever else the machine is running: repeat and compare medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strategies.base import MarketState
from strategies.rl import PPOConfig, RLStrategy, kernels
from strategies.rl.blas import one_blas_thread
from strategies.rl.numpy_update import NumpyPPO


def _timings(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def tick_states(rng: np.random.Generator, tick: int, window_ticks: int = 1800) -> list[MarketState]:
    """Random states of the 4 markets at `tick`; each market lasts `window_ticks` ticks (1800: 15 minutes)."""
    return [
        MarketState(
            market_id=f"{asset}-{tick // window_ticks}",
            asset=asset,
            prob=float(rng.uniform(0.2, 0.8)),
            spread=0.01,
            returns_1m=float(rng.normal(0, 0.001)),
            trade_flow_imbalance=float(rng.uniform(-1, 1)),
            time_remaining=1.0 - (tick % window_ticks) / window_ticks,
        )
        for asset in ("BTC", "ETH", "SOL", "XRP")
    ]


def bench_decisions(repeats: int) -> None:
    rng = np.random.default_rng(0)
    batches = [tick_states(rng, t) for t in range(repeats)]
    for mode in ("eval", "train"):
        agent = RLStrategy(PPOConfig(buffer_size=10**9), seed=0)  # no update interrupts the timing
        getattr(agent, mode)()
        for states in batches[:50]:  # warm-up: first calls allocate the tiled rows and buffers
            agent.act_batch(states)
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
        states = tick_states(rng, tick)
        actions = agent.act_batch(states)
        for state, action in zip(states, actions, strict=True):
            agent.record(state.market_id, float(rng.normal(0, 5)) if action and rng.random() < 0.1 else 0.0)
        tick += 1


def bench_numpy_vs_mlx() -> None:
    """Largest |numpy - MLX| of the decision outputs, on a freshly built and on a trained agent."""
    agent = RLStrategy(PPOConfig(buffer_size=10**9), seed=3)
    agent.train()
    rng = np.random.default_rng(3)
    features = rng.uniform(-1, 1, (256, agent.config.input_dim)).astype(np.float32)
    history = rng.uniform(-1, 1, (256, agent.config.history_len, agent.config.input_dim)).astype(np.float32)
    for label in ("fresh", "after 1 update"):
        probs, values = agent.evaluate(features, history)
        fast_probs, fast_values = agent.evaluate_numpy(features, history)
        print(
            f"numpy vs MLX decisions ({label:14s}): max |diff| probs {np.abs(fast_probs - probs).max():.1e}   "
            f"values {np.abs(fast_values - values).max():.1e}   (256 random states)"
        )
        _fill(agent, rng, 256)
        agent.update()


def bench_update(repeats: int, backend: str) -> None:
    config = replace(PPOConfig(), update_backend=backend)
    # KL early stop off: every timed update runs all n_epochs x (256 / 64) minibatch steps
    agent = RLStrategy(replace(config, buffer_size=10**9, target_kl=float("inf")), seed=1)
    agent.train()
    rng = np.random.default_rng(1)
    samples, cpu = [], []
    for i in range(repeats + 1):
        _fill(agent, rng, config.buffer_size)
        start, start_cpu = time.perf_counter(), time.process_time()
        agent.update()
        elapsed = (time.perf_counter() - start) * 1e3
        if i == 0:
            print(f"PPO update [{backend}], first (compiles/allocates):    {elapsed:7.1f} ms")
            continue
        samples.append(elapsed)
        cpu.append((time.process_time() - start_cpu) * 1e3)  # all our threads: MLX computes on its own
    steps = config.n_epochs * -(-config.buffer_size // config.batch_size)
    print(
        f"PPO update [{backend}], {config.buffer_size} transitions x {config.n_epochs} epochs x batch "
        f"{config.batch_size} ({steps} steps): median {statistics.median(samples):7.1f} ms   "
        f"p90 {np.percentile(samples, 90):7.1f} ms   (CPU median {statistics.median(cpu):.1f} ms; {repeats} updates)"
    )


def _best_block_median(fn: Callable[[], object], calls: int = 300, blocks: int = 7) -> float:
    """µs per call: the second-best of `blocks` block means (this machine's speed drifts with its neighbours)."""
    for _ in range(50):
        fn()
    means = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        means.append((time.perf_counter() - start) / calls * 1e6)
    return sorted(means)[1]


def bench_step_parts() -> None:
    """Where one 64-row minibatch step goes, with the compiled loops (default) and on the plain numpy path."""
    agent = RLStrategy(seed=1)
    rng = np.random.default_rng(0)
    n, dim = 64, agent.config.input_dim
    features = rng.standard_normal((n, dim)).astype(np.float32)
    history = rng.standard_normal((n, agent.config.history_len * dim)).astype(np.float32)
    actions = rng.integers(0, 3, n)
    old = np.full(n, np.log(1 / 3), dtype=np.float32)
    advantages, returns = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    batch = (features, history, actions, old, advantages, returns)
    for label, fused in (("compiled loops", True), ("plain numpy   ", False)):
        if fused and not kernels.AVAILABLE:
            print("minibatch step [compiled loops]: numba is not installed")
            continue
        trainer = NumpyPPO(agent.expected_shapes(), agent.config, fused=fused)
        trainer.load(agent.weights())
        with one_blas_thread():
            step = _best_block_median(lambda t=trainer: t.step(*batch))
            forward = _best_block_median(lambda t=trainer: t.net.forward(features, history))
            d_out = (rng.standard_normal((n, 4)) * 0.01).astype(np.float32)
            backward = _best_block_median(lambda t=trainer, d=d_out: t.net.backward(d))
            gradients = _best_block_median(lambda t=trainer: t.gradients(*batch))
            adam = _best_block_median(trainer._clip_and_apply)
        print(
            f"minibatch step [{label}]: {step:6.0f} µs = forward {forward:4.0f} + loss "
            f"{max(gradients - forward - backward, 0):3.0f} + backward {backward:4.0f} + clip/Adam {adam:3.0f} "
            f"(best-block means)"
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
    parser.add_argument(
        "--repeats", type=int, default=2000, help="decision calls (updates and saves use fewer)"
    )
    parser.add_argument("--skip-mlx-update", action="store_true", help="skip the (slow) MLX update timing")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (other work skews wall times)"
    )
    bench_decisions(args.repeats)
    bench_numpy_vs_mlx()
    bench_update(max(5, args.repeats // 100), "numpy")
    bench_step_parts()
    if not args.skip_mlx_update:
        bench_update(5, "mlx")
    bench_persistence(max(5, args.repeats // 100))


if __name__ == "__main__":
    main()
