"""The simulator's loopback venues speak the real protocols: routing, subscriptions, REST shapes, pacing, faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engine.clock import RealClock
from sim.__main__ import main as sim_main
from sim.faults import FaultSpec
from sim.servers import SimServers
from tests.conftest import ROOT, call_main

SPEED = 300.0  # functional tests run fast; the pacing test uses 60x
SLOW = 60.0  # tests that read whole streams on several sockets, so a loaded machine keeps up with them


def run_with_servers(
    body: Callable[[SimServers, dict[str, str]], Awaitable[None]],
    speed: float = SPEED,
    assets: tuple[str, ...] = ("BTC", "ETH"),
    faults: FaultSpec | None = None,
) -> SimServers:
    """Start servers on loopback, run `body(servers, endpoints)`, always stop them; returns the servers."""
    servers = SimServers(seed=5, speed=speed, assets=assets, faults=faults)

    async def main() -> None:
        endpoints = await servers.start()
        try:
            await asyncio.wait_for(body(servers, endpoints), timeout=20)
        finally:
            await servers.stop()

    asyncio.run(main())
    return servers


async def collect(
    ws: ClientConnection, seconds: float, until: Callable[[list[str]], bool] | None = None, patience: float = 5.0
) -> list[str]:
    """Every text frame received within `seconds` of wall time, and on until `until(frames)` holds.

    The extra `patience` only matters on a machine so loaded that the pacing falls behind.
    """
    frames: list[str] = []
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds and (until is None or until(frames) or elapsed >= seconds + patience):
            return frames
        try:
            frames.append(await asyncio.wait_for(ws.recv(), 0.1))
        except TimeoutError:
            continue


async def recv_json_until(ws: ClientConnection, predicate: Callable[[object], bool], seconds: float = 5.0):
    """The first frame that parses as JSON and satisfies `predicate`."""
    deadline = time.monotonic() + seconds
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if predicate(doc):
            return doc


def stream_names(frames: list[str]) -> set[str]:
    return {json.loads(f)["stream"] for f in frames}


def current_tokens(servers: SimServers, asset: str) -> tuple[str, str]:
    market = next(m for m in servers.sim.markets_at(servers.clock.now()) if m.asset == asset and
                  m.start <= servers.clock.now() < m.end)
    return market.token_up, market.token_down


def market_events(frames: list[str]) -> list[dict]:
    """The market-channel events in frames (arrays unpacked, PONG skipped)."""
    events = []
    for raw in frames:
        if raw == "PONG":
            continue
        doc = json.loads(raw)
        events.extend(doc if isinstance(doc, list) else [doc])
    return events


def event_types(frames: list[str]) -> list[str]:
    return [ev["event_type"] for ev in market_events(frames)]


def asset_ids_of(raw: str) -> set[str]:
    doc = json.loads(raw)
    ids: set[str] = set()
    for ev in doc if isinstance(doc, list) else [doc]:
        if "asset_id" in ev:
            ids.add(ev["asset_id"])
        ids.update(change["asset_id"] for change in ev.get("price_changes", []))
    return ids


# ---- Binance websockets ----------------------------------------------------------------------------


def test_routed_futures_paths_deliver_only_their_own_streams():
    async def body(servers, endpoints):
        base = endpoints["UPDOWN_BINANCE_FUTURES_WS_URL"]
        streams = "btcusdt@aggTrade/btcusdt@depth5@100ms/btcusdt@markPrice@1s/btcusdt@bookTicker"
        market_streams = {"btcusdt@aggTrade", "btcusdt@markPrice@1s"}
        public_streams = {"btcusdt@depth5@100ms", "btcusdt@bookTicker"}
        async with connect(f"{base}/market/stream?streams={streams}") as market, connect(
            f"{base}/public/stream?streams={streams}"
        ) as public, connect(f"{base}/stream?streams={streams}") as legacy:
            market_frames, public_frames, legacy_frames = await asyncio.gather(
                collect(market, 1.0, until=lambda f: stream_names(f) >= market_streams),
                collect(public, 1.0, until=lambda f: stream_names(f) >= public_streams),
                collect(legacy, 1.0, until=lambda f: stream_names(f) >= public_streams),
            )
        # the wrong-path streams were accepted without error and are simply never delivered
        assert stream_names(market_frames) == market_streams
        assert stream_names(public_frames) == public_streams
        # the retired unrouted path behaves like /public, as the venue documents
        assert stream_names(legacy_frames) == public_streams

    run_with_servers(body, speed=SLOW)  # every stream of the market on several sockets: a flood at 300x


def test_futures_live_subscribe_is_acknowledged_and_delivers_only_subscribed_streams():
    async def body(servers, endpoints):
        async with connect(endpoints["UPDOWN_BINANCE_FUTURES_WS_URL"] + "/market/stream") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@kline_1m", "ethusdt@aggTrade"], "id": 7}))
            assert json.loads(await ws.recv()) == {"result": None, "id": 7}
            first = await collect(ws, 1.0)
            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 8}))
            await recv_json_until(ws, lambda d: d == {"result": None, "id": 8})
            later = await collect(ws, 1.0)
        assert "ethusdt@aggTrade" in stream_names(first)
        assert stream_names(first) <= {"ethusdt@aggTrade", "ethusdt@kline_1m"}
        assert stream_names(later) <= {"ethusdt@kline_1m"} and later

    run_with_servers(body, speed=SLOW)  # every stream of the market on several sockets: a flood at 300x


def test_spot_combined_stream_delivers_spot_trades():
    async def body(servers, endpoints):
        async with connect(endpoints["UPDOWN_BINANCE_SPOT_WS_URL"] + "/stream?streams=btcusdt@aggTrade") as ws:
            frames = await collect(ws, 1.0)
        assert frames and stream_names(frames) == {"btcusdt@aggTrade"}
        assert json.loads(frames[0])["data"]["s"] == "BTCUSDT"

    run_with_servers(body)


def test_unknown_websocket_path_is_refused_at_the_handshake():
    async def body(servers, endpoints):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(endpoints["UPDOWN_BINANCE_FUTURES_WS_URL"] + "/ws/btcusdt@aggTrade"):
                pass
        assert refused.value.response.status_code == 404

    run_with_servers(body)


# ---- Polymarket CLOB market channel ------------------------------------------------------------------


def test_clob_subscription_gets_one_array_frame_of_book_snapshots_then_updates():
    async def body(servers, endpoints):
        up, down = current_tokens(servers, "BTC")
        async with connect(endpoints["UPDOWN_CLOB_WS_URL"] + "/ws/market") as ws:
            await ws.send(json.dumps({"assets_ids": [up, down], "type": "market", "custom_feature_enabled": True}))
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
            frames = await collect(ws, 1.0)
        assert isinstance(snapshot, list)
        assert {ev["event_type"] for ev in snapshot} == {"book"}
        assert {ev["asset_id"] for ev in snapshot} == {up, down}
        assert frames, "no updates after the snapshot"
        assert all(asset_ids_of(f) & {up, down} for f in frames)

    run_with_servers(body)


def test_clob_dynamic_unsubscribe_and_subscribe_switch_the_streamed_assets():
    async def body(servers, endpoints):
        btc, eth = current_tokens(servers, "BTC"), current_tokens(servers, "ETH")
        async with connect(endpoints["UPDOWN_CLOB_WS_URL"] + "/ws/market") as ws:
            await ws.send(json.dumps({"assets_ids": list(btc), "type": "market", "custom_feature_enabled": True}))
            await asyncio.wait_for(ws.recv(), 5)
            await ws.send(json.dumps({"assets_ids": list(btc), "operation": "unsubscribe"}))
            await ws.send(json.dumps({"assets_ids": list(eth), "operation": "subscribe", "custom_feature_enabled": True}))
            # the server answers in order, so everything after the ETH snapshot follows the unsubscribe
            snapshot = await recv_json_until(ws, lambda d: isinstance(d, list))
            frames = await collect(ws, 1.0)
        assert {ev["asset_id"] for ev in snapshot} == set(eth)
        assert frames
        assert all(asset_ids_of(f) & set(eth) and not asset_ids_of(f) & set(btc) for f in frames)

    run_with_servers(body)


def test_clob_answers_text_ping_with_pong():
    async def body(servers, endpoints):
        up, down = current_tokens(servers, "ETH")
        async with connect(endpoints["UPDOWN_CLOB_WS_URL"] + "/ws/market") as ws:
            await ws.send(json.dumps({"assets_ids": [up, down], "type": "market"}))
            await ws.send("PING")
            frames = await collect(ws, 1.0)
        assert "PONG" in frames

    run_with_servers(body)


def test_clob_custom_feature_events_only_reach_subscribers_that_enabled_them():
    async def body(servers, endpoints):
        tokens = [t for asset in ("BTC", "ETH") for t in current_tokens(servers, asset)]
        url = endpoints["UPDOWN_CLOB_WS_URL"] + "/ws/market"
        async with connect(url) as plain, connect(url) as custom:
            await plain.send(json.dumps({"assets_ids": tokens, "type": "market"}))
            await custom.send(json.dumps({"assets_ids": tokens, "type": "market", "custom_feature_enabled": True}))
            plain_frames, custom_frames = await asyncio.gather(collect(plain, 1.0), collect(custom, 1.0))
        custom_only = {"best_bid_ask", "new_market", "market_resolved"}
        assert custom_only & set(event_types(custom_frames))
        assert not custom_only & set(event_types(plain_frames))
        assert "book" in event_types(plain_frames)

    run_with_servers(body, speed=SLOW)  # every stream of the market on several sockets: a flood at 300x


def test_clob_new_market_reaches_every_custom_feature_subscriber_before_anyone_subscribes_to_it():
    async def body(servers, endpoints):
        btc = current_tokens(servers, "BTC")
        url = endpoints["UPDOWN_CLOB_WS_URL"] + "/ws/market"
        async with connect(url) as plain, connect(url) as custom:
            await plain.send(json.dumps({"assets_ids": list(btc), "type": "market"}))
            await custom.send(json.dumps({"assets_ids": list(btc), "type": "market", "custom_feature_enabled": True}))
            # the next window is listed 60 s before it starts: about 0.7 s of wall time at 1200x
            plain_frames, custom_frames = await asyncio.gather(
                collect(plain, 1.0, until=lambda f: "new_market" in event_types(f)),
                collect(custom, 1.0, until=lambda f: "new_market" in event_types(f)),
            )
        announced = [ev for ev in market_events(custom_frames) if ev["event_type"] == "new_market"]
        assert announced
        assert all(not set(ev["assets_ids"]) & set(btc) for ev in announced)
        assert "new_market" not in event_types(plain_frames)

    run_with_servers(body, speed=1200.0)


def test_clob_closes_a_connection_that_never_subscribes():
    async def body(servers, endpoints):
        servers.clob_subscribe_timeout_s = 0.5
        async with connect(endpoints["UPDOWN_CLOB_WS_URL"] + "/ws/market") as ws:
            await ws.send("PING")
            assert await asyncio.wait_for(ws.recv(), 2) == "PONG"
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 3)

    run_with_servers(body)


# ---- RTDS ------------------------------------------------------------------------------------------


def test_rtds_subscription_streams_only_the_filtered_symbol_and_answers_ping():
    async def body(servers, endpoints):
        async with connect(endpoints["UPDOWN_RTDS_WS_URL"]) as ws:
            subscription = {"topic": "crypto_prices_chainlink", "type": "*", "filters": '{"symbol":"eth/usd"}'}
            await ws.send(json.dumps({"action": "subscribe", "subscriptions": [subscription]}))
            await ws.send("ping")
            frames = await collect(ws, 1.0)
        assert "pong" in frames
        updates = [json.loads(f) for f in frames if f != "pong"]
        assert updates
        assert {u["topic"] for u in updates} == {"crypto_prices_chainlink"}
        assert {u["payload"]["symbol"] for u in updates} == {"eth/usd"}

    run_with_servers(body)


# ---- REST ------------------------------------------------------------------------------------------


def test_rest_endpoints_return_the_venue_shapes():
    async def body(servers, endpoints):
        market = next(m for m in servers.sim.markets_at(servers.clock.now()) if m.asset == "BTC")
        slug = f"btc-updown-15m-{market.start}"
        async with aiohttp.ClientSession() as http:
            klines_url = endpoints["UPDOWN_BINANCE_FUTURES_REST_URL"] + "/fapi/v1/klines"
            async with http.get(klines_url, params={"symbol": "BTCUSDT", "interval": "1m", "limit": "30"}) as r:
                assert r.status == 200
                klines = await r.json()
            async with http.get(klines_url, params={"symbol": "DOGEUSDT", "interval": "1m", "limit": "30"}) as r:
                assert r.status == 400
                assert await r.json() == {"code": -1121, "msg": "Invalid symbol."}
            async with http.get(endpoints["UPDOWN_GAMMA_URL"] + "/events", params={"slug": slug}) as r:
                assert r.status == 200
                events = await r.json()
            async with http.get(endpoints["UPDOWN_GAMMA_URL"] + "/events", params={"slug": "btc-updown-15m-1"}) as r:
                assert await r.json() == []
            async with http.get(endpoints["UPDOWN_CLOB_URL"] + f"/markets/{market.condition_id}") as r:
                assert r.status == 200
                clob_market = await r.json()
            async with http.get(endpoints["UPDOWN_CLOB_URL"] + "/book", params={"token_id": market.token_up}) as r:
                assert r.status == 200
                book = await r.json()
            async with http.get(endpoints["UPDOWN_CLOB_URL"] + "/book", params={"token_id": "123"}) as r:
                assert r.status == 404
                assert "error" in await r.json()
        assert len(klines) == 30 and all(len(row) == 12 for row in klines)
        assert [row[0] for row in klines] == sorted(row[0] for row in klines)
        assert all(isinstance(row[1], str) and isinstance(row[0], int) for row in klines)
        gamma_market = events[0]["markets"][0]
        # Gamma's JSON-in-JSON fields: lists encoded as strings
        assert json.loads(gamma_market["clobTokenIds"]) == [market.token_up, market.token_down]
        assert json.loads(gamma_market["outcomes"]) == ["Up", "Down"]
        assert gamma_market["conditionId"] == market.condition_id
        assert clob_market["condition_id"] == market.condition_id
        assert book["asset_id"] == market.token_up and book["bids"] and book["asks"]

    run_with_servers(body)


# ---- pacing and faults -----------------------------------------------------------------------------


def test_speed_60_delivers_events_in_time_order_at_the_clock_pace():
    async def body(servers, endpoints):
        base = endpoints["UPDOWN_BINANCE_FUTURES_WS_URL"]
        async with connect(f"{base}/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade") as ws:
            lags: list[float] = []
            times: list[float] = []
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                data = json.loads(await asyncio.wait_for(ws.recv(), 2))["data"]
                event_time = data["E"] / 1000
                times.append(event_time)
                lags.append(servers.clock.now() - event_time)
        assert times == sorted(times)
        # 2 wall seconds at 60x cover about 120 s of market time (less only if a busy machine starves the loop)
        assert 80 <= times[-1] - times[0] <= 125
        # never early, and on average late by well under a second of wall time
        assert min(lags) >= -0.01
        assert sum(lags) / len(lags) < 10.0

    run_with_servers(body, speed=60.0)


def test_drop_fault_kills_connections_and_a_reconnect_is_served_again():
    async def body(servers, endpoints):
        url = endpoints["UPDOWN_BINANCE_FUTURES_WS_URL"] + "/market/stream?streams=btcusdt@aggTrade"
        for _ in range(2):
            async with connect(url) as ws:
                received = 0
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                        received += 1
                assert received > 0
        assert servers.stats["binance_futures_ws"].dropped >= 2
        assert servers.stats["binance_futures_ws"].connections == 2

    run_with_servers(body, faults=FaultSpec.parse("drop=0.02"))


def test_garbage_fault_sends_malformed_frames_beside_the_real_ones():
    async def body(servers, endpoints):
        url = endpoints["UPDOWN_BINANCE_FUTURES_WS_URL"] + "/market/stream?streams=btcusdt@aggTrade"
        async with connect(url) as ws:
            frames = await collect(ws, 1.0)
        bad = 0
        for raw in frames:
            try:
                json.loads(raw)
            except ValueError:
                bad += 1
        assert 0 < bad < len(frames) / 2

    run_with_servers(body, faults=FaultSpec.parse("garbage=0.1"))


def test_stall_fault_holds_a_feed_then_delivers_it_late_and_in_order():
    async def body(servers, endpoints):
        url = endpoints["UPDOWN_BINANCE_FUTURES_WS_URL"] + "/market/stream?streams=btcusdt@aggTrade"
        lags: list[float] = []
        times: list[float] = []
        async with connect(url) as ws:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                data = json.loads(await asyncio.wait_for(ws.recv(), 2))["data"]
                times.append(data["E"] / 1000)
                lags.append(servers.clock.now() - data["E"] / 1000)
        assert servers.stalls > 0
        assert times == sorted(times)
        # a stall holds the feed for 2 to 6 s of market time; without one, frames arrive within a fraction
        assert max(lags) >= 1.5

    run_with_servers(body, speed=60.0, faults=FaultSpec.parse("stall=0.01"))


# ---- python -m sim ---------------------------------------------------------------------------------


def test_python_m_sim_prints_exports_serves_and_exits_cleanly_on_sigterm():
    # a process of its own: it serves until SIGTERM, which is delivered to it
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "--seed", "3", "--speed", "60", "--assets", "BTC"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = [proc.stdout.readline().strip() for _ in range(8)]
        exports = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        wall_origin, sim_origin, speed = (float(x) for x in exports["UPDOWN_CLOCK"].split(","))
        assert speed == 60.0 and abs(wall_origin - time.time()) < 30
        assert sim_origin % 900 == 0  # the simulation starts on a window boundary

        # a client on the exported clock finds the simulator's current window where its arithmetic says
        now = RealClock.from_origins(wall_origin, sim_origin, speed).now()
        slug = f"btc-updown-15m-{int(now - now % 900)}"

        async def fetch() -> tuple[int, list]:
            async with aiohttp.ClientSession() as http:
                url = exports["UPDOWN_BINANCE_FUTURES_REST_URL"] + "/fapi/v1/klines"
                async with http.get(url, params={"symbol": "BTCUSDT", "interval": "1m", "limit": "5"}) as r:
                    status = r.status
                async with http.get(exports["UPDOWN_GAMMA_URL"] + "/events", params={"slug": slug}) as r:
                    return status, await r.json()

        status, events = asyncio.run(fetch())
        assert status == 200
        assert [e["slug"] for e in events] == [slug]
        assert set(exports) >= {
            "UPDOWN_GAMMA_URL", "UPDOWN_CLOB_URL", "UPDOWN_CLOB_WS_URL", "UPDOWN_RTDS_WS_URL",
            "UPDOWN_BINANCE_FUTURES_WS_URL", "UPDOWN_BINANCE_FUTURES_REST_URL", "UPDOWN_BINANCE_SPOT_WS_URL",
        }
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "args",
    [["--speed", "0"], ["--speed", "fast"], ["--assets", "BTC,DOGE"], ["--sim-faults", "explode=1"]],
)
def test_python_m_sim_bad_arguments_exit_2_with_one_sentence(args):
    result = call_main(sim_main, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
