"""Per-market rollout buffer and GAE: which transitions are ready, and their advantages and returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def gae(
    rewards: np.ndarray, values: np.ndarray, done_last: bool, next_value: float, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns of one market's consecutive steps.

    Only the last step can be terminal (`done_last`: bootstrap 0); otherwise it bootstraps from
    `next_value`, the critic's value of that market's next step, whose own advantage is not known yet (0).
    """
    n = len(rewards)
    advantages = np.zeros(n, dtype=np.float64)
    following_value = 0.0 if done_last else next_value
    following_adv = 0.0
    for i in range(n - 1, -1, -1):
        delta = rewards[i] + gamma * following_value - values[i]
        following_adv = delta + gamma * lam * following_adv
        advantages[i] = following_adv
        following_value = values[i]
    return advantages, advantages + np.asarray(values, dtype=np.float64)


@dataclass(slots=True)
class Step:
    """One decision of one market: inputs, sampled action, its log-prob and value, then its reward."""

    features: np.ndarray  # (input_dim,)
    history: np.ndarray  # (history_len, input_dim), oldest first, last row = features
    action: int
    log_prob: float
    value: float
    reward: float = 0.0
    done: bool = False


@dataclass(slots=True)
class RolloutBatch:
    """Ready transitions of all markets, flattened for the update (rewards raw, advantages from scaled)."""

    features: np.ndarray
    history: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    advantages: np.ndarray
    returns: np.ndarray


@dataclass
class RolloutBuffer:
    """Trajectories kept per market, so GAE never bootstraps one market from another.

    A step is *ready* once its successor in the same market is known (its value bootstraps the
    step), or once it is terminal. A market's newest completed step waits for the next update.
    """

    pending: dict[str, Step] = field(default_factory=dict)  # acted this tick, reward not recorded yet
    open: dict[str, list[Step]] = field(default_factory=dict)  # completed steps of running markets
    closed: list[list[Step]] = field(default_factory=list)  # trajectories of resolved markets
    truncated: list[list[Step]] = field(default_factory=list)  # forgotten markets: last step only bootstraps
    ready: int = 0

    def start(self, market_id: str, step: Step) -> None:
        """A new decision; a previous one that never got its reward is completed with reward 0."""
        if market_id in self.pending:
            self.complete(market_id, 0.0)
        self.pending[market_id] = step

    def complete(self, market_id: str, reward: float) -> bool:
        """Give the pending step its reward; False if the market has no pending step."""
        step = self.pending.pop(market_id, None)
        if step is None:
            return False
        step.reward = reward
        trajectory = self.open.setdefault(market_id, [])
        if trajectory:
            self.ready += 1  # the previous step now has a successor to bootstrap from
        trajectory.append(step)
        return True

    def end(self, market_id: str, reward: float) -> bool:
        """Add the settlement reward to the market's last step and make it terminal; False if it has none."""
        if market_id in self.pending:
            self.complete(market_id, 0.0)
        trajectory = self.open.pop(market_id, None)
        if not trajectory:
            return False
        trajectory[-1].reward += reward
        trajectory[-1].done = True
        self.closed.append(trajectory)
        self.ready += 1
        return True

    def forget(self, market_id: str) -> None:
        """Stop tracking a market that will never end: its ready steps stay, its last step only bootstraps."""
        self.pending.pop(market_id, None)
        trajectory = self.open.pop(market_id, None)
        if trajectory and len(trajectory) >= 2:
            self.truncated.append(trajectory)

    def clear(self) -> None:
        self.pending.clear()
        self.open.clear()
        self.closed.clear()
        self.truncated.clear()
        self.ready = 0

    def take(self, gamma: float, lam: float, reward_scale: float) -> RolloutBatch:
        """Remove and return every ready transition with its GAE advantage (rewards x reward_scale)."""
        segments: list[tuple[list[Step], np.ndarray, np.ndarray]] = []

        def add(steps: list[Step], done_last: bool, next_value: float) -> None:
            rewards = np.array([s.reward for s in steps], dtype=np.float64) * reward_scale
            values = np.array([s.value for s in steps], dtype=np.float64)
            segments.append((steps, *gae(rewards, values, done_last, next_value, gamma, lam)))

        for trajectory in self.closed:
            add(trajectory, True, 0.0)
        for trajectory in self.truncated:
            add(trajectory[:-1], False, trajectory[-1].value)
        for market_id, trajectory in self.open.items():
            if len(trajectory) >= 2:
                add(trajectory[:-1], False, trajectory[-1].value)
                self.open[market_id] = trajectory[-1:]
        self.closed, self.truncated = [], []
        self.ready = 0
        steps = [s for seg in segments for s in seg[0]]
        return RolloutBatch(
            features=np.stack([s.features for s in steps]).astype(np.float32),
            history=np.stack([s.history for s in steps]).astype(np.float32),
            actions=np.array([s.action for s in steps], dtype=np.int32),
            log_probs=np.array([s.log_prob for s in steps], dtype=np.float32),
            values=np.array([s.value for s in steps], dtype=np.float32),
            rewards=np.array([s.reward for s in steps], dtype=np.float64),
            advantages=np.concatenate([seg[1] for seg in segments]).astype(np.float32),
            returns=np.concatenate([seg[2] for seg in segments]).astype(np.float32),
        )

