"""The agent split across processes for `--workers N`: rollout workers decide, one learner learns.

A worker's `RolloutAgent` decides exactly as `RLStrategy.act_batch` does (numpy decision copy, the same
sampling and history), but its buffer only writes down what happened (`EventBuffer`) and ships it in
batches; it switches to the learner's newest weights before its next decision. The `Learner` replays
those events into a real `RLStrategy`'s buffer under the key "w<worker>:<market>", so each market keeps
its own trajectory (GAE never crosses markets or workers), and the agent's own `record`/`end_market`
keep the reward statistics and trigger each PPO update at the same buffer size as a single process.
"""

from __future__ import annotations

import queue
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from strategies.base import Action, MarketState
from strategies.rl.agent import RLStrategy
from strategies.rl.buffer import Step
from strategies.rl.config import PPOConfig
from strategies.rl.numpy_decisions import DecisionNetwork

FLUSH_STEPS = 32  # decisions a worker batches into one message (fewer messages; at most this much later)

# events, in the order the worker's engine produced them
START, COMPLETE, END, FORGET = "s", "c", "e", "f"


class EventBuffer:
    """Stands in for `RolloutBuffer` in a worker: writes down every call for the learner and keeps nothing,
    so the worker never counts rewards or updates (it answers False: no step was completed here)."""

    ready = 0

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.version = 0  # the weights version the worker's decisions use, sent with each decision
        self.starts = 0

    def start(self, market_id: str, step: Step) -> None:
        self.events.append((START, market_id, step.features, step.history, step.action, step.log_prob,
                            step.value, self.version))
        self.starts += 1

    def complete(self, market_id: str, reward: float) -> bool:
        self.events.append((COMPLETE, market_id, reward))
        return False

    def end(self, market_id: str, reward: float) -> bool:
        self.events.append((END, market_id, reward))
        return False

    def forget(self, market_id: str) -> None:
        self.events.append((FORGET, market_id))

    def clear(self) -> None:
        self.events.clear()

    def take_events(self) -> list[tuple]:
        out, self.events = self.events, []
        self.starts = 0
        return out


class RolloutAgent(RLStrategy):
    """The policy in a worker: decides with the newest weights the learner broadcast, ships its events.

    `send(events)` delivers a batch to the learner; `weights` is the worker's queue of (version, weights);
    `latest` a shared integer the learner raises after each broadcast, so a decision costs no queue read
    unless new weights are waiting.
    """

    def __init__(
        self, config: PPOConfig, seed: int | None, version: int, weights: dict[str, np.ndarray],
        send: Callable[[list[tuple]], None], inbox: Any, latest: Any,
    ) -> None:
        super().__init__(config, seed=seed)
        self.buffer = EventBuffer()  # type: ignore[assignment]
        self._send = send
        self._inbox = inbox
        self._latest = latest
        self._use(version, weights)

    def _use(self, version: int, weights: dict[str, np.ndarray]) -> None:
        self._decide = DecisionNetwork(weights, self.config.input_dim)
        self.buffer.version = version

    def _poll_weights(self) -> None:
        newest = None
        while True:  # the newest waiting broadcast wins; older ones are skipped
            try:
                newest = self._inbox.get_nowait()
            except queue.Empty:
                break
        if newest is not None:
            self._use(*newest)

    def act_batch(self, states: Sequence[MarketState]) -> list[Action]:
        if self._latest.value != self.buffer.version:
            self._poll_weights()
        actions = super().act_batch(states)
        if self.buffer.starts >= FLUSH_STEPS:
            self.flush()
        return actions

    def end_market(self, market_id: str, reward: float) -> None:
        super().end_market(market_id, reward)
        self.flush()

    def flush(self) -> None:
        """Send what happened since the last flush (nothing when nothing did)."""
        if self.buffer.events:
            self._send(self.buffer.take_events())


class Learner:
    """The one agent that learns: replays each worker's events into its buffer and reports new weights."""

    def __init__(self, agent: RLStrategy) -> None:
        self.agent = agent
        self.decision_versions: dict[int, Counter[int]] = {}  # worker -> weights version -> decisions
        self.transitions: Counter[int] = Counter()  # worker -> decisions received

    @property
    def version(self) -> int:
        """The weights version: the agent's PPO updates over its whole life (it goes on across resumes)."""
        return self.agent.updates_done

    def apply(self, worker: int, events: list[tuple]) -> bool:
        """Replay one batch of a worker's events; True when a PPO update ran (new weights to broadcast)."""
        agent = self.agent
        before = agent.updates_done
        versions = self.decision_versions.setdefault(worker, Counter())
        for event in events:
            kind, key = event[0], f"w{worker}:{event[1]}"
            if kind == START:
                _, _, features, history, action, log_prob, value, version = event
                agent.buffer.start(key, Step(features, history, action, log_prob, value))
                versions[version] += 1
                self.transitions[worker] += 1
            elif kind == COMPLETE:
                agent.record(key, event[2])
            elif kind == END:
                agent.end_market(key, event[2])
            else:
                agent.buffer.forget(key)
        return agent.updates_done != before

    def broadcast(self) -> tuple[int, dict[str, np.ndarray]]:
        """(version, weights) for the workers: the numpy copy's source tensors under their published names."""
        return self.version, self.agent.weights()
