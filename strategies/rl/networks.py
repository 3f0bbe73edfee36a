"""The actor and the critic as MLX modules: they hold the weights that are saved, loaded and evaluated.

Each network is a TemporalMLP over the current features and a TemporalEncoder of the last `history_len`
states. Decisions and (by default) the PPO update run on numpy copies of these weights
(`numpy_decisions.py`, `numpy_update.py`); the parameter names are the checkpoint's 36 tensor names.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from strategies.rl.config import LAYER_NORM_EPS, NUM_ACTIONS, PPOConfig


class TemporalEncoder(nn.Module):
    """Flattened history (history_len x input_dim) -> hidden -> LN -> tanh -> temporal_dim -> LN -> tanh."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.fc2 = nn.Linear(hidden, out_dim)
        self.ln2 = nn.LayerNorm(out_dim, eps=LAYER_NORM_EPS)

    def __call__(self, history_flat: mx.array) -> mx.array:
        x = mx.tanh(self.ln1(self.fc1(history_flat)))
        return mx.tanh(self.ln2(self.fc2(x)))


class TemporalMLP(nn.Module):
    """[features, TemporalEncoder(history)] -> hidden -> LN -> tanh -> hidden -> LN -> tanh -> out.

    The actor (out = 3 logits) and the critic (out = 1 value) are each one of these, with their own encoder.
    """

    def __init__(self, config: PPOConfig, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.temporal_encoder = TemporalEncoder(
            config.history_len * config.input_dim, config.temporal_hidden, config.temporal_dim
        )
        self.fc1 = nn.Linear(config.input_dim + config.temporal_dim, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.fc2 = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.fc3 = nn.Linear(hidden, out_dim)

    def __call__(self, features: mx.array, history_flat: mx.array) -> mx.array:
        x = mx.concatenate([features, self.temporal_encoder(history_flat)], axis=-1)
        x = mx.tanh(self.ln1(self.fc1(x)))
        x = mx.tanh(self.ln2(self.fc2(x)))
        return self.fc3(x)


class ActorCritic(nn.Module):
    """Holds both networks so their parameters flatten to the published names (`actor.fc1.weight`, ...)."""

    def __init__(self, config: PPOConfig) -> None:
        super().__init__()
        self.actor = TemporalMLP(config, config.hidden_size, NUM_ACTIONS)
        self.critic = TemporalMLP(config, config.critic_hidden_size, 1)
