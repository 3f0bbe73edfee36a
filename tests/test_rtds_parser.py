"""RTDS parser: Chainlink updates, the initial dump, the Binance-sourced topic, keepalives and garbage."""

import pytest

from streamers.binance import ParseError
from streamers.rtds import TOPIC_BINANCE, TOPIC_CHAINLINK, IndexPrice, asset_of_rtds_symbol, handle


def test_chainlink_update_gives_source_time_in_seconds():
    raw = ('{"topic":"crypto_prices_chainlink","type":"update","timestamp":1753314064237,'
           '"payload":{"symbol":"btc/usd","timestamp":1753314064000,"value":118250.12},"connection_id":"abc"}')
    assert handle(raw) == [IndexPrice(TOPIC_CHAINLINK, "btc/usd", 1753314064.0, 118250.12)]


def test_initial_dump_gives_every_point_in_order_and_accepts_string_values():
    raw = ('{"topic":"crypto_prices_chainlink","type":"subscribe","timestamp":1753314065000,'
           '"payload":{"symbol":"eth/usd","data":[{"timestamp":1753314063000,"value":"3650.5"},'
           '{"timestamp":1753314064000,"value":3651.25}]}}')
    prices = handle(raw)
    assert [(p.timestamp, p.value) for p in prices] == [(1753314063.0, 3650.5), (1753314064.0, 3651.25)]
    assert all(p.symbol == "eth/usd" for p in prices)


def test_binance_sourced_topic_is_parsed_but_labelled_apart():
    raw = ('{"topic":"crypto_prices","type":"update","timestamp":1753314064237,'
           '"payload":{"symbol":"solusdt","timestamp":1753314064213,"value":189.55}}')
    [p] = handle(raw)
    assert p.topic == TOPIC_BINANCE and asset_of_rtds_symbol(p.symbol) == "SOL"


def test_keepalive_text_is_ignored():
    for text in ("pong", "PONG", "ping", "", "  "):
        assert handle(text) == []


@pytest.mark.parametrize(
    "raw",
    ["nonsense", "[]", '{"topic":"activity","payload":{}}',
     '{"topic":"crypto_prices_chainlink","payload":{"symbol":"btc/usd","timestamp":1}}',
     '{"topic":"crypto_prices_chainlink","payload":{"symbol":"btc/usd","timestamp":1,"value":"abc"}}',
     '{"topic":"crypto_prices_chainlink","payload":{"symbol":"btc/usd","timestamp":1,"value":-5}}'],
)
def test_malformed_or_foreign_frames_raise_parse_error(raw):
    with pytest.raises(ParseError):
        handle(raw)


def test_rtds_symbols_map_to_assets():
    assert asset_of_rtds_symbol("btc/usd") == "BTC" and asset_of_rtds_symbol("xrpusdt") == "XRP"
