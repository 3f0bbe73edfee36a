"""SimSource: warm-up frames, discovery frames, and the same bytes as SimMarket's stream."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from sim.market import SimMarket
from sim.model import ASSET_PARAMS, WINDOW
from sim.source import WARMUP_KLINES, SimSource
from streamers.frames import ASSETS, FEED_DISCOVERY, FEED_FUTURES_MARKET, FEED_RTDS, Frame, MarketInfo

SEED = 21


@pytest.fixture(scope="module")
def frames() -> tuple[SimSource, list[Frame]]:
    """A window and a half of frames, enough to see one roll and one resolution."""
    src = SimSource(SEED)
    end = src.start_time + WINDOW + 120
    return src, list(itertools.takewhile(lambda f: f.t < end, src.iter_frames()))


def test_source_is_virtual_and_starts_at_the_seed_start_time(frames) -> None:
    src, fs = frames
    assert src.virtual is True
    assert src.start_time == SimMarket(SEED).start_time
    assert fs[0].t == src.start_time
    assert all(a.t <= b.t for a, b in itertools.pairwise(fs))


def test_first_frames_are_the_klines_warmup_per_asset_with_the_rest_body_verbatim(frames) -> None:
    src, fs = frames
    body = SimMarket(SEED).klines_rest_body("btcusdt", None, WARMUP_KLINES)
    assert fs[0].msg == '{"stream":"btcusdt@klines_rest","data":' + body + "}"
    for frame, asset in zip(fs[:4], ASSETS, strict=True):
        d = json.loads(frame.msg)
        assert frame.feed == FEED_FUTURES_MARKET
        assert d["stream"] == f"{ASSET_PARAMS[asset].symbol}@klines_rest"
        rows = d["data"]
        assert len(rows) >= 61
        assert all(r[6] < src.start_time * 1000 for r in rows)
        assert [r[0] for r in rows] == list(range(rows[0][0], src.start_time * 1000, 60000))
        assert all(isinstance(r[1], str) and isinstance(r[8], int) for r in rows)


def test_first_discovery_lists_the_current_window_without_its_opening_price(frames) -> None:
    src, fs = frames
    assert fs[4].feed == FEED_DISCOVERY
    markets = [MarketInfo.from_dict(d) for d in json.loads(fs[4].msg)]
    assert sorted(m.asset for m in markets) == sorted(ASSETS)
    assert all(m.start == src.start_time and m.end == src.start_time + WINDOW for m in markets)
    assert all(m.price_to_beat is None for m in markets)
    assert all(m.tick_size == 0.01 and m.min_size == 5 and m.fee_rate == 0.07 for m in markets)


def test_discovery_price_to_beat_equals_the_rtds_tick_at_the_window_start(frames) -> None:
    src, fs = frames
    ticks = {}
    for f in fs:
        if f.feed == FEED_RTDS:
            p = json.loads(f.msg)["payload"]
            ticks[(p["symbol"], p["timestamp"] // 1000)] = (p["value"], f.t)
    last_seen: dict[tuple[str, int], float | None] = {}
    for f in fs:
        if f.feed != FEED_DISCOVERY:
            continue
        for d in json.loads(f.msg):
            m = MarketInfo.from_dict(d)
            value, published = ticks[(ASSET_PARAMS[m.asset].rtds_symbol, m.start)] if m.start <= fs[-1].t else (0, 0)
            if m.price_to_beat is not None:
                assert m.price_to_beat == value and f.t >= published  # never known before its tick is out
            last_seen[(m.asset, m.start)] = m.price_to_beat
    for asset in ASSETS:
        assert last_seen[(asset, src.start_time)] is not None
        assert last_seen[(asset, src.start_time + WINDOW)] is not None


def test_discovery_lists_the_next_window_ahead_and_drops_the_old_one_after_its_end(frames) -> None:
    src, fs = frames
    listed_next = dropped_old = None
    for f in fs:
        if f.feed != FEED_DISCOVERY:
            continue
        starts = {d["start"] for d in json.loads(f.msg)}
        if listed_next is None and src.start_time + WINDOW in starts:
            listed_next = f.t
        if listed_next is not None and dropped_old is None and src.start_time not in starts:
            dropped_old = f.t
    assert listed_next is not None and src.start_time + WINDOW - 60 <= listed_next < src.start_time + WINDOW
    assert dropped_old is not None and src.start_time + WINDOW < dropped_old <= src.start_time + WINDOW + 30


def test_discovery_frames_are_only_sent_when_the_list_changes(frames) -> None:
    _, fs = frames
    texts = [f.msg for f in fs if f.feed == FEED_DISCOVERY]
    assert all(a != b for a, b in itertools.pairwise(texts))
    assert 4 <= len(texts) <= 20


def test_socket_frames_are_byte_for_byte_the_simmarket_events(frames) -> None:
    _, fs = frames
    ours = [(f.t, f.feed, f.msg) for f in fs[4:] if f.feed != FEED_DISCOVERY][:20000]
    theirs = [(e.t, e.feed, e.msg) for e in itertools.islice(SimMarket(SEED).events(), len(ours))]
    assert ours == theirs


def test_async_frames_match_the_sync_frames_and_close_stops_them() -> None:
    async def take(n: int) -> tuple[list[Frame], list[Frame]]:
        src = SimSource(3, assets=("BTC", "XRP"))
        got = []
        async for frame in src.frames():
            got.append(frame)
            if len(got) == n:
                await src.close()
        return got, list(itertools.islice(SimSource(3, assets=("BTC", "XRP")).iter_frames(), n + 1))

    got, expected = asyncio.run(take(2000))
    assert got == expected[: len(got)]
    assert len(got) in (2000, 2001)  # closing takes effect at the next frame


def test_asset_subset_only_carries_those_assets() -> None:
    src = SimSource(9, assets=("SOL",))
    fs = list(itertools.islice(src.iter_frames(), 3000))
    assert fs[0].msg.startswith('{"stream":"solusdt@klines_rest"')
    discovery = json.loads(fs[1].msg)
    assert [d["asset"] for d in discovery] == ["SOL"]
    assert not any("btcusdt" in f.msg or "btc/usd" in f.msg for f in fs)


def test_unknown_asset_is_rejected_with_one_sentence() -> None:
    with pytest.raises(ValueError, match="unknown asset"):
        SimSource(1, assets=("DOGE",))
