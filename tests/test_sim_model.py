"""The simulated market: determinism, venue message shapes, book invariants, windows and resolution."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict

import pytest

from benchmarks.calibration import return_statistics
from sim.faults import FaultSpec
from sim.fit import read_sim
from sim.market import SimEvent, SimMarket
from sim.model import ASSET_PARAMS, WINDOW
from sim.profiles import load_profile
from streamers.frames import (
    FEED_FUTURES_MARKET,
    FEED_FUTURES_PUBLIC,
    FEED_POLYMARKET,
    FEED_RTDS,
    FEED_SPOT,
    FEEDS,
)
from streamers.recording_stats import figures

SEED = 7


@pytest.fixture(scope="module")
def run() -> tuple[SimMarket, list[SimEvent]]:
    """Two full windows and a bit of the third, all four assets."""
    sim = SimMarket(SEED)
    end = sim.start_time + 2 * WINDOW + 30
    return sim, list(itertools.takewhile(lambda e: e.t < end, sim.events()))


def _payloads(events: list[SimEvent], feed: str) -> list[dict]:
    return [json.loads(e.msg) for e in events if e.feed == feed]


def _is_decimal_text(v: object) -> bool:
    if not isinstance(v, str):
        return False
    float(v)
    return True


def test_same_seed_gives_identical_messages_and_other_seeds_differ() -> None:
    a = [(e.t, e.feed, e.msg) for e in itertools.islice(SimMarket(3).events(), 3000)]
    b = [(e.t, e.feed, e.msg) for e in itertools.islice(SimMarket(3).events(), 3000)]
    c = [(e.t, e.feed, e.msg) for e in itertools.islice(SimMarket(4).events(), 3000)]
    assert a == b
    assert a != c
    assert SimMarket(3).start_time != SimMarket(4).start_time


def test_start_time_is_window_aligned_and_events_are_time_ordered(run) -> None:
    sim, events = run
    assert sim.start_time % WINDOW == 0
    assert events[0].t >= sim.start_time
    assert all(a.t <= b.t for a, b in itertools.pairwise(events))
    assert {e.feed for e in events} <= set(FEEDS) - {"discovery"}


def test_message_rate_is_tens_of_frames_per_second(run) -> None:
    sim, events = run
    per_second = len(events) / (events[-1].t - sim.start_time)
    assert 25 <= per_second <= 50


def test_binance_futures_messages_use_strings_for_prices_and_numbers_for_times(run) -> None:
    _, events = run
    kinds = defaultdict(list)
    for e in events:
        if e.feed in (FEED_FUTURES_MARKET, FEED_FUTURES_PUBLIC):
            d = json.loads(e.msg)
            assert d["stream"] == e.stream
            kinds[d["stream"].split("@", 1)[1]].append(d["data"])
    assert {"aggTrade", "depth5@100ms", "bookTicker", "markPrice@1s", "kline_1m"} <= set(kinds)
    for t in kinds["aggTrade"][:50]:
        assert t["e"] == "aggTrade" and isinstance(t["E"], int) and isinstance(t["T"], int)
        assert _is_decimal_text(t["p"]) and _is_decimal_text(t["q"]) and isinstance(t["m"], bool)
        assert isinstance(t["a"], int) and t["f"] <= t["l"]
    for d in kinds["depth5@100ms"][:20]:
        assert len(d["b"]) == 5 and len(d["a"]) == 5
        assert all(_is_decimal_text(p) and _is_decimal_text(q) for p, q in d["b"] + d["a"])
        assert float(d["b"][0][0]) < float(d["a"][0][0])
    for d in kinds["bookTicker"][:20]:
        assert isinstance(d["u"], int) and all(_is_decimal_text(d[k]) for k in "bBaA")
    for d in kinds["markPrice@1s"][:20]:
        assert d["E"] % 1000 == 0 and all(_is_decimal_text(d[k]) for k in "piPr") and isinstance(d["T"], int)
    closed = [k["k"] for k in kinds["kline_1m"] if k["k"]["x"]]
    assert closed and all(k["T"] == k["t"] + 59999 and k["t"] % 60000 == 0 for k in closed)
    assert all(_is_decimal_text(k[f]) for k in closed for f in "ochlvqVQ")
    assert all(float(k["l"]) <= float(k["o"]) <= float(k["h"]) for k in closed)


def test_spot_and_rtds_messages_have_the_venue_shapes(run) -> None:
    _, events = run
    spot = _payloads(events, FEED_SPOT)
    assert spot and all(s["data"]["e"] == "aggTrade" and _is_decimal_text(s["data"]["p"]) for s in spot[:50])
    rtds = _payloads(events, FEED_RTDS)
    for r in rtds[:50]:
        assert r["topic"] == "crypto_prices_chainlink" and r["type"] == "update"
        assert isinstance(r["timestamp"], int) and isinstance(r["payload"]["value"], float)
        assert r["payload"]["timestamp"] % 1000 == 0 and r["payload"]["timestamp"] <= r["timestamp"]
    symbols = {r["payload"]["symbol"] for r in rtds}
    assert symbols == {p.rtds_symbol for p in ASSET_PARAMS.values()}


def test_rtds_ticks_every_second_including_each_window_start_and_end(run) -> None:
    sim, events = run
    seconds = defaultdict(set)
    for r in _payloads(events, FEED_RTDS):
        seconds[r["payload"]["symbol"]].add(r["payload"]["timestamp"] // 1000)
    for secs in seconds.values():
        assert secs == set(range(sim.start_time, sim.start_time + 2 * WINDOW + 30))


def test_polymarket_messages_use_strings_for_prices_sizes_and_timestamps(run) -> None:
    _, events = run
    seen = set()
    for d in _payloads(events, FEED_POLYMARKET):
        kind = d["event_type"]
        seen.add(kind)
        assert isinstance(d["timestamp"], str) and d["timestamp"].isdigit()
        assert d["market"].startswith("0x") and len(d["market"]) == 66
        if kind == "price_change":
            assert "asset_id" not in d
            for ch in d["price_changes"]:
                assert ch["side"] in ("BUY", "SELL")
                assert all(_is_decimal_text(ch[k]) for k in ("price", "size", "best_bid", "best_ask"))
        elif kind == "book":
            assert all(_is_decimal_text(lv["price"]) and _is_decimal_text(lv["size"]) for lv in d["bids"] + d["asks"])
            assert _is_decimal_text(d["tick_size"])
        elif kind == "last_trade_price":
            assert _is_decimal_text(d["price"]) and _is_decimal_text(d["size"]) and d["side"] in ("BUY", "SELL")
        elif kind in ("new_market", "market_resolved"):
            assert d["outcomes"] == ["Up", "Down"] and len(d["assets_ids"]) == 2
    assert {"book", "price_change", "best_bid_ask", "last_trade_price", "new_market", "market_resolved"} <= seen


def _apply(book: dict[str, dict[float, float]], side: str, price: float, size: float) -> None:
    levels = book["bids" if side == "BUY" else "asks"]
    if size == 0.0:
        levels.pop(price, None)
    else:
        levels[price] = size


def test_rebuilt_books_stay_uncrossed_on_the_tick_grid_with_down_mirroring_up(run) -> None:
    _, events = run
    books: dict[str, dict[str, dict[float, float]]] = {}
    tick: dict[str, float] = {}
    pairs: dict[str, tuple[str, str]] = {}
    checked = 0
    for d in _payloads(events, FEED_POLYMARKET):
        kind = d["event_type"]
        if kind == "new_market":
            pairs[d["market"]] = tuple(d["assets_ids"])
        elif kind == "book":
            books[d["asset_id"]] = {
                "bids": {float(lv["price"]): float(lv["size"]) for lv in d["bids"]},
                "asks": {float(lv["price"]): float(lv["size"]) for lv in d["asks"]},
            }
            tick[d["asset_id"]] = float(d["tick_size"])
        elif kind == "tick_size_change":
            assert tick[d["asset_id"]] == float(d["old_tick_size"])
            tick[d["asset_id"]] = float(d["new_tick_size"])
        elif kind == "price_change":
            assert {ch["asset_id"] for ch in d["price_changes"]} == set(pairs[d["market"]])
            for ch in d["price_changes"]:
                b = books[ch["asset_id"]]
                _apply(b, ch["side"], float(ch["price"]), float(ch["size"]))
                # mid-message a side may be empty for a moment: the venue then says "0" / "1"
                assert max(b["bids"], default=0.0) == float(ch["best_bid"])
                assert min(b["asks"], default=1.0) == float(ch["best_ask"])
            up, down = pairs[d["market"]]
            bu, bd = books[up], books[down]
            assert max(bu["bids"]) < min(bu["asks"])
            for p in list(bu["bids"]) + list(bu["asks"]):
                assert abs(p / tick[up] - round(p / tick[up])) < 1e-6 and 0.0 < p < 1.0
            assert {round(1 - p, 3): s for p, s in bu["asks"].items()} == {round(p, 3): s for p, s in bd["bids"].items()}
            assert {round(1 - p, 3): s for p, s in bu["bids"].items()} == {round(p, 3): s for p, s in bd["asks"].items()}
            checked += 1
    assert checked > 1000


def test_tick_size_switches_to_a_tenth_of_a_cent_near_the_extremes(run) -> None:
    _, events = run
    changes = [d for d in _payloads(events, FEED_POLYMARKET) if d["event_type"] == "tick_size_change"]
    assert changes, "some market should reach 0.96 / 0.04 in two windows of four assets"
    assert {(c["old_tick_size"], c["new_tick_size"]) for c in changes} <= {("0.01", "0.001"), ("0.001", "0.01")}


def test_markets_resolve_up_iff_the_index_at_the_end_is_at_least_the_index_at_the_start(run) -> None:
    sim, events = run
    value = {}
    for r in _payloads(events, FEED_RTDS):
        value[(r["payload"]["symbol"], r["payload"]["timestamp"] // 1000)] = r["payload"]["value"]
    listed = {}
    resolved = []
    for d in _payloads(events, FEED_POLYMARKET):
        if d["event_type"] == "new_market":
            listed[d["market"]] = d
        elif d["event_type"] == "market_resolved":
            resolved.append(d)
    assert len(resolved) == 2 * len(ASSET_PARAMS)
    for d in resolved:
        asset = d["slug"].split("-")[0].upper()
        start = int(d["slug"].rsplit("-", 1)[1])
        sym = ASSET_PARAMS[asset].rtds_symbol
        up = value[(sym, start + WINDOW)] >= value[(sym, start)]
        assert d["winning_outcome"] == ("Up" if up else "Down")
        assert d["winning_asset_id"] == d["assets_ids"][0 if up else 1]
        assert int(d["timestamp"]) >= (start + WINDOW) * 1000
        assert d["market"] in listed
    starts = sorted({int(d["slug"].rsplit("-", 1)[1]) for d in listed.values()})
    assert starts == [sim.start_time + k * WINDOW for k in range(3)]


def test_next_window_is_listed_a_minute_before_it_starts(run) -> None:
    sim, events = run
    listings = [e for e in events if e.feed == FEED_POLYMARKET and '"event_type":"new_market"' in e.msg]
    second = [e.t for e in listings if f"-{sim.start_time + WINDOW}" in e.msg]
    assert len(second) == 4 and all(sim.start_time + WINDOW - 60 <= t < sim.start_time + WINDOW for t in second)


def _flow_agreement(events: list[SimEvent], ahead: bool) -> tuple[float, int]:
    """Share of BTC futures trades whose aggressor side matches the sign of the index's 5-second move
    just after (ahead) or just before the trade, and how many trades were counted."""
    index = {}
    for r in _payloads(events, FEED_RTDS):
        if r["payload"]["symbol"] == "btc/usd":
            index[r["payload"]["timestamp"] // 1000] = r["payload"]["value"]
    agree = total = 0
    for e in events:
        if e.stream == "btcusdt@aggTrade" and e.feed == FEED_FUTURES_MARKET:
            d = json.loads(e.msg)["data"]
            s = d["E"] // 1000
            a, b = (s, s + 5) if ahead else (s - 5, s)
            if a in index and b in index and index[b] != index[a]:
                agree += (index[b] > index[a]) == (not d["m"])
                total += 1
    return agree / max(total, 1), total


def test_realistic_taker_flow_follows_the_last_move_and_does_not_foretell_the_next(run) -> None:
    _, events = run
    behind, n = _flow_agreement(events, ahead=False)
    ahead, _ = _flow_agreement(events, ahead=True)
    assert n > 2000
    assert 0.52 < behind < 0.7
    assert 0.46 < ahead < 0.54  # no free look at the index's future in the realistic market


def test_lagged_taker_flow_leans_toward_the_next_seconds_move() -> None:
    sim = SimMarket(SEED, assets=("BTC",), profile=load_profile("lagged"))
    end = sim.start_time + 2 * WINDOW
    ahead, n = _flow_agreement(list(itertools.takewhile(lambda e: e.t < end, sim.events())), ahead=True)
    assert n > 2000
    assert 0.52 < ahead < 0.7


def test_rest_snapshots_match_the_published_state(run) -> None:
    sim = SimMarket(SEED)
    events = sim.events()
    for e in events:
        if e.t > sim.start_time + 120:
            break
    cur = sim.markets_at(sim.now)[0]
    event = json.loads(sim.gamma_event_json(f"btc-updown-15m-{cur.start}", sim.now))
    assert isinstance(event, list) and len(event) == 1
    mk = event[0]["markets"][0]
    assert json.loads(mk["clobTokenIds"]) == [cur.token_up, cur.token_down]
    assert json.loads(mk["outcomes"]) == ["Up", "Down"] and len(json.loads(mk["outcomePrices"])) == 2
    assert mk["feeSchedule"] == {"exponent": 1, "rate": 0.07, "takerOnly": True, "rebateRate": 0.2}
    assert mk["orderMinSize"] == 5 and mk["conditionId"] == cur.condition_id and mk["feesEnabled"] is True
    assert event[0]["eventMetadata"]["priceToBeat"] == cur.price_to_beat
    assert json.loads(sim.gamma_markets_json(f"btc-updown-15m-{cur.start}", sim.now))[0]["slug"] == mk["slug"]
    assert sim.gamma_event_json("btc-updown-15m-1", sim.now) is None
    clob = json.loads(sim.clob_market_json(cur.condition_id))
    assert [t["token_id"] for t in clob["tokens"]] == [cur.token_up, cur.token_down]
    book = json.loads(sim.book_json(cur.token_up))
    ws_book = json.loads(sim.book_event(cur.token_up))
    assert ws_book["event_type"] == "book" and book["bids"] == ws_book["bids"] and book["asks"] == ws_book["asks"]
    assert max(float(b["price"]) for b in book["bids"]) < min(float(a["price"]) for a in book["asks"])
    rows = json.loads(sim.klines_rest_body("btcusdt", None, 100))
    assert len(rows) == 100 and all(len(r) == 12 for r in rows)
    assert rows[-1][6] < sim.now * 1000 and rows[-1][0] == (int(sim.now) // 60 - 1) * 60000


def test_next_market_rest_bodies_appear_only_once_listed() -> None:
    sim = SimMarket(SEED)
    slug = f"eth-updown-15m-{sim.start_time + WINDOW}"
    for e in sim.events():
        if e.t > sim.start_time + WINDOW - 30:
            break
    assert sim.gamma_event_json(slug, sim.start_time + WINDOW - 61) is None
    body = json.loads(sim.gamma_event_json(slug, sim.now))[0]
    assert "eventMetadata" not in body  # the opening price is not known before the window starts


def test_garbage_faults_add_malformed_frames_without_changing_the_others() -> None:
    clean = [e.msg for e in itertools.islice(SimMarket(5).events(), 4000)]
    noisy = list(itertools.islice(SimMarket(5, faults=FaultSpec(garbage=0.05)).events(), 4200))
    bad, good = [], []
    for e in noisy:
        try:
            json.loads(e.msg)
            good.append(e.msg)
        except ValueError:
            bad.append(e.msg)
    assert 100 < len(bad) < 400
    assert good[: len(clean) - 300] == clean[: len(clean) - 300]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("drop=0.1,boom=0.2", "unknown fault 'boom'"),
        ("drop=abc", "not a number"),
        ("garbage=1.5", "out of range"),
        ("stall=-0.1", "out of range"),
        ("stall", "has no rate"),
        ("drop=nan", "out of range"),
    ],
)
def test_fault_spec_rejects_bad_input_with_one_sentence(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        FaultSpec.parse(text)
    assert "\n" not in str(info.value)


def test_fault_spec_parses_rates() -> None:
    spec = FaultSpec.parse("drop=0.01, garbage=0.001,stall=0")
    assert (spec.drop, spec.garbage, spec.stall) == (0.01, 0.001, 0.0)
    assert FaultSpec.parse("") == FaultSpec()


def test_short_calibration_run_lands_near_the_real_statistics() -> None:
    stats = {k: f.value for k, f in figures(read_sim([11], tuple(ASSET_PARAMS), windows=3)).items()}
    assert stats["spread_q50"] == pytest.approx(0.01)
    assert stats["spread_q10"] >= 0.005 and stats["spread_q99"] <= 0.06
    assert 0.3 < stats["mid_change_share"] < 0.65
    assert stats["mid_change_q50"] <= 0.02
    devs = [stats[f"abs_dev_{lo}_{hi}"] for lo, hi in ((600, 900), (300, 600), (60, 300), (0, 60))]
    assert devs == sorted(devs) and 0.05 < devs[0] < 0.25 and devs[-1] > 0.35
    assert stats["brier_600_900"] > stats["brier_0_60"]
    returns = return_statistics(11, windows=600)
    for asset, p in ASSET_PARAMS.items():
        assert 0.7 < returns[f"ret_std_{asset}"] / p.return_std_15m < 1.4
    assert returns["excess_kurtosis"] > 2.0
    assert 0.44 < returns["up_share"] < 0.56


def test_rest_bodies_show_the_resolution_once_the_window_ended() -> None:
    sim = SimMarket(SEED, assets=("XRP",))
    slug = f"xrp-updown-15m-{sim.start_time}"
    resolved = None
    for e in sim.events():
        if '"event_type":"market_resolved"' in e.msg:
            resolved = json.loads(e.msg)
        if e.t > sim.start_time + WINDOW + 2:
            break
    assert resolved is not None
    event = json.loads(sim.gamma_event_json(slug, sim.now))[0]
    mk = event["markets"][0]
    up = resolved["winning_outcome"] == "Up"
    assert event["closed"] is True and mk["closed"] is True
    assert json.loads(mk["outcomePrices"]) == (["1", "0"] if up else ["0", "1"])
    assert (event["eventMetadata"]["finalPrice"] >= event["eventMetadata"]["priceToBeat"]) == up
    clob = json.loads(sim.clob_market_json(resolved["market"]))
    assert [t["winner"] for t in clob["tokens"]] == [up, not up]
    assert sim.book_json(resolved["assets_ids"][0]) is None  # the venue answers 404 after resolution
