"""Latency in every paper fill: an order decided at tick time t fills against the book as it stands at
t + latency on the virtual clock; the market waits for its order; the record comes after the fill.

Scripted sources send real venue frame shapes (tests.test_engine's scenario: books 0.49/0.50 every
0.5 s at x.25 and x.75, ticks at x.0 and x.5) plus frames that move the UP book between ticks.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from engine.broker import PaperBroker, taker_fee
from engine.clock import RealClock, VirtualClock
from engine.engine import Engine, EngineConfig
from strategies.base import Action, MarketState
from strategies.rl_mlx import RLStrategy
from streamers.frames import Frame
from streamers.market_data import MarketData
from tests.test_engine import (
    T0,
    RecordingStrategy,
    ScriptedSource,
    always,
    book_frame,
    chainlink_frame,
    market,
    read_csv,
    run_engine,
    scenario,
    trade_frame,
)


def up_book_frame(t: float, m: dict, bid: float, ask: float) -> Frame:
    """A new snapshot of the UP book only: one bid and one ask level of 100 shares."""
    event = {"event_type": "book", "asset_id": m["token_up"], "market": m["condition_id"],
             "bids": [{"price": str(bid), "size": "100"}], "asks": [{"price": str(ask), "size": "100"}],
             "timestamp": str(int(t * 1000)), "hash": "0x0"}
    return Frame(t, "polymarket_market", json.dumps([event]))


def buy_once_at(seconds_left: float):
    return lambda state: Action.BUY if state.seconds_left == seconds_left else Action.HOLD


def entry_of(report: dict) -> dict:
    trades = read_csv(report["logs"]["trades"])
    assert len(trades) == 1
    return trades[0]


def test_an_order_fills_at_the_book_as_it_stands_after_the_latency(tmp_path):
    a = market("0xa", T0)
    # decided at T0 against ask 0.50 (a sure profit: the window settles Up); by T0 + 0.28 the ask is 0.54
    frames = scenario([a], until=T0 + 12, extra=(up_book_frame(T0 + 0.28, a, 0.53, 0.54),))
    report = run_engine(RecordingStrategy(buy_once_at(10.0)), frames, tmp_path, latency_ms=300)
    row = entry_of(report)
    assert float(row["entry_price"]) == pytest.approx(0.54)
    # $5 / 0.54 = 9.259 -> 9.25 shares for $4.995; fee 9.25 x 0.07 x 0.54 x 0.46 = 0.16084; paid 1 per share
    assert float(row["shares"]) == pytest.approx(9.25) and float(row["size"]) == pytest.approx(4.995)
    assert float(row["pnl"]) == pytest.approx(9.25 - 4.995 - taker_fee(9.25, 0.54, 0.07))
    assert float(row["time_remaining_at_entry"]) == pytest.approx(9.7)  # filled at T0 + 0.3
    assert report["latency_ms"] == 300


def test_zero_latency_fills_at_the_decision_book_as_before(tmp_path):
    a = market("0xa", T0)
    frames = scenario([a], until=T0 + 12, extra=(up_book_frame(T0 + 0.28, a, 0.53, 0.54),))
    report = run_engine(RecordingStrategy(buy_once_at(10.0)), frames, tmp_path, latency_ms=0)
    row = entry_of(report)
    # 10 shares at 0.50 for $5.00, fee 10 x 0.07 x 0.25 = 0.175; settled at 1
    assert float(row["entry_price"]) == pytest.approx(0.50) and float(row["shares"]) == pytest.approx(10.0)
    assert float(row["pnl"]) == pytest.approx(10.0 - 5.0 - 0.175)
    assert float(row["time_remaining_at_entry"]) == pytest.approx(10.0)
    assert report["latency_ms"] == 0


def test_frames_up_to_the_due_time_are_applied_and_later_ones_are_not_seen(tmp_path):
    a = market("0xa", T0)
    moves = (up_book_frame(T0 + 0.3, a, 0.51, 0.52),  # stamped exactly at the due time: applied first
             up_book_frame(T0 + 0.31, a, 0.53, 0.54))  # 10 ms after: the order has filled already
    frames = scenario([a], until=T0 + 12, extra=moves)
    report = run_engine(RecordingStrategy(buy_once_at(10.0)), frames, tmp_path, latency_ms=300)
    assert float(entry_of(report)["entry_price"]) == pytest.approx(0.52)


def test_a_book_that_moved_past_the_limit_does_not_fill_and_is_counted(tmp_path):
    a = market("0xa", T0)
    # the limit is the decision's ask 0.50 + 0.05 = 0.55; by the fill the ask is 0.60
    frames = scenario([a], until=T0 + 12, extra=(up_book_frame(T0 + 0.28, a, 0.59, 0.60),))
    strategy = RecordingStrategy(buy_once_at(10.0))
    report = run_engine(strategy, frames, tmp_path, latency_ms=300)
    assert report["trades"] == 0 and report["skipped_orders"]["past_limit"] == 1
    assert ("record", "0xa", 0.0) in strategy.calls
    wider = run_engine(RecordingStrategy(buy_once_at(10.0)), frames, tmp_path, latency_ms=300, max_slippage=0.10)
    assert float(entry_of(wider)["entry_price"]) == pytest.approx(0.60)


def test_mid_fills_are_delayed_but_not_limited(tmp_path):
    a = market("0xa", T0)
    frames = scenario([a], until=T0 + 12, extra=(up_book_frame(T0 + 0.28, a, 0.69, 0.71),))
    report = run_engine(RecordingStrategy(buy_once_at(10.0)), frames, tmp_path, latency_ms=300, fill="mid")
    assert float(entry_of(report)["entry_price"]) == pytest.approx(0.70)  # the mid at T0 + 0.3, past any limit
    assert report["skipped_orders"]["past_limit"] == 0


def test_a_market_is_not_asked_again_while_its_order_is_in_flight():
    a = market("0xa", T0)

    def plan(state: MarketState) -> Action:
        return Action.BUY if state.seconds_left == 10.0 else Action.SELL if state.seconds_left == 8.5 else Action.HOLD

    strategy = RecordingStrategy(plan)
    report = run_engine(strategy, scenario([a], until=T0 + 12), latency_ms=1200)
    asked = [left for c in strategy.calls if c[0] == "act" for _, left in c[1]]
    # the buy is due at T0 + 1.2: the ticks at T0 + 0.5 and T0 + 1.0 skip the market; the sale is due at T0 + 2.7
    assert asked[:4] == [10.0, 8.5, 7.0, 6.5]
    assert report["decisions"] == len(asked)
    # one record per decision, each after its own act and before the market's next one
    events = [c[0] for c in strategy.calls if c[0] in ("act", "record")]
    assert events[:4] == ["act", "record", "act", "record"]
    close = [c for c in strategy.calls if c[0] == "record" and c[2] != 0.0]
    # bought 10 at 0.50 (fee 0.175), sold 10 at 0.49 (fee 10 x 0.07 x 0.49 x 0.51 = 0.17493)
    assert close == [("record", "0xa", pytest.approx(4.9 - 0.17493 - 5.0 - 0.175))]


def test_an_order_due_after_the_window_end_does_not_fill():
    a = market("0xa", T0)
    strategy = RecordingStrategy(buy_once_at(0.5))  # the window's last tick, T0 + 9.5
    report = run_engine(strategy, scenario([a], until=T0 + 12), latency_ms=600)  # due T0 + 10.1
    assert report["trades"] == 0 and report["skipped_orders"]["window_closed"] == 1
    tail = [c for c in strategy.calls if c[0] in ("record", "end")][-2:]
    assert tail == [("record", "0xa", 0.0), ("end", "0xa", 0.0)]  # the decision's reward comes before the end


def test_an_order_in_flight_when_the_source_ends_is_cancelled():
    a = market("0xa", T0, length=60)
    frames = scenario([a], until=T0 + 5)
    strategy = RecordingStrategy(buy_once_at(56.0))  # T0 + 4.0, due T0 + 5.0: after the last frame
    report = run_engine(strategy, frames, latency_ms=1000)
    assert report["trades"] == 0 and report["skipped_orders"]["cancelled_at_stop"] == 1
    assert [c for c in strategy.calls if c[0] in ("record", "end")][-2:] == [
        ("record", "0xa", 0.0), ("end", "0xa", 0.0)]


def test_negative_latency_is_refused():
    with pytest.raises(ValueError, match="latency_ms"):
        Engine(RecordingStrategy(always(Action.HOLD)), ScriptedSource([]), VirtualClock(),
               MarketData(assets=("BTC",)), EngineConfig(latency_ms=-1.0))


class TrackedRL(RLStrategy):
    """The PPO agent, counting per market the decisions it was asked for and the rewards it was given."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.asked: dict[str, int] = {}
        self.recorded: dict[str, int] = {}
        self.rewards = 0.0
        self.violations: list[str] = []

    def act_batch(self, states):
        for s in states:
            if self.asked.get(s.market_id, 0) != self.recorded.get(s.market_id, 0):
                self.violations.append(f"{s.market_id} asked again before its record")
            self.asked[s.market_id] = self.asked.get(s.market_id, 0) + 1
        return super().act_batch(states)

    def record(self, market_id, reward):
        self.recorded[market_id] = self.recorded.get(market_id, 0) + 1
        self.rewards += reward
        super().record(market_id, reward)

    def end_market(self, market_id, reward):
        if self.asked.get(market_id, 0) != self.recorded.get(market_id, 0):
            self.violations.append(f"{market_id} ended with a decision unrecorded")
        self.rewards += reward
        super().end_market(market_id, reward)


def test_rl_training_with_latency_gives_every_decision_its_reward_per_market():
    from sim.source import SimSource

    strategy = TrackedRL(seed=4)
    strategy.train()
    config = EngineConfig(assets=("BTC",), max_windows=2, log_dir=None, seed=4, train=True, latency_ms=700)
    engine = Engine(strategy, SimSource(4, assets=("BTC",), background=False), VirtualClock(),
                    MarketData(assets=("BTC",)), config)  # 700 ms: longer than a tick, markets skip ticks
    report = asyncio.run(engine.run())
    assert report["windows"] == 2 and report["trades"] > 0 and report["updates"] > 0
    assert strategy.violations == []
    assert strategy.asked == strategy.recorded and sum(strategy.asked.values()) == report["decisions"]
    assert strategy.rewards == pytest.approx(report["pnl"], abs=1e-6)  # every realized dollar reached the agent
    assert not strategy.buffer.pending and not strategy.buffer.open  # every trajectory ended terminal


def test_real_time_loop_wakes_for_a_fill_between_ticks():
    clock = RealClock(speed=1.0, sim_origin=T0 + 0.4)
    a = market("0xa", T0, length=60)

    class QuietSource:
        virtual = False

        async def frames(self):
            now = clock.now()
            for frame in (Frame(now, "discovery", json.dumps([a])), book_frame(now, a), trade_frame(now),
                          chainlink_frame(now, now, 100.0)):
                yield frame
            await asyncio.sleep(3600)  # then silence: only the loop's own timers wake it

    class ClockedBroker(PaperBroker):
        """The paper broker, noting the clock time each order reaches it."""

        def __init__(self) -> None:
            super().__init__()
            self.reached: list[float] = []

        def execute(self, *args):
            self.reached.append(clock.now())
            return super().execute(*args)

    broker = ClockedBroker()
    engine = Engine(RecordingStrategy(buy_once_at(59.5)), QuietSource(), clock, MarketData(assets=("BTC",)),
                    EngineConfig(assets=("BTC",), log_dir=None, duration=1.5, stale_book_seconds=1e9,
                                 stale_futures_seconds=1e9, latency_ms=200), broker=broker)
    asyncio.run(engine.run())
    # decided at the tick T0 + 0.5, due at T0 + 0.7: well before the next tick at T0 + 1.0
    assert len(broker.reached) == 1
    assert T0 + 0.7 <= broker.reached[0] < T0 + 0.9
