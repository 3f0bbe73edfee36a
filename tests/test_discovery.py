"""Gamma discovery: parsing real response shapes, and the async client against a local aiohttp Gamma."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.endpoints import Endpoints
from engine.clock import VirtualClock
from streamers.discovery import (
    Discovery,
    DiscoveryError,
    DiscoverySettings,
    RetryPolicy,
    VenueUnreachable,
    market_slug,
    parse_events_response,
    parse_markets_response,
    parse_slug,
    window_start,
)
from streamers.frames import FEED_DISCOVERY, MarketInfo

pytestmark = pytest.mark.timeout(20)

START = 1767225600  # a window start (multiple of 900)
SLUG = f"btc-updown-15m-{START}"
TOKEN_UP = "65818619657568813474341868652308942079804919287380422192892211131408793125422"
TOKEN_DOWN = "52114319501245915516055106046884209969926127482827954674443846427813813222426"


def gamma_market(slug: str = SLUG, up_first: bool = True, **overrides: object) -> dict:
    """A Gamma market object as /events `markets[]` and /markets return it (JSON-in-JSON fields)."""
    outcomes = ["Up", "Down"] if up_first else ["Down", "Up"]
    tokens = [TOKEN_UP, TOKEN_DOWN] if up_first else [TOKEN_DOWN, TOKEN_UP]
    start = parse_slug(slug)[1]
    market = {
        "id": "1031769",
        "question": "Bitcoin Up or Down - January 1, 12:00AM-12:15AM ET",
        "conditionId": "0x3cea6c3a1fa8e1c47b6f7cd9c48ec0ee5a3bd2b4d8e0f2c7b3c1f0fa3e2df322",
        "slug": slug,
        "outcomes": json.dumps(outcomes),
        "outcomePrices": json.dumps(["0.485", "0.515"]),
        "clobTokenIds": json.dumps(tokens),
        "startDate": "2025-12-31T00:05:12.345Z",
        "eventStartTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
        "endDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 900)),
        "active": True,
        "closed": False,
        "enableOrderBook": True,
        "acceptingOrders": True,
        "negRisk": False,
        "orderPriceMinTickSize": 0.01,
        "orderMinSize": 5,
        "feesEnabled": True,
        "feeSchedule": {"exponent": 1, "rate": 0.072, "takerOnly": True, "rebateRate": 0.2},
        "resolutionSource": "https://data.chain.link/streams/btc-usd",
        "liquidity": "10523.11",
        "liquidityNum": 10523.11,
    }
    market.update(overrides)
    return market


def gamma_event(market: dict, price_to_beat: float | None = 87912.5) -> dict:
    event = {
        "id": "125819",
        "ticker": market["slug"],
        "slug": market["slug"],
        "title": "Bitcoin Up or Down - January 1, 12:00AM-12:15AM ET",
        "startTime": market["eventStartTime"],
        "endDate": market["endDate"],
        "markets": [market],
    }
    if price_to_beat is not None:
        event["eventMetadata"] = {"priceToBeat": price_to_beat}
    return event


# ---------------------------------------------------------------- pure parsing


def test_events_response_decodes_json_in_json_fields_into_market_info():
    info = parse_events_response([gamma_event(gamma_market())], SLUG)
    assert info == MarketInfo(
        asset="BTC",
        condition_id="0x3cea6c3a1fa8e1c47b6f7cd9c48ec0ee5a3bd2b4d8e0f2c7b3c1f0fa3e2df322",
        token_up=TOKEN_UP,
        token_down=TOKEN_DOWN,
        start=START,
        end=START + 900,
        price_to_beat=87912.5,
        tick_size=0.01,
        min_size=5.0,
        fee_rate=0.072,
    )


def test_token_order_follows_outcomes_when_down_is_listed_first():
    info = parse_events_response([gamma_event(gamma_market(up_first=False))], SLUG)
    assert (info.token_up, info.token_down) == (TOKEN_UP, TOKEN_DOWN)


def test_unrelated_event_returned_for_an_ignored_filter_is_rejected():
    other = gamma_market(slug=f"eth-updown-15m-{START}")
    assert parse_events_response([gamma_event(other)], SLUG) is None
    assert parse_markets_response([other], SLUG) is None


def test_missing_event_metadata_leaves_price_to_beat_unknown():
    info = parse_events_response([gamma_event(gamma_market(), price_to_beat=None)], SLUG)
    assert info.price_to_beat is None


def test_fee_rate_defaults_to_crypto_rate_without_schedule_and_zero_when_fees_disabled():
    no_schedule = gamma_market()
    del no_schedule["feeSchedule"]
    assert parse_markets_response([no_schedule], SLUG).fee_rate == 0.07
    assert parse_markets_response([gamma_market(feesEnabled=False)], SLUG).fee_rate == 0.0


def test_fee_exponent_is_read_from_the_fee_schedule_and_defaults_to_one():
    steep = gamma_market(feeSchedule=json.dumps({"exponent": 2, "rate": 0.25, "takerOnly": True}))
    info = parse_markets_response([steep], SLUG)
    assert (info.fee_rate, info.fee_exponent) == (0.25, 2.0)
    no_exponent = gamma_market(feeSchedule={"rate": 0.07})
    assert parse_markets_response([no_exponent], SLUG).fee_exponent == 1.0


def test_a_discovery_line_without_fee_exponent_still_loads():
    old = parse_markets_response([gamma_market()], SLUG).to_dict()
    assert old.pop("fee_exponent") == 1.0  # what recordings made before the field carry
    assert MarketInfo.from_dict(old).fee_exponent == 1.0
    assert MarketInfo.from_dict({**old, "fee_exponent": 2}).fee_exponent == 2.0


def test_markets_response_reads_price_to_beat_from_nested_event():
    market = gamma_market(events=[{"slug": SLUG, "eventMetadata": {"priceToBeat": 3012.25}}])
    assert parse_markets_response([market], SLUG).price_to_beat == 3012.25


def test_market_without_up_down_outcomes_is_a_discovery_error():
    with pytest.raises(DiscoveryError):
        parse_markets_response([gamma_market(outcomes=json.dumps(["Yes", "No"]))], SLUG)


def test_window_start_and_slug_round_trip():
    assert window_start(START + 899.9) == START
    assert market_slug("SOL", START) == f"sol-updown-15m-{START}"
    assert parse_slug(market_slug("XRP", START + 900)) == ("XRP", START + 900)
    with pytest.raises(DiscoveryError):
        parse_slug("bitcoin-up-or-down-january-1-12am-et")


def test_endpoints_read_environment_with_defaults_and_strip_trailing_slash():
    e = Endpoints.from_env({"UPDOWN_GAMMA_URL": "http://127.0.0.1:9000/", "UPDOWN_CLOB_WS_URL": ""})
    assert e.gamma == "http://127.0.0.1:9000"
    assert e.clob_ws == "wss://ws-subscriptions-clob.polymarket.com"
    assert e.binance_futures_ws == "wss://fstream.binance.com"
    assert Endpoints.from_env(e.to_env()) == e


# ---------------------------------------------------------------- the client against a local Gamma


class FakeGamma:
    """A loopback Gamma: slug -> event; can hide /events, answer 429 first, and log every request."""

    def __init__(self) -> None:
        self.events: dict[str, dict] = {}
        self.events_endpoint_empty = False
        self.throttle_first: float | None = None  # Retry-After seconds for the first request
        self.requests: list[tuple[float, str, str]] = []  # (wall time, path, slug)
        app = web.Application()
        app.router.add_get("/events", self.handle_events)
        app.router.add_get("/markets", self.handle_markets)
        self.server = TestServer(app, host="127.0.0.1")

    async def __aenter__(self) -> FakeGamma:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def add(self, asset: str, start: int, price_to_beat: float | None = 100.0) -> None:
        slug = market_slug(asset, start)
        self.events[slug] = gamma_event(gamma_market(slug=slug), price_to_beat)

    def _log(self, request: web.Request) -> web.Response | None:
        self.requests.append((time.monotonic(), request.path, request.query.get("slug", "")))
        if self.throttle_first is not None and len(self.requests) == 1:
            return web.Response(status=429, headers={"Retry-After": str(self.throttle_first)})
        return None

    async def handle_events(self, request: web.Request) -> web.Response:
        if (throttled := self._log(request)) is not None:
            return throttled
        event = self.events.get(request.query.get("slug", ""))
        return web.json_response([] if event is None or self.events_endpoint_empty else [event])

    async def handle_markets(self, request: web.Request) -> web.Response:
        if (throttled := self._log(request)) is not None:
            return throttled
        event = self.events.get(request.query.get("slug", ""))
        return web.json_response([] if event is None else event["markets"])


FAST = DiscoverySettings(retry=RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05, timeout=2.0))


async def run_discovery(gamma: FakeGamma, clock: VirtualClock, assets=("BTC",), settings=FAST) -> Discovery:
    session = aiohttp.ClientSession()
    return Discovery(clock, Endpoints(gamma=gamma.url), assets, session, settings)


def test_discovery_finds_current_window_and_emits_design_shaped_frame():
    async def scenario():
        async with FakeGamma() as gamma:
            gamma.add("BTC", START, 87912.5)
            gamma.add("ETH", START, 3012.25)
            d = await run_discovery(gamma, VirtualClock(START + 30), assets=("BTC", "ETH"))
            async with d.session:
                assert await d.refresh() is True
                assert await d.refresh() is False  # nothing new: no change, no frame
                frame = d.frame()
        assert frame.feed == FEED_DISCOVERY and frame.t == START + 30
        markets = json.loads(frame.msg)
        assert [m["asset"] for m in markets] == ["BTC", "ETH"]
        assert set(markets[0]) == {
            "asset", "condition_id", "token_up", "token_down", "start", "end",
            "price_to_beat", "tick_size", "min_size", "fee_rate", "fee_exponent",
        }
        assert markets[1]["price_to_beat"] == 3012.25

    asyncio.run(scenario())


def test_discovery_falls_back_to_markets_endpoint_when_events_is_empty():
    async def scenario():
        async with FakeGamma() as gamma:
            gamma.add("BTC", START)
            gamma.events_endpoint_empty = True
            d = await run_discovery(gamma, VirtualClock(START + 1))
            async with d.session:
                await d.refresh()
            return d.markets, [path for _, path, _ in gamma.requests]

    markets, paths = asyncio.run(scenario())
    assert paths == ["/events", "/markets"]
    assert [m.token_up for m in markets] == [TOKEN_UP]


def test_discovery_waits_for_retry_after_on_http_429():
    async def scenario():
        async with FakeGamma() as gamma:
            gamma.add("BTC", START)
            gamma.throttle_first = 1
            d = await run_discovery(gamma, VirtualClock(START + 1))
            async with d.session:
                await d.refresh()
            return d.markets, gamma.requests

    markets, requests = asyncio.run(scenario())
    assert len(markets) == 1
    assert requests[1][0] - requests[0][0] >= 0.95  # the backoff alone would have waited ~0.01 s


def test_next_window_is_discovered_only_within_the_lookahead_before_the_end():
    async def scenario():
        async with FakeGamma() as gamma:
            gamma.add("BTC", START)
            gamma.add("BTC", START + 900)
            clock = VirtualClock(START + 800)
            d = await run_discovery(gamma, clock)
            async with d.session:
                await d.refresh()
                before = [m.start for m in d.markets]
                clock.advance(START + 900 - 59)
                await d.refresh()
                return before, [m.start for m in d.markets]

    before, after = asyncio.run(scenario())
    assert before == [START]
    assert after == [START, START + 900]


def test_unknown_price_to_beat_is_refreshed_until_gamma_has_it():
    async def scenario():
        async with FakeGamma() as gamma:
            gamma.add("BTC", START, price_to_beat=None)
            d = await run_discovery(gamma, VirtualClock(START + 2))
            async with d.session:
                await d.refresh()
                first = d.markets[0].price_to_beat
                gamma.add("BTC", START, price_to_beat=91000.0)
                changed = await d.refresh()
                return first, changed, d.markets[0].price_to_beat

    assert asyncio.run(scenario()) == (None, True, 91000.0)


def test_markets_are_dropped_after_their_end_plus_grace():
    async def scenario():
        async with FakeGamma() as gamma:
            gamma.add("BTC", START)
            gamma.add("BTC", START + 900)
            clock = VirtualClock(START + 1)
            settings = DiscoverySettings(grace=30.0, retry=FAST.retry)
            d = await run_discovery(gamma, clock, settings=settings)
            async with d.session:
                await d.refresh()
                clock.advance(START + 900 + 31)
                await d.refresh()
                return [m.start for m in d.markets]

    assert asyncio.run(scenario()) == [START + 900]


def test_run_calls_back_with_the_list_whenever_it_changes():
    async def scenario():
        async with FakeGamma() as gamma:
            gamma.add("BTC", START, price_to_beat=None)
            settings = DiscoverySettings(poll_interval=0.0, min_wall_pause=0.01, retry=FAST.retry)
            d = await run_discovery(gamma, VirtualClock(START + 5), settings=settings)
            seen: list[list[MarketInfo]] = []
            priced = asyncio.Event()

            async def on_change(markets: list[MarketInfo]) -> None:
                seen.append(markets)
                if markets[0].price_to_beat is not None:
                    priced.set()

            async with d.session:
                task = asyncio.create_task(d.run(on_change))
                await asyncio.sleep(0.1)
                gamma.add("BTC", START, price_to_beat=5.0)
                await asyncio.wait_for(priced.wait(), 5)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return [[m.price_to_beat for m in markets] for markets in seen]

    assert asyncio.run(scenario()) == [[None], [5.0]]


def test_unreachable_gamma_raises_venue_unreachable_naming_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"

    async def scenario():
        async with aiohttp.ClientSession() as session:
            d = Discovery(VirtualClock(START), Endpoints(gamma=dead), ("BTC",), session, FAST)
            await d.refresh()

    with pytest.raises(VenueUnreachable) as info:
        asyncio.run(scenario())
    assert str(info.value) == (
        f"could not reach Polymarket Gamma at {dead}; check the network or use --source sim"
    )
