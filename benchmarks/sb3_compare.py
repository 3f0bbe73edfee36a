"""Stable-Baselines3 PPO on the gymnasium environment against our agent, on the same frames and held-out seeds.

    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu   # a CPU torch first, then
    pip install -e ".[sb3]"
    python -m benchmarks.sb3_compare --train-windows 10 --eval-seeds 1001,1002 --eval-windows 5

Both learn on the first `--train-windows` windows of simulator seed `--train-seed` for one asset and are
evaluated greedy on the same held-out windows: SB3's PPO (MlpPolicy, its defaults, the README's ten lines)
through `UpDownEnv`, ours through the engine as `benchmarks.learning` runs it, and ours again through the env
(the same model: the same PnL says the env is the engine). Decisions per second are training wall-clock
throughput, PPO updates included; torch and our updates both run on one thread. fair_value is beside them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.learning import Bench, seeds_arg
from benchmarks.learning_results import Outcome
from engine.gym_env import UpDownEnv
from strategies import create_strategy
from strategies.rl import PPOConfig, RLStrategy, config_for_features


def play(env: UpDownEnv, policy, seeds: list[int], windows: int) -> tuple[list[float], int, float]:
    """Greedy episodes: `windows` windows from the start of each seed; (PnL per window, decisions, seconds)."""
    pnls, steps, start = [], 0, time.perf_counter()
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        for window in range(windows):
            if window:
                obs, _ = env.reset()
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(policy(obs))
                steps += 1
                done = terminated or truncated
            pnls.append(info["episode_pnl"])
    return pnls, steps, time.perf_counter() - start


def row(name: str, outcome: Outcome, train_dps: float | None, eval_dps: float | None) -> str:
    mean, low, high = outcome.mean_ci()
    dps = f"{train_dps:>10,.0f}" if train_dps else f"{'-':>10}"
    return (f"{name:<28}{dps}{len(outcome.window_pnls):>9}{sum(outcome.window_pnls):>12,.0f}{mean:>10,.1f} [{low:>7,.1f}, "
            f"{high:>7,.1f}]" + (f"{eval_dps:>10,.0f}" if eval_dps else f"{'-':>10}"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--asset", default="BTC")
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--train-windows", type=int, default=10)
    p.add_argument("--eval-seeds", type=seeds_arg, default=[1001, 1002])
    p.add_argument("--eval-windows", type=int, default=5)
    p.add_argument("--agent-seed", type=int, default=0, help="seed of both agents' weights and sampling")
    p.add_argument("--out", default=None, help="folder for the models and our agent's CSV logs")
    args = p.parse_args(argv)
    try:
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import StopTrainingOnMaxEpisodes
    except ImportError:
        print("needs torch and stable-baselines3: install a CPU torch, then pip install -e '.[sb3]' (see README)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    out = Path(args.out or tempfile.mkdtemp(prefix="sb3_compare_"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"SB3 vs ours: {args.asset}, train seed {args.train_seed} x {args.train_windows} windows, held-out seeds "
          f"{args.eval_seeds} x {args.eval_windows} windows, files in {out}", flush=True)

    # SB3: the README's recipe; reset(seed=train_seed) comes from PPO(seed=...), so it sees the same frames
    env = UpDownEnv(asset=args.asset)
    model = PPO("MlpPolicy", env, seed=args.train_seed, device="cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=10**9, callback=StopTrainingOnMaxEpisodes(max_episodes=args.train_windows))
    sb3_train_dps = model.num_timesteps / (time.perf_counter() - start)
    model.save(out / "sb3_ppo")
    sb3_pnls, steps, seconds = play(env, lambda o: int(model.predict(o, deterministic=True)[0]), args.eval_seeds,
                                    args.eval_windows)
    sb3 = Outcome("sb3", "book", windows=len(sb3_pnls), pnl=sum(sb3_pnls), window_pnls=sb3_pnls)
    sb3_eval_dps = steps / seconds
    print(f"  SB3 PPO: {model.num_timesteps} steps in training, {sb3_train_dps:,.0f}/s", flush=True)

    # ours: trained and evaluated by the engine exactly as benchmarks.learning does
    config = config_for_features("standard", PPOConfig())
    bench = Bench((args.asset,), out, "standard", config)
    agent = bench.new_agent(args.agent_seed)
    save = str(out / "rl_model")
    rows = bench.train(agent, [args.train_seed], args.train_windows, "rl", save)
    start = time.perf_counter()
    ours = bench.evaluate(lambda s: RLStrategy.from_checkpoint(save, config=config, seed=s), "rl", args.eval_seeds,
                          args.eval_windows, "book", "", load=save)
    ours_eval_dps = ours.decisions / (time.perf_counter() - start)
    fair = bench.evaluate(lambda s: create_strategy("fair_value", seed=s), "fair_value", args.eval_seeds,
                          args.eval_windows, "book", "")

    # ours through the env: the same greedy model
    greedy = RLStrategy.from_checkpoint(save, config=config, seed=0)
    width = config.input_dim

    def ours_policy(obs: np.ndarray) -> int:
        probs, _ = greedy.evaluate_numpy(obs[None, :width], obs[None, width:])
        return int(probs[0].argmax())

    env_pnls, steps, seconds = play(env, ours_policy, args.eval_seeds, args.eval_windows)
    env.close()
    through_env = Outcome("rl via env", "book", windows=len(env_pnls), pnl=sum(env_pnls), window_pnls=env_pnls)
    ours_env_dps = steps / seconds

    ours_train_dps = rows[0]["decisions_per_second"]
    print(f"\nheld-out, --fill book, {args.asset} (greedy; net PnL of the complete windows, mean $/window and 95 % "
          f"interval over {len(args.eval_seeds)} seeds x {args.eval_windows} windows; d/s: decisions per second)")
    print(f"{'strategy':<28}{'train d/s':>10}{'windows':>9}{'net PnL $':>12}{'mean $/window [95% CI]':>30}"
          f"{'eval d/s':>10}")
    print(row("SB3 PPO (MlpPolicy) via env", sb3, sb3_train_dps, sb3_eval_dps))
    print(row("ours (engine)", ours, ours_train_dps, ours_eval_dps))
    print(row("ours, same model via env", through_env, None, ours_env_dps))
    print(row("fair_value (engine)", fair, None, None))
    gaps = [abs(a - b) for a, b in zip(ours.window_pnls, through_env.window_pnls, strict=True)]
    differ = [i for i, gap in enumerate(gaps) if gap > 1e-6]
    print(f"ours via the env vs through the engine: {len(gaps) - len(differ)} of {len(gaps)} windows equal; "
          f"the others differ by up to ${max(gaps):,.2f} (in the env a window's first decision or two are HOLD "
          "while the previous window settles)" if differ else "ours via the env equals ours through the engine, "
          "window by window")
    return 0


if __name__ == "__main__":
    sys.exit(main())
