"""PPO hyperparameters and network sizes: one dataclass whose defaults are the published Phase 5 values."""

from __future__ import annotations

from dataclasses import dataclass, replace

from strategies.base import FEATURE_SET_IDS, FEATURE_SETS, NUM_FEATURES, Action

FEATURE_SET = FEATURE_SET_IDS["standard"]  # the published 18 features and scales (Phase 5); bump when they change
NUM_ACTIONS = len(Action)  # the actor's outputs: HOLD, BUY, SELL
LAYER_NORM_EPS = 1e-5  # every LayerNorm's epsilon (mlx.nn.LayerNorm's default); the numpy copies use it too


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters and network sizes; defaults are the published Phase 5 values."""

    actor_lr: float = 1e-4
    """Adam learning rate of the actor (policy) network."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critic (value) network."""
    gamma: float = 0.95
    """Discount factor per decision step."""
    gae_lambda: float = 0.95
    """GAE lambda: 0 = one-step TD advantages, 1 = Monte Carlo."""
    clip_eps: float = 0.2
    """PPO clipping range of the probability ratio."""
    entropy_coef: float = 0.03
    """Weight of the entropy bonus in the loss."""
    value_coef: float = 0.5
    """Weight of the value (MSE) loss in the loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip, applied to actor and critic gradients separately."""
    buffer_size: int = 256
    """Ready transitions that trigger one PPO update."""
    batch_size: int = 64
    """Minibatch size within an update."""
    n_epochs: int = 10
    """Passes over the buffer per update."""
    target_kl: float = 0.02
    """KL target: epochs stop early once an epoch's mean approx-KL exceeds kl_stop_factor x this."""
    kl_stop_factor: float = 1.5
    """Multiple of target_kl that stops the remaining epochs of an update."""
    history_len: int = 5
    """States the TemporalEncoder sees (the current one included), oldest first."""
    temporal_dim: int = 32
    """Output width of the TemporalEncoder."""
    temporal_hidden: int = 64
    """Hidden width of the TemporalEncoder."""
    input_dim: int = NUM_FEATURES
    """Features per state: 18 for the standard set, 25 for the extended one (see `config_for_features`)."""
    feature_set: str = "standard"
    """Which features the agent sees: "standard" (the published 18) or "extended" (+ quotes vs the index)."""
    hidden_size: int = 64
    """Hidden width of the actor."""
    critic_hidden_size: int = 96
    """Hidden width of the critic."""
    update_backend: str = "numpy"
    """Who runs the PPO update: "numpy" (the default: analytic gradients, about 20x faster on a Linux CPU,
    13.9 ms per update against 218-333 ms, TRAINING_JOURNAL.md) or "mlx" (the compiled autograd step of
    `ppo_loss`, the reference the numpy one is tested against). Same loss, clipping and Adam."""


def config_for_features(feature_set: str, base: PPOConfig | None = None) -> PPOConfig:
    """`base` (default PPOConfig()) with the feature set and the input width it implies."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {', '.join(FEATURE_SETS)}")
    return replace(base or PPOConfig(), feature_set=feature_set, input_dim=len(FEATURE_SETS[feature_set]))
