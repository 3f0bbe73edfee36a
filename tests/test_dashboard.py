"""What a user watches: the engine's snapshot (progress, equity, trades, learning, fair value), the rich
dashboard drawn from it at 100 x 30 and at 80 columns, and the `--no-tui` line per resolved window."""

from __future__ import annotations

import asyncio
import math

import pytest
from rich.console import Console

from engine.clock import VirtualClock
from engine.dashboard import render, stats_line, window_line
from engine.engine import Engine, EngineConfig
from engine.progress import Series, run_progress
from strategies.base import Action, MarketState
from streamers.market_data import MarketData
from tests.test_engine import T0, RecordingStrategy, ScriptedSource, market, read_csv, scenario

UPDATES = [
    {"update_num": n, "policy_loss": -0.01, "value_loss": 1.0 / n, "entropy": 1.09 - 0.1 * n, "approx_kl": 0.01,
     "clip_fraction": 0.1, "explained_variance": 0.1 * n, "buffer_avg_reward": 0.0, "buffer_win_rate": 0.5}
    for n in (1, 2, 3)
]


def flip_flop(state: MarketState) -> Action:
    """Open at 10 s left, close at 8 s, open the other side at 6 s (settled at the window's end)."""
    return {10.0: Action.BUY, 8.0: Action.SELL, 6.0: Action.SELL}.get(state.seconds_left, Action.HOLD)


def two_window_run(tmp_path, train: bool = True) -> tuple[list[dict], dict, Engine]:
    """Two 10-second BTC windows back to back; returns the snapshots handed to on_window and the report."""
    a, b = market("0xa", T0), market("0xb", T0 + 10)
    seen: list[dict] = []
    strategy = RecordingStrategy(flip_flop, updates=UPDATES)
    cfg = EngineConfig(assets=("BTC",), log_dir=tmp_path, run_id="t", seed=1, max_windows=2, train=train,
                       strategy_name="rl", source_name="sim", on_window=seen.append)
    engine = Engine(strategy, ScriptedSource(scenario([a, b], until=T0 + 30)), VirtualClock(),
                    MarketData(assets=("BTC",)), cfg)
    report = asyncio.run(engine.run())
    return seen, report, engine


def screen(snap: dict, width: int, height: int = 30) -> list[str]:
    console = Console(record=True, width=width, height=height, color_system=None)
    console.print(render(snap, width, height))
    return console.export_text().rstrip("\n").split("\n")


def busy_snapshot() -> dict:
    """A long run's snapshot with large numbers everywhere: what must still fit."""
    markets = [{"asset": a, "start": T0, "seconds_left": 421.0, "window_seconds": 900.0, "fair": 0.612,
                "index_change": -0.00123, "mid": 0.555, "bid": 0.55, "ask": 0.56, "side": "DOWN", "entry": 0.445,
                "unrealized": -123.45} for a in ("BTC", "ETH", "SOL", "XRP")]
    trades = [{"time": T0 + i, "asset": "XRP", "side": "UP", "entry": 0.512, "exit": 0.498, "pnl": -1234.56,
               "reason": "unresolved"} for i in range(8)]
    return {
        "clock": T0 + 86_400.0, "started": True, "strategy": "fair_value", "source": "replay", "training": True,
        "assets": ("BTC", "ETH", "SOL", "XRP"), "pnl": -123_456.78, "fees": 98_765.43, "trades": 1_234_567,
        "win_rate": 0.4321, "windows": 96, "decisions_per_second": 12_345.6, "updates": 98_765,
        "markets": markets, "recent_trades": trades,
        "last_update": {**UPDATES[2], "update_num": 98_765},
        "progress": run_progress(windows=96, max_windows=1000, duration=None, started_at=T0, now=T0 + 86_400.0,
                                 current_window=(T0 + 86_400.0, T0 + 87_300.0), wall_seconds=36_000.0),
        "equity": [-(i ** 1.5) for i in range(128)],
        "learning": {"entropy": [1.0 - i / 200 for i in range(128)], "explained_variance": [math.sin(i / 9)
                                                                                           for i in range(128)]},
    }


def test_series_keeps_a_whole_long_run_in_a_bounded_number_of_points():
    series = Series(64)
    for i in range(100_000):
        series.append(float(i))
    values = series.values()
    assert 32 <= len(values) <= 64
    assert values[0] < 100_000 * 0.05 and values[-1] > 100_000 * 0.9  # the start and the end are both there
    assert values == sorted(values)


def test_progress_of_a_markets_run_estimates_the_end_from_the_current_window():
    half = run_progress(windows=1, max_windows=4, duration=None, started_at=0.0, now=1350.0,
                        current_window=(900.0, 1800.0), wall_seconds=30.0)
    assert half["fraction"] == pytest.approx(1350.0 / 3600.0)
    assert half["eta_seconds"] == pytest.approx(30.0 * (1 - 0.375) / 0.375)
    by_duration = run_progress(windows=0, max_windows=None, duration=600.0, started_at=100.0, now=250.0,
                               current_window=None, wall_seconds=10.0)
    assert by_duration["fraction"] == pytest.approx(0.25) and by_duration["eta_seconds"] == pytest.approx(30.0)
    open_ended = run_progress(windows=3, max_windows=None, duration=None, started_at=0.0, now=5.0,
                              current_window=None, wall_seconds=1.0)
    assert open_ended["fraction"] is None and open_ended["eta_seconds"] is None


def test_each_resolved_window_hands_a_snapshot_with_progress_trades_equity_and_learning(tmp_path):
    seen, report, _ = two_window_run(tmp_path)
    assert [s["progress"]["windows"] for s in seen] == [1, 2]
    first, last = seen
    assert first["progress"]["max_windows"] == 2
    assert 0.3 < first["progress"]["fraction"] < 0.8 and first["progress"]["eta_seconds"] > 0
    assert last["progress"]["fraction"] == 1.0 and last["progress"]["eta_seconds"] == 0.0
    trades = read_csv(report["logs"]["trades"])
    assert [round(t["pnl"], 6) for t in last["recent_trades"]] == [round(float(t["pnl"]), 6) for t in trades]
    assert [t["reason"] for t in last["recent_trades"]] == [t["exit_reason"] for t in trades]
    assert last["equity"][-1] == pytest.approx(last["pnl"]) and len(last["equity"]) == len(trades)
    assert last["learning"]["entropy"] == pytest.approx([u["entropy"] for u in UPDATES])
    assert last["learning"]["explained_variance"] == pytest.approx([u["explained_variance"] for u in UPDATES])
    assert last["training"] is True and last["started"] is True


def test_snapshot_shows_each_markets_fair_value_beside_its_quotes(tmp_path):
    seen, _, _ = two_window_run(tmp_path)
    (btc,) = [m for m in seen[0]["markets"] if m["start"] == T0 + 10]
    # the scripted index sits on the price to beat: the digital is worth one half, the UP mid 0.495
    assert btc["fair"] == pytest.approx(0.5) and btc["index_change"] == pytest.approx(0.0)
    assert (btc["bid"], btc["ask"], btc["mid"]) == (pytest.approx(0.49), pytest.approx(0.50), pytest.approx(0.495))
    assert btc["window_seconds"] == 10


def test_before_the_first_frame_the_dashboard_waits_for_data_not_1970(tmp_path):
    engine = Engine(RecordingStrategy(flip_flop), ScriptedSource([]), VirtualClock(), MarketData(assets=("BTC",)),
                    EngineConfig(assets=("BTC",), log_dir=None, max_windows=3))
    snap = engine.snapshot()
    assert snap["started"] is False
    text = "\n".join(screen(snap, 100))
    assert "waiting for data" in text and "1970" not in text


@pytest.mark.parametrize("width", [100, 80])
def test_a_busy_dashboard_fits_the_screen_without_wrapping_or_cropping(width):
    lines = screen(busy_snapshot(), width)
    assert len(lines) <= 29  # rich.live needs one spare line to redraw in place
    assert all(len(line) <= width for line in lines)
    assert not any("…" in line for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    for needle in ("$-123,456.78", "max DD $123,456.78", "1,234,567", "windows done 96/1000", "ETA", "0.612",
                   "+5.7¢", "PPO update 98765", "XRP   UP    0.512 → 0.498   $-1,234.56"):
        assert needle in text, needle
    rows = [line for line in lines if line.startswith("│ SOL")]
    assert len(rows) == 1 and "0.445" in rows[0] and "-123.45" in rows[0]


def test_dashboard_height_stays_fixed_as_markets_roll_and_trades_arrive(tmp_path):
    seen, _, engine = two_window_run(tmp_path)
    heights = {len(screen(s, 100)) for s in [*seen, engine.snapshot()]}
    empty = Engine(RecordingStrategy(flip_flop), ScriptedSource([]), VirtualClock(), MarketData(assets=("BTC",)),
                   EngineConfig(assets=("BTC",), log_dir=None)).snapshot()
    heights.add(len(screen(empty, 100)))
    assert len(heights) == 1


def test_dashboard_shortens_the_trade_list_rather_than_overflow_a_short_terminal():
    lines = screen(busy_snapshot(), 100, height=22)
    assert len(lines) == 21 and "last trades" in "\n".join(lines)
    lines = screen(busy_snapshot(), 100, height=19)
    assert len(lines) <= 18 and "last trades" not in "\n".join(lines)


def test_stats_line_fits_80_columns_for_a_long_busy_run():
    assert len(stats_line(busy_snapshot()).plain) <= 80


def test_window_line_says_how_far_the_run_is_with_pnl_trades_speed_and_the_last_update(tmp_path):
    seen, _, _ = two_window_run(tmp_path)
    line = window_line(seen[0])
    assert line.startswith("window 1/2  PnL $")
    assert f"trades {seen[0]['trades']}" in line and "dec/s" in line and "ETA" in line
    assert "entropy 0.790  EV +0.30" in line
    assert window_line(seen[1]).startswith("window 2/2") and "ETA" not in window_line(seen[1])


def test_window_line_of_a_run_that_does_not_train_leaves_out_the_learning(tmp_path):
    seen, _, _ = two_window_run(tmp_path, train=False)
    assert "entropy" not in window_line(seen[0])
