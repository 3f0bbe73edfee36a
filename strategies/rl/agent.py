"""The PPO agent as a Strategy: batched decisions, the per-market buffer, reward statistics, save and load.

Decisions run through a numpy copy of both networks (`numpy_decisions.py`); each ready buffer (`buffer.py`)
is one PPO update (`ppo.py`), in numpy by default (`PPOConfig.update_backend`); the MLX networks
(`networks.py`) hold the weights that are saved, loaded and evaluated.

Reward normalisation: running mean/std of the realized (non-zero) rewards only; rewards are scaled by
`reward / (reward_std + 1e-8)` without subtracting the mean, so a HOLD step keeps reward exactly 0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

import persistence
from strategies.base import FEATURE_SET_IDS, FEATURE_SETS, Action, MarketState, Strategy, features_matrix
from strategies.rl.buffer import RolloutBatch, RolloutBuffer, Step
from strategies.rl.config import NUM_ACTIONS, PPOConfig
from strategies.rl.networks import ActorCritic, TemporalMLP
from strategies.rl.numpy_decisions import DecisionNetwork, softmax
from strategies.rl.ppo import METRIC_NAMES, UPDATE_BACKENDS, UpdateBackend, loss_inputs, ppo_loss, ppo_update

_ACTIONS = tuple(Action)  # index -> Action without constructing one per decision
MAX_TRACKED_MARKETS = 64  # markets never ended (engine dropped them) are forgotten past this many
_ARCH_FIELDS = ("input_dim", "hidden_size", "critic_hidden_size", "history_len", "temporal_dim", "temporal_hidden")


class RLStrategy(Strategy):
    """PPO agent: batched decisions from a numpy copy of the weights; the update runs in numpy by default
    (`PPOConfig.update_backend`), the MLX networks hold the weights that are saved and loaded."""

    name = "rl"

    def __init__(self, config: PPOConfig | None = None, seed: int | None = None) -> None:
        super().__init__()
        self.config = config or PPOConfig()
        if self.config.input_dim != len(FEATURE_SETS.get(self.config.feature_set, ())):
            raise ValueError(
                f"input_dim {self.config.input_dim} does not fit feature set {self.config.feature_set!r}; "
                "build the config with config_for_features"
            )
        if self.config.update_backend not in UPDATE_BACKENDS:
            choices = " or ".join(UPDATE_BACKENDS)
            raise ValueError(f"unknown update_backend {self.config.update_backend!r}; choose {choices}")
        if seed is not None:
            mx.random.seed(seed)
        self._rng = np.random.default_rng(seed)
        self.model = ActorCritic(self.config)
        self.actor: TemporalMLP = self.model.actor
        self.critic: TemporalMLP = self.model.critic
        # a near-zero last policy layer starts from an almost uniform policy (exploration)
        self.actor.fc3.weight = self.actor.fc3.weight * 0.01
        mx.eval(self.model.parameters())
        self.reward_mean = 0.0
        self.reward_count = 0
        self._reward_m2 = 0.0  # Welford sum of squared deviations
        self.updates_done = 0
        self.buffer = RolloutBuffer()
        self._history: dict[str, np.ndarray] = {}  # market_id -> (history_len, input_dim) ring, oldest first
        self._metrics: list[dict] = []
        self.load_notes: list[str] = []  # what the last load fell back on, for the console
        self._reset_update()
        self._refresh_numpy()

    # --- reward statistics -------------------------------------------------------------------------

    @property
    def reward_std(self) -> float:
        """Population std of the realized rewards seen; 1.0 until two have been seen."""
        return math.sqrt(self._reward_m2 / self.reward_count) if self.reward_count >= 2 else 1.0

    def _observe_reward(self, reward: float) -> None:
        if reward == 0.0:
            return  # HOLD steps and flat settlements say nothing about the scale of realized PnL
        self.reward_count += 1
        delta = reward - self.reward_mean
        self.reward_mean += delta / self.reward_count
        self._reward_m2 += delta * (reward - self.reward_mean)

    # --- forward passes ----------------------------------------------------------------------------

    def _refresh_numpy(self) -> None:
        params = {k: np.array(v) for k, v in tree_flatten(self.model.parameters())}
        self._decide = DecisionNetwork(params, self.config.input_dim)

    def evaluate(self, features: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Policy probabilities (N, 3) and values (N,) from the MLX networks.

        features: float32 (N, input_dim); history: float32 (N, history_len, input_dim), oldest first,
        zero rows padding a short history, last row = the current state.
        """
        f = mx.array(np.asarray(features, dtype=np.float32))
        h = mx.array(np.asarray(history, dtype=np.float32).reshape(len(features), -1))
        probs = mx.softmax(self.actor(f, h), axis=-1)
        values = self.critic(f, h).squeeze(-1)
        mx.eval(probs, values)
        return np.array(probs), np.array(values)

    def evaluate_numpy(self, features: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Same as `evaluate` through the numpy copy of the weights (what `act_batch` uses)."""
        h = np.asarray(history, dtype=np.float32).reshape(len(features), -1)
        out = self._decide(features, h)
        return softmax(out[:, :NUM_ACTIONS]), out[:, NUM_ACTIONS]

    # --- Strategy contract --------------------------------------------------------------------------

    @property
    def tracked_markets(self) -> tuple[str, ...]:
        """Markets whose recent states are held for the TemporalEncoder, longest-tracked first."""
        return tuple(self._history)

    def _push_history(self, market_id: str, row: np.ndarray) -> np.ndarray:
        ring = self._history.get(market_id)
        if ring is None:
            if len(self._history) >= MAX_TRACKED_MARKETS:
                forgotten = next(iter(self._history))  # the longest-tracked market
                del self._history[forgotten]
                self.buffer.forget(forgotten)
            ring = np.zeros((self.config.history_len, self.config.input_dim), dtype=np.float32)
            self._history[market_id] = ring
        ring[:-1] = ring[1:]
        ring[-1] = row
        return ring

    def act_batch(self, states: Sequence[MarketState]) -> list[Action]:
        if not states:
            return []
        n = len(states)
        features = features_matrix(states, self.config.feature_set)
        history = np.stack([self._push_history(s.market_id, features[i]) for i, s in enumerate(states)])
        out = self._decide(features, history.reshape(n, -1))
        if not self.training:
            # the softmax keeps the order of the logits
            return [_ACTIONS[a] for a in out[:, :NUM_ACTIONS].argmax(axis=1).tolist()]
        logits = out[:, :NUM_ACTIONS]
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        cumulative = np.cumsum(weights, axis=1)
        # inverse-CDF sampling, one uniform per market, on the unnormalised cumulative weights
        picks = (self._rng.random((n, 1)) * cumulative[:, -1:] > cumulative).sum(axis=1)
        actions = np.minimum(picks, NUM_ACTIONS - 1)
        log_probs = np.log(np.maximum(weights[np.arange(n), actions] / cumulative[:, -1], 1e-12))
        values = out[:, NUM_ACTIONS].tolist()
        for state, f, h, a, log_prob, value in zip(
            states, features, history, actions.tolist(), log_probs.tolist(), values, strict=True
        ):
            self.buffer.start(state.market_id, Step(f, h, a, log_prob, value))
        return [_ACTIONS[a] for a in actions.tolist()]

    def record(self, market_id: str, reward: float) -> None:
        if self.buffer.complete(market_id, reward):
            self._observe_reward(reward)
            self._maybe_update()

    def end_market(self, market_id: str, reward: float) -> None:
        self._history.pop(market_id, None)
        if self.buffer.end(market_id, reward):
            self._observe_reward(reward)
            self._maybe_update()

    def pop_updates(self) -> list[dict]:
        out, self._metrics = self._metrics, []
        return out

    # --- PPO update --------------------------------------------------------------------------------

    def _reset_update(self) -> None:
        """A fresh update backend: new Adam moments (they are not checkpointed), for MLX a new compiled step."""
        self._update: UpdateBackend = UPDATE_BACKENDS[self.config.update_backend](self.model, self.config)

    def _maybe_update(self) -> None:
        if self.buffer.ready >= self.config.buffer_size:
            self.update()

    def update(self) -> dict:
        """One PPO update on every ready transition; returns (and queues for pop_updates) its metrics."""
        if self.buffer.ready == 0:
            raise ValueError("no ready transitions to update on")
        cfg = self.config
        return self.train_on_batch(self.buffer.take(cfg.gamma, cfg.gae_lambda, 1.0 / (self.reward_std + 1e-8)))

    def batch_loss(self, batch: RolloutBatch) -> dict[str, float]:
        """The PPO loss and its parts on `batch` with the current weights (no update)."""
        loss, parts = ppo_loss(self.model, *(mx.array(a) for a in loss_inputs(batch)), config=self.config)
        mx.eval(loss, parts)
        named = zip(METRIC_NAMES, np.array(parts), strict=True)
        return {"loss": float(loss), **{k: float(v) for k, v in named}}

    def train_on_batch(self, batch: RolloutBatch) -> dict:
        """n_epochs of shuffled minibatch steps on `batch`, stopping early on KL; returns the metrics."""
        metrics = ppo_update(self._update, batch, self.config, self._rng)
        self._refresh_numpy()
        self.updates_done += 1
        metrics = {"update_num": self.updates_done, **metrics}
        self._metrics.append(metrics)
        return metrics

    # --- persistence ---------------------------------------------------------------------------------

    def weights(self) -> dict[str, np.ndarray]:
        """The 36 tensors under their published names, as float32 numpy arrays."""
        return {k: np.array(v, dtype=np.float32) for k, v in tree_flatten(self.model.parameters())}

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in tree_flatten(self.model.parameters())}

    def checkpoint_stats(self) -> persistence.CheckpointStats:
        cfg = self.config
        return persistence.CheckpointStats(
            reward_mean=float(self.reward_mean),
            reward_std=float(self.reward_std),
            reward_count=int(self.reward_count),
            input_dim=cfg.input_dim,
            hidden_size=cfg.hidden_size,
            critic_hidden_size=cfg.critic_hidden_size,
            history_len=cfg.history_len,
            temporal_dim=cfg.temporal_dim,
            temporal_hidden=cfg.temporal_hidden,
            gamma=float(cfg.gamma),
            buffer_size=cfg.buffer_size,
            updates=self.updates_done,
            feature_set=FEATURE_SET_IDS[cfg.feature_set],
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write `path.safetensors` + `path_stats.npz` atomically; CheckpointError if it cannot."""
        persistence.save_checkpoint(path, self.weights(), self.checkpoint_stats())

    def load(self, path: str | os.PathLike[str], allow_fresh_stats: bool = False) -> list[str]:
        """Restore weights and reward statistics; validates everything first, so a failure changes nothing.

        Returns notes on what the loader fell back on (print them); raises CheckpointError.
        """
        checkpoint = persistence.load_checkpoint(path, allow_fresh_stats=allow_fresh_stats)
        self._apply(checkpoint, os.fspath(path))
        self.load_notes = checkpoint.notes
        return checkpoint.notes

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        config: PPOConfig | None = None,
        seed: int | None = None,
        allow_fresh_stats: bool = False,
    ) -> RLStrategy:
        """An agent built with the architecture, feature set and gamma the checkpoint's stats record, then
        loaded from it. `config` supplies everything else (learning rates, buffer size, ...); notes are in
        `load_notes`.
        """
        checkpoint = persistence.load_checkpoint(path, allow_fresh_stats=allow_fresh_stats)
        base = config or PPOConfig()
        recorded = {}
        if checkpoint.stats is not None:
            recorded = {k: getattr(checkpoint.stats, k) for k in _ARCH_FIELDS if getattr(checkpoint.stats, k) is not None}
            names = {v: k for k, v in FEATURE_SET_IDS.items()}
            if checkpoint.stats.feature_set in names:  # older stats lack it: the standard set
                recorded["feature_set"] = names[checkpoint.stats.feature_set]
            if checkpoint.stats.gamma is not None:  # resuming keeps the discount the values were learned with
                recorded["gamma"] = float(checkpoint.stats.gamma)
        agent = cls(replace(base, **recorded), seed=seed)
        agent._apply(checkpoint, os.fspath(path))
        agent.load_notes = checkpoint.notes
        return agent

    def _apply(self, checkpoint: persistence.Checkpoint, source: str) -> None:
        persistence.validate_weights(checkpoint.weights, self.expected_shapes(), source)
        stats = checkpoint.stats
        expected = FEATURE_SET_IDS[self.config.feature_set]
        if stats is not None and stats.feature_set not in (None, expected):
            raise persistence.CheckpointError(
                f"{source} was trained on feature set {stats.feature_set}, this agent computes feature set "
                f"{expected} ({self.config.feature_set}); its decisions would be meaningless, so train a new model"
            )
        # everything validated: from here on nothing can fail half-way
        self.model.update(tree_unflatten([(k, mx.array(v)) for k, v in checkpoint.weights.items()]))
        mx.eval(self.model.parameters())
        if stats is None:
            self.reward_mean, self.reward_count, self._reward_m2, self.updates_done = 0.0, 0, 0.0, 0
        else:
            self.reward_mean, self.reward_count = stats.reward_mean, stats.reward_count
            self._reward_m2 = stats.reward_std**2 * stats.reward_count if stats.reward_count >= 2 else 0.0
            self.updates_done = stats.updates
        self.buffer.clear()  # collected with the previous weights
        self._history.clear()
        self._reset_update()
        self._refresh_numpy()
