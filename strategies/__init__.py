"""Strategy registry: the names the CLI accepts and how each is built."""

from __future__ import annotations

from strategies.base import Strategy

STRATEGY_NAMES: tuple[str, ...] = ("rl", "momentum", "mean_revert", "fade_spike", "random", "gating", "fair_value")


def create_strategy(name: str, seed: int | None = None) -> Strategy:
    """Build a strategy by name; the RL agent is imported only when asked for (it loads MLX)."""
    if name == "rl":
        from strategies.rl import RLStrategy

        return RLStrategy(seed=seed)
    from strategies import baselines

    factories = {
        "momentum": baselines.MomentumStrategy,
        "mean_revert": baselines.MeanRevertStrategy,
        "fade_spike": baselines.FadeSpikeStrategy,
        "random": baselines.RandomStrategy,
        "gating": baselines.GatingStrategy,
        "fair_value": baselines.FairValueStrategy,
    }
    if name not in factories:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}")
    return factories[name](seed=seed)
