"""A gymnasium environment on the engine's own code: one market window per episode, registered as `updown/UpDown-v0`.

    import gymnasium as gym
    env = gym.make("engine.gym_env:updown/UpDown-v0", asset="BTC")   # the module part imports and registers
    obs, info = env.reset(seed=1001)                                # simulator seed 1001, its first window

The seam: the engine runs unchanged on its own thread with `_HandOff` as its strategy. When the engine asks
the strategy for the episode's market's action (`act_batch`), `_HandOff` hands the observation to the env
and blocks until `step` hands back an action; `record` and `end_market` (the engine's rewards, after the
fill's latency and at settlement) add up the step's reward. So fills, fees, latency, limits, settlement and
the reward are the engine's and PaperBroker's own, and an episode's return is the PnL the engine logs for
that market. Exactly one of the two threads runs at a time (each waits on the other's queue).

Observation: the market's scaled features (18, or 25 with `feature_set="extended"`) followed by the last
`history_len` feature rows oldest first (zero rows before the market's first state, the current row last):
the two inputs of the agent's networks (`RLStrategy.evaluate_numpy(obs[:, :d], obs[:, d:])`), in [-1, 1].
Actions: `Discrete(3)`, 0 HOLD, 1 BUY (long UP, or close a DOWN), 2 SELL (long DOWN, or close an UP).
Reward: realized PnL in dollars (a close, or the settlement at the window's end; 0 otherwise).

Episodes: `reset(seed=s)` starts a new run (on the simulator: seed s; a recording: from its start) and
its first window is the episode; `reset()` moves on to the next window of the same run (a run that had no
seed yet draws its simulator seed from `np_random`). The next window's market starts while the previous
one waits for its outcome (the first decision or two): they are HOLD, as the agent cannot act
in two episodes at once. A reset in the middle of an episode holds its market to the end and moves on.
A recording plays as `--replay` does: windows cut by its end, a file boundary or a gap are never traded
(no episode), and a recording that ends starts again from its beginning. An episode whose data ended
before its window did (the engine stopped mid-window) is truncated, its position closed at the book.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from engine.clock import VirtualClock
from engine.engine import Engine, EngineConfig
from strategies.base import FEATURE_SETS, Action, MarketState, Strategy, features_matrix
from streamers.frames import ASSETS
from streamers.market_data import MarketData

ENV_ID = "updown/UpDown-v0"
_STOP = -1  # env -> engine: stop the run (the blocked decision becomes HOLD)


class _HandOff(Strategy):
    """The engine's strategy inside the env: decisions of the episode's market go to the env and back."""

    name = "gym"

    def __init__(self, feature_set: str, history_len: int, clock: VirtualClock) -> None:
        super().__init__()
        self.feature_set = feature_set
        self.width = len(FEATURE_SETS[feature_set])
        self.history_len = history_len
        self.clock = clock
        self.events: queue.Queue[tuple] = queue.Queue()  # engine -> env
        self.actions: queue.Queue[int] = queue.Queue()  # env -> engine
        self.current: str | None = None  # the episode's market; None between episodes
        self.abandoned: set[str] = set()  # markets a reset left mid-episode: HOLD until they end
        self.reward = 0.0  # the episode market's reward since its last event
        self.window_end = 0.0
        self.stopping = False
        self._rings: dict[str, np.ndarray] = {}

    def _observe(self, market_id: str, features: np.ndarray) -> np.ndarray:
        ring = self._rings.get(market_id)
        if ring is None:
            ring = self._rings[market_id] = np.zeros((self.history_len, self.width), dtype=np.float32)
        ring[:-1] = ring[1:]
        ring[-1] = features
        return np.concatenate([features, ring.reshape(-1)])

    def act_batch(self, states: Sequence[MarketState]) -> list[Action]:
        features = features_matrix(states, self.feature_set)
        actions = []
        for state, row in zip(states, features, strict=True):
            market = state.market_id
            obs = self._observe(market, row)
            if self.current is None and not self.stopping and market not in self.abandoned:
                self.current, self.reward = market, 0.0  # the next episode's market
            if market != self.current or self.stopping:
                actions.append(Action.HOLD)  # the next window while the episode's market settles
                continue
            self.window_end = self.clock.now() + state.seconds_left
            self.events.put(("decide", market, obs, state.seconds_left, self._take_reward()))
            action = self.actions.get()
            actions.append(Action.HOLD if action == _STOP else Action(action))
        return actions

    def record(self, market_id: str, reward: float) -> None:
        if market_id == self.current:
            self.reward += reward

    def end_market(self, market_id: str, reward: float) -> None:
        self._rings.pop(market_id, None)
        self.abandoned.discard(market_id)
        if market_id != self.current:
            return
        self.reward += reward
        self.current = None
        # settled at or after the window's end; before it only when the run stopped (data ended)
        self.events.put(("ended", market_id, self.clock.now() < self.window_end, self._take_reward()))

    def _take_reward(self) -> float:
        """The reward since the last decision, handed over with the event (this thread alone writes it)."""
        reward, self.reward = self.reward, 0.0
        return reward


class _Run:
    """One engine run on its own thread, driven through a `_HandOff`."""

    def __init__(self, env: UpDownEnv, sim_seed: int | None) -> None:
        self.sim_seed = sim_seed
        self.clock = VirtualClock()
        self.handoff = _HandOff(env.feature_set, env.history_len, self.clock)
        self.engine: Engine | None = None
        self.report: dict | None = None
        self.finished = False
        self._env = env
        self._thread = threading.Thread(target=self._main, name="updown-gym-engine", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            report = asyncio.run(self._run())
            self.handoff.events.put(("finished", report, None))
        except BaseException as exc:  # handed to the env thread, which raises it
            self.handoff.events.put(("finished", None, exc))

    async def _run(self) -> dict:
        env = self._env
        assets = (env.asset,)
        from engine.sources import virtual_source

        if env.recording is not None:
            source = virtual_source("replay", seed=0, assets=assets, recordings=env.recording)
        else:
            source = virtual_source("sim", seed=self.sim_seed, assets=assets, profile=env.profile)
        cfg = EngineConfig(
            size=env.size, fill=env.fill, latency_ms=env.latency_ms, max_slippage=env.max_slippage, assets=assets,
            log_dir=env.log_dir, seed=self.sim_seed, source_name="replay" if env.recording else "sim",
            strategy_name="gym",
        )
        try:
            self.engine = Engine(self.handoff, source, self.clock, MarketData(assets=assets), cfg)
            if self.handoff.stopping:  # stop() came before the engine existed
                self.engine.stop()
            return await self.engine.run()
        finally:
            await source.close()

    def next_event(self) -> tuple:
        event = self.handoff.events.get()
        if event[0] == "finished":
            self.finished = True
            self.report = event[1]
            if event[2] is not None:
                raise RuntimeError(f"the engine stopped: {type(event[2]).__name__}: {event[2]}") from event[2]
        return event

    def stop(self) -> None:
        """Stop the run (positions close at the book, as at any engine stop) and wait for its thread."""
        if self.finished:
            return
        handoff = self.handoff
        handoff.stopping = True
        if self.engine is not None:
            self.engine.stop()
        handoff.actions.put(_STOP)  # releases a decision the engine may be waiting on
        while not self.finished:
            try:
                self.next_event()
            except RuntimeError:
                break
        self._thread.join()


class UpDownEnv(gym.Env):
    """One Polymarket 15-minute Up/Down market window per episode, traded through the engine's own fills.

    `source`: "sim" (the simulator with `sim_profile`, seeded through `reset(seed=...)`) or "replay"
    (`recording`, a file `run.py --record` wrote). The trading knobs are run.py's: `size` in dollars
    (a position is size x 0.5), `fill` ("book" or "mid"), `latency_ms`, `max_slippage`. `log_dir`: write
    the engine's CSV logs of each run there (None: none).
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(
        self,
        asset: str = "BTC",
        source: str = "sim",
        recording: str | None = None,
        sim_profile: str | None = None,
        feature_set: str = "standard",
        history_len: int = 5,
        size: float = 100.0,
        fill: str = "book",
        latency_ms: float = 300.0,
        max_slippage: float = 0.05,
        log_dir: str | None = None,
    ) -> None:
        if asset not in ASSETS:
            raise ValueError(f"unknown asset {asset!r}; choose one of {', '.join(ASSETS)}")
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {feature_set!r}; choose one of {', '.join(FEATURE_SETS)}")
        if source not in ("sim", "replay"):
            raise ValueError(f"source must be 'sim' or 'replay', got {source!r}")
        if (source == "replay") != (recording is not None):
            raise ValueError("a recording goes with source='replay', and source='replay' needs a recording")
        if fill not in ("book", "mid"):
            raise ValueError(f"fill must be 'book' or 'mid', got {fill!r}")
        if history_len < 1:
            raise ValueError(f"history_len must be 1 or more, got {history_len}")
        if not latency_ms >= 0.0:
            raise ValueError(f"latency_ms must be 0 or more, got {latency_ms}")
        if recording is not None:
            from streamers.library import Library

            Library.open(recording)  # a missing or empty recording fails here, with its name
        self.profile = None
        if source == "sim":
            from sim.profiles import load_profile

            self.profile = load_profile(sim_profile)
        self.asset = asset
        self.recording = recording
        self.feature_set = feature_set
        self.history_len = history_len
        self.size, self.fill, self.latency_ms, self.max_slippage = size, fill, latency_ms, max_slippage
        self.log_dir = log_dir
        width = len(FEATURE_SETS[feature_set])
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(width * (history_len + 1),), dtype=np.float32)
        self.action_space = spaces.Discrete(len(Action))
        self._run: _Run | None = None
        self._market: str | None = None  # the episode's market while the episode lasts
        self._obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        self._info: dict = {}
        self._return = 0.0

    @property
    def decisions(self) -> int:
        """Decisions the current run's engine has taken (the env's steps and the HOLDs between episodes)."""
        engine = self._run.engine if self._run is not None else None
        return engine.stats.decisions if engine is not None else 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        run = self._run
        if seed is not None or run is None or run.finished:
            self._start(seed)
        elif self._market is not None:
            run.handoff.abandoned.add(self._market)  # the engine waits on its decision: HOLD it to its end
            run.handoff.current = None
            run.handoff.actions.put(int(Action.HOLD))
        self._market = None
        restarted = False
        while True:
            event = self._run.next_event()
            if event[0] == "decide":
                break
            if event[0] == "finished":
                if restarted or self.recording is None:
                    raise RuntimeError("the run ended before a market of its asset could be traded "
                                       f"(is {self.asset} in the recording?)")
                self._start(None)  # a recording played to its end starts again
                restarted = True
        _, self._market, obs, seconds_left, _ = event
        self._return = 0.0
        self._obs = obs
        self._info = {"sim_seed": self._run.sim_seed, "market_id": self._market, "seconds_left": seconds_left}
        return obs, dict(self._info)

    def _start(self, seed: int | None) -> None:
        if self._run is not None:
            self._run.stop()
        sim_seed = None
        if self.recording is None:
            sim_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
        self._run = _Run(self, sim_seed)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._market is None or self._run is None:
            raise RuntimeError("call reset() before step(), and again after an episode ends")
        run = self._run
        run.handoff.actions.put(int(Action(int(action))))
        event = run.next_event()
        reward = event[-1]
        self._return += reward
        if event[0] == "decide":
            _, _, self._obs, seconds_left, _ = event
            self._info["seconds_left"] = seconds_left
            return self._obs, reward, False, False, dict(self._info)
        # ("ended", market, truncated, reward): the handoff only ends the episode's own market
        truncated = bool(event[2])
        self._market = None
        info = {**self._info, "seconds_left": 0.0, "episode_pnl": self._return}
        return self._obs, reward, not truncated, truncated, info

    def close(self) -> None:
        if self._run is not None:
            self._run.stop()
            self._run = None
        self._market = None
        super().close()


def register() -> None:
    """Register `updown/UpDown-v0` (importing this module does; again is harmless)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="engine.gym_env:UpDownEnv")


register()
