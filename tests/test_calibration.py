"""The calibration tool reads any recording: hand-built recordings with hand-computed figures, and a simulator
recording end to end."""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist

import orjson
import pytest

from benchmarks import calibration
from streamers.frames import (
    FEED_DISCOVERY,
    FEED_FUTURES_MARKET,
    FEED_POLYMARKET,
    FEED_RTDS,
    Frame,
    MarketInfo,
)
from streamers.recording import Recorder
from streamers.recording_stats import market_arrays, read_recording
from tests.conftest import call_main, run_cli

T = 1_767_225_600  # a window start


def _json(obj: object) -> str:
    return orjson.dumps(obj).decode()


def _market(asset: str, start: int, strike: float | None) -> MarketInfo:
    key = f"{asset.lower()}{start}"
    return MarketInfo(asset, f"0x{key}", f"{key}up", f"{key}down", start, start + 900, strike, 0.01, 5.0, 0.07)


def _discovery(t: float, *markets: MarketInfo) -> Frame:
    return Frame(t, FEED_DISCOVERY, _json([m.to_dict() for m in markets]))


def _book(t: float, m: MarketInfo, bid: float, ask: float, bid_size: str = "100", ask_size: str = "50") -> Frame:
    return Frame(t, FEED_POLYMARKET, _json({
        "event_type": "book", "asset_id": m.token_up, "market": m.condition_id,
        "bids": [{"price": repr(bid), "size": bid_size}], "asks": [{"price": repr(ask), "size": ask_size}],
        "timestamp": str(int(t * 1000)), "hash": "0x0",
    }))  # fmt: skip


def _chainlink(t: float, asset: str, ts: int, value: float) -> Frame:
    return Frame(t, FEED_RTDS, _json({
        "topic": "crypto_prices_chainlink", "type": "update", "timestamp": int(t * 1000),
        "payload": {"symbol": f"{asset.lower()}/usd", "timestamp": ts * 1000, "value": value},
    }))  # fmt: skip


def _resolved(t: float, m: MarketInfo, up: bool) -> Frame:
    return Frame(t, FEED_POLYMARKET, _json({
        "event_type": "market_resolved", "id": "1", "market": m.condition_id, "slug": "s",
        "assets_ids": [m.token_up, m.token_down], "outcomes": ["Up", "Down"],
        "winning_asset_id": m.token_up if up else m.token_down, "winning_outcome": "Up" if up else "Down",
        "timestamp": str(int(t * 1000)),
    }))  # fmt: skip


def _agg_trade(t: float, asset: str, price: float) -> Frame:
    sym = f"{asset.lower()}usdt"
    return Frame(t, FEED_FUTURES_MARKET, _json({"stream": f"{sym}@aggTrade", "data": {
        "e": "aggTrade", "E": int(t * 1000), "s": sym.upper(), "a": 1, "p": repr(price), "q": "0.5",
        "f": 1, "l": 1, "T": int(t * 1000), "m": False}}))  # fmt: skip


def _write(path: Path, frames: list[Frame]) -> str:
    with Recorder(str(path)) as rec:
        for frame in sorted(frames, key=lambda f: f.t):
            rec.write(frame)
    return str(path)


# ---------------------------------------------------------------------------------------------- the table

M1 = _market("BTC", T, 100000.0)  # resolved Up by market_resolved
M2 = _market("ETH", T, None)  # price to beat only from Chainlink; Down by Chainlink at the end
M4 = _market("SOL", T, 150.0)  # Chainlink at the end equals the strike: Up wins ties
M6 = _market("XRP", T, 2.0)  # no book, no Chainlink, no resolution: counted, not used
M5_UNPRICED = _market("BTC", T + 900, None)
M5 = _market("BTC", T + 900, 100100.0)  # resolved Down


def _table_recording(path: Path) -> str:
    price_change = Frame(T + 299.5, FEED_POLYMARKET, _json({
        "event_type": "price_change", "market": M1.condition_id, "timestamp": str((T + 299) * 1000),
        "price_changes": [{"asset_id": M1.token_up, "price": "0.50", "size": "80", "side": "BUY",
                           "hash": "h", "best_bid": "0.50", "best_ask": "0.51"}],
    }))  # fmt: skip
    return _write(path, [
        _discovery(T - 60, M1, M2, M4, M6),
        _book(T - 10, M1, 0.49, 0.51),
        _book(T - 5, M2, 0.30, 0.34),
        _book(T - 5, M4, 0.60, 0.61),
        _chainlink(T + 0.4, "BTC", T, 100000.0),
        _chainlink(T + 0.4, "ETH", T, 3000.0),
        _chainlink(T + 0.4, "SOL", T, 150.0),
        price_change,
        _book(T + 599.5, M1, 0.70, 0.71),
        _discovery(T + 840, M1, M2, M4, M6, M5_UNPRICED),
        _book(T + 840.2, M2, 0.10, 0.11),
        _book(T + 895, M5, 0.55, 0.56),
        _chainlink(T + 900.3, "BTC", T + 900, 100100.0),
        _chainlink(T + 900.3, "ETH", T + 900, 2990.0),
        _chainlink(T + 900.3, "SOL", T + 900, 150.0),
        _discovery(T + 900.4, M1, M2, M4, M6, M5),
        _resolved(T + 900.6, M1, up=True),
        _chainlink(T + 901.3, "BTC", T + 901, 100200.0),
        _chainlink(T + 1800.3, "BTC", T + 1800, 99800.0),
        _resolved(T + 1800.6, M5, up=False),
    ])  # fmt: skip


def _cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert calibration.main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_hand_built_recording_gives_the_hand_computed_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _cli_json(capsys, "--recording", _table_recording(tmp_path / "hand.jsonl.gz"))
    fig = {k: v["value"] for k, v in out["recording"]["figures"].items()}
    n = {k: (v["n"], v["markets"]) for k, v in out["recording"]["figures"].items()}
    counts = out["recording"]["counts"]

    # Seconds sampled per market: M1, M2, M4 (window T) and M5 (window T+900) 900 each with a book; M6 none.
    # Spreads: M1 0.02 for 300 s then 0.01 for 600; M2 0.04 for 841 s (until T+840) then 0.01 for 59; M4, M5 0.01.
    # 0.01: 600 + 59 + 900 + 900 = 2459 of 3600 (CDF 0.683), 0.02: 300 (CDF 0.766), 0.04: 841 (CDF 1).
    assert (fig["spread_q10"], fig["spread_q50"], fig["spread_q90"], fig["spread_q99"]) == (0.01, 0.01, 0.04, 0.04)
    assert n["spread_q50"] == (3600, 4)
    # Steps: 899 per market with a book; changes: M1 0.50 -> 0.505 -> 0.705, M2 0.32 -> 0.105.
    assert fig["mid_change_share"] == pytest.approx(3 / (4 * 899))
    assert n["mid_change_share"] == (3596, 4)
    # sizes 0.005, 0.2, 0.215: CDF 1/3, 2/3, 1
    assert (fig["mid_change_q50"], fig["mid_change_q90"], fig["mid_change_q99"]) == (0.2, 0.215, 0.215)
    assert n["mid_change_q50"] == (3, 2)
    # |mid - 0.5| by seconds left (lo, hi]: 300, 300, 240 and 60 samples per market.
    # mids M1 0.5 / 0.505 / 0.705, M2 0.32 (0.105 in its last 59 s), M4 0.605, M5 0.555
    assert fig["abs_dev_600_900"] == pytest.approx((0.0 + 0.18 + 0.105 + 0.055) / 4)
    assert fig["abs_dev_300_600"] == pytest.approx((0.005 + 0.18 + 0.105 + 0.055) / 4)
    assert fig["abs_dev_60_300"] == pytest.approx((0.205 + 0.18 + 0.105 + 0.055) / 4)
    assert fig["abs_dev_0_60"] == pytest.approx((60 * 0.205 + (0.18 + 59 * 0.395) + 60 * 0.105 + 60 * 0.055) / 240)
    assert n["abs_dev_0_60"] == (240, 4)
    # outcomes: M1 Up (resolved), M2 Down (Chainlink 2990 < 3000), M4 Up (150 = 150, a tie), M5 Down (resolved)
    assert fig["brier_600_900"] == pytest.approx((0.5**2 + 0.32**2 + 0.395**2 + 0.555**2) / 4)
    assert fig["brier_300_600"] == pytest.approx((0.495**2 + 0.32**2 + 0.395**2 + 0.555**2) / 4)
    assert fig["brier_60_300"] == pytest.approx((0.295**2 + 0.32**2 + 0.395**2 + 0.555**2) / 4)
    m2_last = (0.32**2 + 59 * 0.105**2) / 60
    assert fig["brier_0_60"] == pytest.approx((0.295**2 + m2_last + 0.395**2 + 0.555**2) / 4)
    assert fig["up_share"] == 0.5 and n["up_share"] == (4, 4)
    # returns: BTC ln(100100/100000) and ln(99800/100100), std = half their distance; ETH and SOL one window each
    r1, r2 = math.log(100100 / 100000), math.log(99800 / 100100)
    assert fig["ret_std_BTC"] == pytest.approx(abs(r1 - r2) / 2) and n["ret_std_BTC"] == (2, 2)
    assert fig["ret_std_ETH"] == 0.0 and fig["ret_std_SOL"] == 0.0 and fig["ret_std_XRP"] is None
    # realized variance: only BTC's ticks at T+900 and T+901 are 5 s or less apart
    assert fig["ret_std_rv_BTC"] == pytest.approx(math.sqrt(math.log(100200 / 100100) ** 2 * 900))
    assert fig["ret_std_rv_ETH"] is None
    assert fig["excess_kurtosis"] is None  # fewer than 4 windows per asset
    # top sizes: bids 100 (80 for M1's middle 300 s), asks 50: 3600 x 50, 300 x 80, 3300 x 100
    assert (fig["depth_top_q10"], fig["depth_top_q50"], fig["depth_top_q90"]) == (50.0, 50.0, 100.0)
    assert fig["book_levels_q50"] == 1.0
    # No futures: S is the latest Chainlink price received, which moves only at T+901 (return a) and T+902 (b);
    # sigma over the trailing 600 s is 0 in the first window (no fair value there). In M5 (strike 100100) S is
    # 100200 from T+902: sigma = sqrt((a^2 + b^2) / 600) until T+1500, z(fair) = b / (sigma sqrt(tau)) for
    # tau = 898 .. 300, then |b| / sqrt(600) at T+1501 (z = sqrt(600 / 299)), then 0. The 600 ratios
    # z(fair) / z(mid) with z(mid) = Phi^-1(0.555): the median is between the 300th and 301st smallest z
    # (tau 599 and 598).
    a, b = math.log(100100 / 100000), math.log(100200 / 100100)
    c = b / math.sqrt((a * a + b * b) / 600)
    z_mid = NormalDist().inv_cdf(0.555)
    assert fig["vol_ratio"] == pytest.approx(c * (1 / math.sqrt(599) + 1 / math.sqrt(598)) / 2 / z_mid, rel=1e-9)
    assert n["vol_ratio"] == (600, 1)
    assert fig["lead_lag_rho_0"] is None  # the only fair value has a mid that never moves
    assert counts["markets"] == 5
    assert counts["samples"] == 4500 and counts["samples_without_two_sided_book"] == 900
    assert counts["strikes_from_chainlink"] == 1 and counts["markets_without_outcome"] == 1
    assert counts["outcomes_from_resolved"] == 2 and counts["outcomes_from_chainlink"] == 2
    assert counts.get("outcomes_disagreeing_with_chainlink", 0) == 0 and counts["rejected"] == 0


def test_table_prints_each_figure_with_what_is_behind_it_and_the_real_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert calibration.main(["--recording", _table_recording(tmp_path / "hand.jsonl")]) == 0
    lines = capsys.readouterr().out.splitlines()
    spread = next(line for line in lines if line.startswith("UP spread, q50"))
    assert spread.split() == ["UP", "spread,", "q50", "0.01", "3600", "(4)", "0.01"]
    assert any(line.startswith("recording: 1 source(s); frames 20, rejected 0") for line in lines)


# ---------------------------------------------------------------------------------------------- lead-lag

K = 100000.0


@functools.cache
def _walk(seed: int) -> dict[int, int]:
    """c(u): a +-1 random walk per second from T - 100; the index is K exp(0.001 c(u))."""
    rng = random.Random(seed)
    c, out = 0, {}
    for u in range(T - 100, T + 901):
        out[u] = c
        c += rng.choice((-1, 1))
    return out


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _lead_lag_recording(path: Path, asset: str, via: str, mid: Callable[[int], float]) -> str:
    """One market [T, T + 900) with strike K; the index of second u reaches the bot at u + 0.5 (a futures trade)
    or u + 0.3 (a Chainlink tick), so the state sampled at s shows S(s) = K exp(0.001 c(s - 1)); the UP book
    quoted at s - 0.5 has mid(s)."""
    walk = _walk(7)
    m = _market(asset, T, K)
    frames = [_discovery(T - 200, m)]
    for u in range(T - 100, T + 900):
        price = K * math.exp(0.001 * walk[u])
        frames.append(_agg_trade(u + 0.5, asset, price) if via == "futures" else _chainlink(u + 0.3, asset, u, price))
    for s in range(T - 5, T + 900):
        q = mid(s)
        h = min(0.005, q / 2, (1 - q) / 2)
        frames.append(_book(s - 0.5, m, q - h, q + h))
    return _write(path, frames)


def _fair(s: int) -> float:
    """The method by hand: sigma = 0.001 (every 1-s return is +-0.001), so fair = Phi(c(s - 1) / sqrt(tau))."""
    return _phi(_walk(7)[s - 1] / math.sqrt(T + 900 - s))


def test_fair_value_is_phi_of_log_distance_over_sigma_root_tau(tmp_path: Path) -> None:
    data = read_recording(_lead_lag_recording(tmp_path / "f.jsonl", "BTC", "futures", lambda s: 0.5))
    (m,) = market_arrays(data)
    s = T + 500
    i = int(s - m.secs[0])
    assert m.sigma[i] == pytest.approx(0.001, rel=1e-9)
    c = _walk(7)[s - 1]
    assert m.fair[i] == pytest.approx(_phi(0.001 * c / (0.001 * math.sqrt(400))), abs=1e-12)
    assert m.fair[i] == pytest.approx(_fair(s), abs=1e-12)


def test_mid_following_the_fair_value_two_seconds_late_peaks_at_plus_two_with_rho_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _lead_lag_recording(tmp_path / "lag.jsonl.gz", "BTC", "futures", lambda s: _fair(s - 2) if s >= T + 2 else 0.5)
    out = _cli_json(capsys, "--recording", path)
    fig = out["recording"]["figures"]
    assert fig["lead_lag_peak_lag"]["value"] == 2.0
    assert fig["lead_lag_peak_rho"]["value"] == pytest.approx(1.0, abs=1e-9)
    # the grid is T .. T+869 (the last 30 s left out): 869 one-second changes, 867 pairs at lag +2
    assert out["recording"]["lead_lag"]["2"]["n"] == 867
    assert abs(fig["lead_lag_rho_0"]["value"]) < 0.2


def test_mid_leading_a_chainlink_only_index_peaks_at_minus_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # no futures trade in the recording: S is the latest Chainlink price received
    path = _lead_lag_recording(tmp_path / "lead.jsonl", "ETH", "chainlink", lambda s: _fair(min(s + 1, T + 899)) if s >= T else 0.5)
    fig = _cli_json(capsys, "--recording", path)["recording"]["figures"]
    assert fig["lead_lag_peak_lag"]["value"] == -1.0
    assert fig["lead_lag_peak_rho"]["value"] == pytest.approx(1.0, abs=1e-9)
    assert fig["lead_lag_max_abs_from_2"]["value"] < 0.2


def test_mid_quoting_twice_the_realized_volatility_implies_a_ratio_of_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    walk = _walk(7)
    path = _lead_lag_recording(
        tmp_path / "vol.jsonl", "SOL", "futures",
        lambda s: _phi(walk[s - 1] / (2.0 * math.sqrt(T + 900 - s))) if s >= T else 0.5,
    )  # fmt: skip
    fig = _cli_json(capsys, "--recording", path)["recording"]["figures"]
    # implied sigma = 0.001 c / (z sqrt(tau)) with z = c / (2 sqrt(tau)): 0.002, twice the realized 0.001
    assert fig["vol_ratio"]["value"] == pytest.approx(2.0, rel=1e-6)
    assert fig["vol_ratio"]["n"] > 500


def test_lead_lag_pools_the_pairs_of_several_recordings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lag = _lead_lag_recording(tmp_path / "a.jsonl", "BTC", "futures", lambda s: _fair(s - 2) if s >= T + 2 else 0.5)
    lead = _lead_lag_recording(tmp_path / "b.jsonl", "ETH", "chainlink", lambda s: _fair(min(s + 1, T + 899)) if s >= T else 0.5)
    out = _cli_json(capsys, "--recording", lag, lead)["recording"]
    assert out["lead_lag"]["2"]["n"] == 2 * 867 and out["lead_lag"]["2"]["markets"] == 2
    assert out["sources"] == [lag, lead]


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "nothing to measure"),
        (["--recording", "/no/such/file.jsonl"], "does not exist"),
        (["--sim", "--seeds", "1,x"], "comma list of whole numbers"),
        (["--sim", "--windows", "0"], "above 0"),
        (["--sim", "--assets", "DOGE"], "BTC,ETH,SOL,XRP"),
        (["--sim", "--sim-profile", "nonsense"], "no such profile"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert calibration.main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_malformed_recording_is_one_sentence_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1, "feed": "discovery", "msg": "[]"}\nnot json\n{"t": 2}\n')
    assert calibration.main(["--recording", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- simulator


def test_tool_reads_a_simulator_recording_made_by_run_py_end_to_end(tmp_path: Path) -> None:
    rec = tmp_path / "sim.jsonl.gz"
    run = run_cli("--strategy", "random", "--source", "sim", "--seed", "3", "--markets", "1", "--assets", "BTC",
                  "--speed", "max", "--record", str(rec), "--no-tui", "--log-dir", str(tmp_path / "logs"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    tool = call_main(calibration.main, "--recording", str(rec), "--json")
    assert tool.returncode == 0, tool.stderr
    out = json.loads(tool.stdout)["recording"]
    fig = out["figures"]
    assert fig["spread_q50"]["value"] == 0.01 and fig["spread_q50"]["n"] >= 890
    assert 0.05 < fig["mid_change_share"]["value"] < 0.9
    assert fig["lead_lag_rho_0"]["n"] > 700  # one window of one-second pairs, the last 30 s and first 60 s aside
    assert out["counts"]["rejected"] == 0 and out["counts"]["outcomes_from_chainlink"] + out["counts"].get(
        "outcomes_from_resolved", 0) >= 1  # fmt: skip


def test_sim_column_is_read_by_the_same_reader(capsys: pytest.CaptureFixture[str]) -> None:
    out = _cli_json(capsys, "--sim", "--seeds", "5", "--windows", "1", "--assets", "ETH", "--index-windows", "0")
    sim = out["sim"]
    assert sim["sources"] == ["sim seed 5"] and sim["windows"] == 1
    assert sim["counts"]["markets"] == 1 and sim["counts"]["outcomes_from_resolved"] == 1
    assert sim["figures"]["brier_0_60"]["n"] == 60
    assert "recording" not in out and out["real"]["brier_0_60"] == [0.019, 0.019]
