"""Engine: ticks, settlement, per-market bookkeeping across a window roll, stale guard, CSV logs, stop,
determinism. Scripted sources send real venue frame shapes through the real MarketData; windows are
shortened to a few seconds (the engine reads each market's own start/end)."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.broker import taker_fee
from engine.clock import RealClock, VirtualClock
from engine.engine import Engine, EngineConfig
from engine.positions import Position
from engine.state_builder import IndexVol, build_state
from sim.source import SimSource
from strategies import create_strategy
from strategies.base import Action, MarketState, Strategy
from streamers.frames import Frame
from streamers.market_data import MarketData

T0 = 1_767_225_600  # a window-aligned unix time
BUY_FEE = taker_fee(10, 0.50, 0.07)  # --size 10 (run_engine): $5 at 0.50: 10 shares delivered, 10 x 0.07 x 0.25 = $0.175 on top
WON = 10.0 - 5.0 - BUY_FEE  # those 10 shares settled at 1


def market(cid: str, start: float, length: float = 10.0, ptb: float | None = 100.0) -> dict:
    return {"asset": "BTC", "condition_id": cid, "token_up": f"{cid}-up", "token_down": f"{cid}-down",
            "start": int(start), "end": int(start + length), "price_to_beat": ptb, "tick_size": 0.01,
            "min_size": 5, "fee_rate": 0.07}


def book_frame(t: float, m: dict) -> Frame:
    side = {"bids": [{"price": ".49", "size": "100"}], "asks": [{"price": ".50", "size": "100"}]}
    events = [{"event_type": "book", "asset_id": m[k], "market": m["condition_id"], **side,
               "timestamp": str(int(t * 1000)), "hash": "0x0"} for k in ("token_up", "token_down")]
    return Frame(t, "polymarket_market", json.dumps(events))


def trade_frame(t: float, price: float = 100.0) -> Frame:
    data = {"e": "aggTrade", "E": int(t * 1000), "s": "BTCUSDT", "a": 1, "p": str(price), "q": "0.5",
            "f": 1, "l": 1, "T": int(t * 1000), "m": False}
    return Frame(t, "binance_futures_market", json.dumps({"stream": "btcusdt@aggTrade", "data": data}))


def chainlink_frame(t: float, source_ts: float, value: float) -> Frame:
    msg = {"topic": "crypto_prices_chainlink", "type": "update", "timestamp": int(t * 1000),
           "payload": {"symbol": "btc/usd", "timestamp": int(source_ts * 1000), "value": value}}
    return Frame(t, "polymarket_rtds", json.dumps(msg))


def resolved_frame(t: float, m: dict, winner: str) -> Frame:
    msg = {"event_type": "market_resolved", "id": "1", "market": m["condition_id"],
           "assets_ids": [m["token_up"], m["token_down"]],
           "winning_asset_id": m["token_up" if winner == "Up" else "token_down"],
           "winning_outcome": winner, "timestamp": str(int(t * 1000))}
    return Frame(t, "polymarket_market", json.dumps(msg))


def scenario(markets: list[dict], until: float, futures_until: float = math.inf,
             chainlink_until: float = math.inf, extra: tuple[Frame, ...] = ()) -> list[Frame]:
    """Discovery one second before T0, then every 0.5 s: books, a futures trade, a Chainlink price."""
    frames = [Frame(T0 - 1.0, "discovery", json.dumps(markets))]
    t = T0 - 0.75
    while t < until:
        frames += [book_frame(t, m) for m in markets]
        if t <= futures_until:
            frames.append(trade_frame(t))
        if t <= chainlink_until:
            frames.append(chainlink_frame(t, math.floor(t), 100.0))
        t += 0.5
    frames += extra
    return sorted(frames, key=lambda f: f.t)


class ScriptedSource:
    def __init__(self, frames: list[Frame], virtual: bool = True) -> None:
        self.virtual = virtual
        self._frames = frames

    async def frames(self):
        for frame in self._frames:
            yield frame

    async def close(self) -> None:
        pass


class RecordingStrategy(Strategy):
    """Plays a plan and records every call the engine makes (the engine is under test, not this)."""

    name = "recording"

    def __init__(self, plan: Callable[[MarketState], Action], updates: list[dict] | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.calls: list[tuple] = []
        self._updates = list(updates or [])

    def act_batch(self, states):
        self.calls.append(("act", tuple((s.market_id, s.seconds_left) for s in states)))
        return [self.plan(s) for s in states]

    def record(self, market_id, reward):
        self.calls.append(("record", market_id, reward))

    def end_market(self, market_id, reward):
        self.calls.append(("end", market_id, reward))

    def pop_updates(self):
        out, self._updates = self._updates, []
        return out


def always(action: Action) -> Callable[[MarketState], Action]:
    return lambda state: action


def run_engine(strategy: Strategy, frames: list[Frame], tmp_path: Path | None = None, **cfg) -> dict:
    config = EngineConfig(**{"assets": ("BTC",), "log_dir": tmp_path, "run_id": "t", "seed": 1, "size": 10.0, **cfg})
    engine = Engine(strategy, ScriptedSource(frames), VirtualClock(), MarketData(assets=("BTC",)), config)
    return asyncio.run(engine.run())


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_window_roll_keeps_per_market_transitions_and_loses_no_tick():
    a, b = market("0xa", T0), market("0xb", T0 + 10, ptb=None)
    strategy = RecordingStrategy(always(Action.BUY))
    report = run_engine(strategy, scenario([a, b], until=T0 + 22))
    acts = [c[1] for c in strategy.calls if c[0] == "act"]
    a_seconds = [left for batch in acts for cid, left in batch if cid == "0xa"]
    b_seconds = [left for batch in acts for cid, left in batch if cid == "0xb"]
    assert a_seconds == [10.0 - 0.5 * i for i in range(20)]  # every tick of window A
    assert b_seconds[0] == 10.0  # B trades from the very tick A ends
    records_a = [c[2] for c in strategy.calls if c[0] == "record" and c[1] == "0xa"]
    assert len(records_a) == 20 and all(r == 0.0 for r in records_a)  # held, never closed
    ends = [c for c in strategy.calls if c[0] == "end"]
    # Chainlink at the end equals the open: a tie, so Up wins and the UP shares pay 1
    assert ends[0] == ("end", "0xa", pytest.approx(WON))
    assert ends[1] == ("end", "0xb", pytest.approx(WON))  # price_to_beat from Chainlink
    end_a = strategy.calls.index(ends[0])
    assert all("0xa" not in [cid for cid, _ in c[1]] for c in strategy.calls[end_a:] if c[0] == "act")
    assert report["windows"] == 2 and report["trades"] == 2 and report["wins"] == 2
    assert report["decisions"] == len(a_seconds) + len(b_seconds)


def test_a_frame_stamped_exactly_on_a_tick_is_applied_before_that_tick():
    a = market("0xa", T0)
    frames = [f for f in scenario([a], until=T0 + 12) if not (f.feed == "polymarket_market" and f.t < T0)]
    frames = sorted([*frames, book_frame(float(T0), a)], key=lambda f: f.t)
    strategy = RecordingStrategy(always(Action.HOLD))
    run_engine(strategy, frames)
    first_act = next(c for c in strategy.calls if c[0] == "act")
    assert first_act[1] == (("0xa", 10.0),)  # the tick at T0 saw the book that arrived at T0


def test_venue_resolution_overrides_the_chainlink_estimate():
    a = market("0xa", T0)
    frames = scenario([a], until=T0 + 12, extra=(resolved_frame(T0 + 10.1, a, "Down"),))
    strategy = RecordingStrategy(always(Action.BUY))
    report = run_engine(strategy, frames)
    lost = -5.0 - BUY_FEE  # the UP shares pay 0; the buy fee was paid on top
    assert [c for c in strategy.calls if c[0] == "end"] == [("end", "0xa", pytest.approx(lost))]
    assert report["pnl"] == pytest.approx(lost) and report["wins"] == 0


def test_chainlink_below_the_open_resolves_down():
    a = market("0xa", T0, ptb=100.5)
    strategy = RecordingStrategy(always(Action.SELL))
    report = run_engine(strategy, scenario([a], until=T0 + 12))
    assert report["pnl"] == pytest.approx(WON)  # long DOWN wins


def test_mid_fill_mode_trades_at_the_mid_without_fees_and_says_so():
    a = market("0xa", T0)
    report = run_engine(RecordingStrategy(always(Action.BUY)), scenario([a], until=T0 + 12), fill="mid")
    assert report["fill"] == "mid" and report["fees"] == 0.0
    assert report["pnl"] == pytest.approx(5.0 / 0.495 - 5.0)  # mid of 0.49/0.50, settled at 1


def test_every_frame_is_recorded_in_arrival_order():
    class ListRecorder:
        def __init__(self) -> None:
            self.frames: list[Frame] = []

        def write(self, frame: Frame) -> None:
            self.frames.append(frame)

    frames = scenario([market("0xa", T0)], until=T0 + 12)
    recorder = ListRecorder()
    run_engine(RecordingStrategy(always(Action.HOLD)), frames, recorder=recorder)
    assert recorder.frames == frames


def test_stale_futures_feed_holds_the_market_out_of_the_batch():
    a = market("0xa", T0)
    strategy = RecordingStrategy(always(Action.HOLD))
    report = run_engine(strategy, scenario([a], until=T0 + 12, futures_until=T0 + 3.25),
                           stale_futures_seconds=2.0)
    acted = [left for c in strategy.calls if c[0] == "act" for _, left in c[1]]
    assert acted == [10.0 - 0.5 * i for i in range(11)]  # T0 .. T0+5: the last trade is 2 s old at 5.25
    assert report["feed"]["stale_seconds"] == pytest.approx(9 * 0.5)
    assert sum(1 for c in strategy.calls if c[0] == "record") == 11


def test_market_without_an_up_book_is_not_traded():
    a = market("0xa", T0)
    frames = [f for f in scenario([a], until=T0 + 12) if not f.msg.startswith('[{"event_type": "book"')]
    strategy = RecordingStrategy(always(Action.BUY))
    report = run_engine(strategy, frames)
    assert not [c for c in strategy.calls if c[0] == "act"]
    assert report["trades"] == 0 and report["feed"]["stale_seconds"] == pytest.approx(10.0)


def test_a_book_without_a_snapshot_is_not_traded_until_one_arrives():
    a = market("0xa", T0)
    change = {"event_type": "price_change", "market": "0xa", "timestamp": str(T0 * 1000),
              "price_changes": [{"asset_id": a["token_up"], "price": "0.5", "size": "100", "side": "SELL",
                                 "hash": "0x1", "best_bid": "0", "best_ask": "0.5"}]}
    frames = [f for f in scenario([a], until=T0 + 12) if not (f.feed == "polymarket_market" and f.t < T0 + 3)]
    frames = sorted([*frames, Frame(T0 - 0.5, "polymarket_market", json.dumps(change))], key=lambda f: f.t)
    strategy = RecordingStrategy(always(Action.HOLD))
    run_engine(strategy, frames)
    first_act = next(c for c in strategy.calls if c[0] == "act")
    assert first_act[1] == (("0xa", 6.5),)  # the first snapshot came at T0+3.25


def test_unresolved_market_is_closed_at_the_book_after_the_grace_period():
    a = market("0xa", T0)
    strategy = RecordingStrategy(always(Action.BUY))
    report = run_engine(strategy, scenario([a], until=T0 + 16, chainlink_until=T0 + 8),
                                settle_grace_seconds=3.0)
    assert report["unresolved_closes"] == 1 and report["trades"] == 1
    expected = 10 * 0.49 - taker_fee(10, 0.49, 0.07) - 5.0 - BUY_FEE
    assert report["pnl"] == pytest.approx(expected)
    assert [c[0] for c in strategy.calls].count("end") == 1


def test_csv_logs_of_a_short_scripted_run(tmp_path):
    a = market("0xa", T0)

    def plan(state: MarketState) -> Action:
        return {10.0: Action.BUY, 8.0: Action.SELL, 6.0: Action.SELL}.get(state.seconds_left, Action.HOLD)

    update = {"update_num": 1, "policy_loss": -0.05, "value_loss": 1.5, "entropy": 0.69, "approx_kl": 0.01,
              "clip_fraction": 0.1, "explained_variance": 0.2, "buffer_avg_reward": 0.3, "buffer_win_rate": 0.5}
    checkpoints = []
    strategy = RecordingStrategy(plan, updates=[update])
    report = run_engine(strategy, scenario([a], until=T0 + 12), tmp_path,
                                checkpoint_every=1, on_checkpoint=lambda: checkpoints.append(1))
    trades = read_csv(report["logs"]["trades"])
    assert [t["exit_reason"] for t in trades] == ["close", "settle"]
    close, settled = trades
    close_fee = BUY_FEE + taker_fee(10, 0.49, 0.07)
    assert close["timestamp"] == "2026-01-01T00:00:02.300000+00:00"  # decided at T0 + 2, filled 300 ms later
    assert (close["action"], close["side"]) == ("BUY", "UP")
    assert float(close["entry_price"]) == pytest.approx(0.50) and float(close["exit_price"]) == pytest.approx(0.49)
    assert float(close["pnl"]) == pytest.approx(10 * 0.49 - close_fee - 5.0, abs=1e-6)
    assert float(close["size"]) == pytest.approx(5.0) and float(close["shares"]) == pytest.approx(10.0)
    assert float(close["fee"]) == pytest.approx(close_fee, abs=1e-6)
    assert float(close["duration"]) == pytest.approx(2.0)
    assert float(close["time_remaining_at_entry"]) == pytest.approx(9.7)  # filled at T0 + 0.3
    assert (settled["action"], settled["side"]) == ("SELL", "DOWN")
    assert float(settled["pnl"]) == pytest.approx(-5.0 - BUY_FEE) and float(settled["exit_price"]) == 0.0
    assert float(settled["underlying_change"]) == pytest.approx(0.0)
    episodes = read_csv(report["logs"]["episodes"])
    assert len(episodes) == 1
    ep = episodes[0]
    assert (ep["window_start"], ep["outcome"], ep["trades"]) == ("2026-01-01T00:00:00+00:00", "Up", "2")
    assert float(ep["pnl"]) == pytest.approx(report["pnl"], abs=1e-5)
    assert float(ep["exposure"]) == pytest.approx(10.0)
    updates = read_csv(report["logs"]["updates"])
    assert len(updates) == 1 and updates[0]["update_num"] == "1" and updates[0]["entropy"] == "0.69"
    assert updates[0]["cumulative_trades"] == "0"  # the update ran on the first tick, before any trade
    assert checkpoints == [1] and report["updates"] == 1
    assert report["trades"] == 2 and report["pnl"] == pytest.approx(sum(float(t["pnl"]) for t in trades), abs=1e-5)


def test_stop_from_a_signal_closes_open_positions_promptly(tmp_path):
    start = time.time()
    a = market("0xa", math.floor(start) - 5, length=900)
    clock = RealClock(speed=1.0)

    class LiveLike:
        virtual = False

        async def frames(self):
            yield Frame(clock.now(), "discovery", json.dumps([a]))
            while True:  # a live feed that keeps talking
                now = clock.now()
                yield book_frame(now, a)
                yield trade_frame(now)
                yield chainlink_frame(now, now, 100.0)
                await asyncio.sleep(0.05)

        async def close(self):
            pass

    strategy = RecordingStrategy(always(Action.BUY))
    engine = Engine(strategy, LiveLike(), clock, MarketData(assets=("BTC",)),
                    EngineConfig(assets=("BTC",), log_dir=tmp_path, run_id="s"))

    async def main():
        task = asyncio.create_task(engine.run())
        await asyncio.sleep(1.3)
        engine.stop()
        stopped = time.perf_counter()
        report = await asyncio.wait_for(task, timeout=5.0)
        return report, time.perf_counter() - stopped

    report, took = asyncio.run(main())
    assert took < 1.0
    assert report["decisions"] >= 1 and report["shutdown_closes"] == 1
    assert [t["exit_reason"] for t in read_csv(report["logs"]["trades"])] == ["shutdown"]
    assert [c[0] for c in strategy.calls].count("end") == 1


def test_real_time_ticks_happen_when_no_frame_arrives():
    clock = RealClock(speed=10.0, sim_origin=T0 + 0.9)
    a = market("0xa", T0, length=60)

    class QuietSource:
        virtual = False

        async def frames(self):
            now = clock.now()
            for frame in (Frame(now, "discovery", json.dumps([a])), book_frame(now, a), trade_frame(now),
                          chainlink_frame(now, now, 100.0)):
                yield frame
            await asyncio.sleep(3600)  # then silence

        async def close(self):
            pass

    strategy = RecordingStrategy(always(Action.HOLD))
    engine = Engine(strategy, QuietSource(), clock, MarketData(assets=("BTC",)),
                    EngineConfig(assets=("BTC",), log_dir=None, duration=5.0, stale_book_seconds=1e9,
                                 stale_futures_seconds=1e9))
    wall = time.perf_counter()
    report = asyncio.run(engine.run())
    assert time.perf_counter() - wall < 3.0
    assert report["decisions"] >= 6  # about ten ticks in 5 s of clock time, no frame after the first


def sim_run(tmp_path: Path, run_id: str) -> dict:
    config = EngineConfig(assets=("BTC", "ETH"), max_windows=1, log_dir=tmp_path, run_id=run_id, seed=3)
    engine = Engine(create_strategy("fair_value", seed=3), SimSource(3, assets=("BTC", "ETH")),
                    VirtualClock(), MarketData(assets=("BTC", "ETH")), config)
    return asyncio.run(engine.run())


def test_seeded_sim_runs_are_identical_and_logs_add_up_to_the_report(tmp_path):
    first, second = sim_run(tmp_path, "one"), sim_run(tmp_path, "two")
    wall = ("wall_seconds", "decisions_per_second", "logs")
    assert {k: v for k, v in first.items() if k not in wall} == {k: v for k, v in second.items() if k not in wall}
    for kind in ("trades", "episodes", "updates"):
        assert Path(first["logs"][kind]).read_text() == Path(second["logs"][kind]).read_text()

    assert first["windows"] == 1 and first["decisions"] > 0 and first["trades"] > 0
    trades = read_csv(first["logs"]["trades"])
    assert len(trades) == first["trades"]
    assert sum(float(t["pnl"]) for t in trades) == pytest.approx(first["pnl"], abs=1e-4)
    assert sum(float(t["pnl"]) > 0 for t in trades) == first["wins"]
    assert sum(float(t["fee"]) for t in trades) == pytest.approx(first["fees"], abs=1e-4)
    for asset in ("BTC", "ETH"):
        rows = [float(t["pnl"]) for t in trades if t["asset"] == asset]
        assert sum(rows) == pytest.approx(first["pnl_by_asset"][asset], abs=1e-4)
    episodes = read_csv(first["logs"]["episodes"])
    assert sum(float(e["pnl"]) for e in episodes) == pytest.approx(first["pnl"], abs=1e-4)
    assert sum(int(e["trades"]) for e in episodes) == first["trades"]
    settled = [e for e in episodes if e["outcome"] in ("Up", "Down")]
    assert len(settled) == 2  # one window of two assets resolved
    assert first["feed"]["messages"] > 1000 and first["feed"]["rejected"] == 0


def test_state_builder_fills_book_position_and_index_context():
    a = market("0xa", T0)
    md = MarketData(assets=("BTC",))
    for frame in scenario([a], until=T0 + 1):
        md.handle(frame)
    up, down = md.book(a["token_up"]), md.book(a["token_down"])
    info = md.markets["0xa"]
    probs = deque([0.40, 0.50, 0.60], maxlen=30)
    held = Position(market_id="0xa", asset="BTC", side="DOWN", token_id=a["token_down"], shares=10.0,
                    cost=4.0, entry_fee=0.0, entry_price=0.4, entry_time=T0, time_remaining_at_entry=10.0,
                    prob_at_entry=0.5)
    s = build_state(info, T0 + 4.0, up, down, md.futures("BTC"), index_price=101.0, price_to_beat=100.0,
                    index_vol=2e-4, position=held, prob=0.495, probs=probs)
    assert (s.prob, s.best_bid, s.best_ask, s.down_bid, s.down_ask) == (0.495, 0.49, 0.50, 0.49, 0.50)
    assert s.spread == pytest.approx(0.01) and s.order_book_imbalance_l1 == 0.0
    assert s.vol_5m == pytest.approx(math.sqrt(2 / 3) * 0.1)  # population std of 0.4, 0.5, 0.6
    assert s.prob_history == (0.40, 0.50, 0.60)
    assert (s.has_position, s.position_side) == (1.0, -1.0)
    assert s.position_pnl == pytest.approx(10 * 0.495 - 4.0)  # DOWN valued at its own mid
    assert s.seconds_left == pytest.approx(6.0) and s.time_remaining == pytest.approx(6.0 / 900)
    assert (s.index_price, s.price_to_beat, s.index_vol, s.fee_rate) == (101.0, 100.0, 2e-4, 0.07)
    assert s.market_id == "0xa" and s.asset == "BTC"


def test_index_vol_is_realized_volatility_per_sqrt_second():
    vol = IndexVol(tick_seconds=0.5)
    price = 100.0
    for i in range(100):
        vol.sample(price)
        if i == 10:
            assert vol.per_sqrt_second == 0.0  # too few samples yet
        price *= math.exp(0.001 if i % 2 else -0.001)
    assert vol.per_sqrt_second == pytest.approx(0.001 / math.sqrt(0.5))
