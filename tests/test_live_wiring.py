"""How live orders plug in: the engine runs a blocking broker off the event loop and cancels what rests at
the end; run.py builds the real LiveBroker from the environment (against the local fake CLOB), checks the
funder's pUSD and approvals before the first decision or refuses with one sentence; a live run ends with
its summary and its report; discovery refuses markets of a version the bot cannot sign for."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path

import pytest
from eth_account import Account

import run
from engine.broker import PaperBroker
from engine.clock import VirtualClock
from engine.engine import Engine, EngineConfig
from sim.source import SimSource
from strategies import create_strategy
from streamers.discovery import market_slug
from streamers.market_data import MarketData
from tests.fake_clob import FakeClob, FakeMarket
from tests.test_discovery import START, FakeGamma, run_discovery
from venues.polymarket.broker import LiveBroker


class ThreadRecordingBroker(PaperBroker):
    """Paper fills, but flagged as blocking like LiveBroker; remembers which thread ran each call."""

    blocking = True

    def __init__(self) -> None:
        super().__init__("book")
        self.threads: set[int] = set()
        self.closed_all = 0

    def execute(self, *args):
        self.threads.add(threading.get_ident())
        return super().execute(*args)

    def close_at_book(self, *args):
        self.threads.add(threading.get_ident())
        return super().close_at_book(*args)

    def close_all(self) -> int:
        self.threads.add(threading.get_ident())
        self.closed_all += 1
        return 0


def _sim_report(tmp_path: Path, run_id: str, broker: PaperBroker | None) -> tuple[dict, int]:
    async def main() -> tuple[dict, int]:
        # a blocking broker is never delayed (the venue supplies the latency): compare undelayed paper fills
        config = EngineConfig(assets=("BTC",), max_windows=1, log_dir=tmp_path, run_id=run_id, seed=5,
                              latency_ms=0)
        engine = Engine(create_strategy("fair_value", seed=5), SimSource(5, assets=("BTC",)), VirtualClock(),
                        MarketData(assets=("BTC",)), config, broker=broker)
        return await engine.run(), threading.get_ident()

    return asyncio.run(main())


def test_a_blocking_broker_runs_in_a_worker_thread_with_the_same_results_and_is_closed_at_the_end(tmp_path):
    paper, _ = _sim_report(tmp_path, "paper", None)
    broker = ThreadRecordingBroker()
    threaded, loop_thread = _sim_report(tmp_path, "threaded", broker)

    assert paper["trades"] > 0
    for key in ("trades", "wins", "pnl", "fees", "decisions", "windows"):
        assert threaded[key] == paper[key], key
    assert broker.threads and loop_thread not in broker.threads  # never on the event loop's thread
    assert broker.closed_all == 1
    assert threaded["latency_ms"] is None and paper["latency_ms"] == 0


@pytest.fixture
def clob():
    with FakeClob() as fake:
        yield fake


def _live_options(*extra: str) -> run.Options:
    argv = ["--strategy", "fair_value", "--source", "live", "--live", "--max-total-dollars", "20", *extra]
    return run.validate(run.build_parser().parse_args(argv))


def _live_env(monkeypatch, clob: FakeClob, usdc: float = 100.0, approve: bool = True):
    """A signer and its Safe wallet, set up on the fake venue as the README's one-time setup says."""
    account, funder = Account.create(), Account.create().address
    clob.link(account.address, funder)
    clob.fund(funder, usdc)
    if approve:
        clob.approve(funder)
    monkeypatch.setenv("UPDOWN_CLOB_URL", clob.url)
    monkeypatch.setenv("POLYMARKET_PRIVATE_KEY", account.key.hex())
    monkeypatch.setenv("POLYMARKET_FUNDER", funder)
    monkeypatch.setenv("POLYMARKET_SIGNATURE_TYPE", "2")
    return account, funder


def test_run_builds_the_live_broker_from_the_environment_with_its_caps(clob, monkeypatch, capsys):
    _, funder = _live_env(monkeypatch, clob)

    broker = run.build_broker(_live_options("--size", "30", "--order-type", "FOK"))

    assert isinstance(broker, LiveBroker)
    assert (broker.caps.max_total_dollars, broker.caps.max_order_dollars, broker.caps.order_type) == (20.0, 15.0, "FOK")
    assert broker.funder == funder and broker.balance == pytest.approx(100.0)
    assert any(path == "/auth/api-keys" for _, path in clob.requests)  # the session was proven at start
    assert "$100.00 pUSD" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("usdc", "approve", "needle", "how"),
    [(100.0, False, "has not approved the", "set the approvals once (README"), (0.4, True, "holds $0.40 pUSD", "deposit")],
)
def test_a_funder_without_pusd_or_approvals_exits_2_with_one_sentence(clob, monkeypatch, capsys, tmp_path, usdc,
                                                                      approve, needle, how):
    _live_env(monkeypatch, clob, usdc=usdc, approve=approve)

    async def no_feeds(opts, stack):
        return SimSource(1, assets=("BTC",), background=False), VirtualClock()

    monkeypatch.setattr(run, "build_source", no_feeds)
    code = run.main(["--strategy", "fair_value", "--source", "live", "--live", "--max-total-dollars", "20",
                     "--no-tui", "--log-dir", str(tmp_path)])

    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(err) == 1 and needle in err[0] and how in err[0]
    assert not any(path == "/order" for _, path in clob.requests)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "POLYMARKET_PRIVATE_KEY"),
        ({"POLYMARKET_SIGNATURE_TYPE": "0"}, "deposit wallet"),
        ({"POLYMARKET_SIGNATURE_TYPE": "3"}, "(deposit wallet) cannot trade through py-clob-client-v2"),
    ],
)
def test_missing_or_refused_credentials_are_one_sentence_and_never_show_the_key(clob, monkeypatch, env, needle):
    account = Account.create()
    monkeypatch.setenv("UPDOWN_CLOB_URL", clob.url)
    for name in ("POLYMARKET_PRIVATE_KEY", "POLYMARKET_FUNDER", "POLYMARKET_SIGNATURE_TYPE"):
        monkeypatch.delenv(name, raising=False)
    if env:
        monkeypatch.setenv("POLYMARKET_PRIVATE_KEY", account.key.hex())
        monkeypatch.setenv("POLYMARKET_FUNDER", Account.create().address)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    with pytest.raises(run.BadInput) as refused:
        run.build_broker(_live_options())

    message = str(refused.value)
    assert needle in message and "\n" not in message
    assert account.key.hex().removeprefix("0x") not in message


class RefusedMidRunBroker(PaperBroker):
    """Trades on paper until the venue refuses the credentials, as a revoked API key would."""

    blocking = True

    def execute(self, *args):
        from venues.polymarket.credentials import LiveBrokerFatal

        raise LiveBrokerFatal("the CLOB refused the API credentials (401) while trading.")


def test_a_fatal_venue_refusal_mid_run_saves_the_model_and_exits_1_with_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "build_broker", lambda opts: RefusedMidRunBroker())
    name = str(tmp_path / "model")
    code = run.main(["--strategy", "rl", "--train", "--markets", "1", "--seed", "2", "--assets", "BTC",
                     "--no-tui", "--save", name, "--log-dir", str(tmp_path / "logs")])

    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1
    assert err == ["updown: stopped: the CLOB refused the API credentials (401) while trading."]
    assert Path(name + ".safetensors").is_file() and Path(name + "_stats.npz").is_file()


def _sim_venue(clob: FakeClob, source: SimSource) -> None:
    """The fake CLOB lists the simulator's markets and matches against the simulator's books (the engine's
    view, one frame ahead at most), ticks included."""
    sim = source.market

    def market(cid: str) -> FakeMarket | None:
        body = sim.clob_market_json(cid)
        if body is None:
            return None
        d = json.loads(body)
        return FakeMarket(cid, d["tokens"][0]["token_id"], d["tokens"][1]["token_id"],
                          tick=f"{d['minimum_tick_size']:g}", min_size=float(d["minimum_order_size"]))

    def liquidity(token: str) -> tuple[list, list]:
        body = sim.book_json(token)
        if body is None:
            return [], []
        d = json.loads(body)
        clob.markets[clob._token_market[token].condition_id].tick = f"{float(d['tick_size']):g}"
        return ([(float(x["price"]), float(x["size"])) for x in d["bids"]],
                [(float(x["price"]), float(x["size"])) for x in d["asks"]])

    clob.market_source = market
    clob.liquidity = liquidity


def test_a_live_run_ends_with_its_summary_and_its_report(clob, monkeypatch, capsys, tmp_path):
    _, funder = _live_env(monkeypatch, clob, usdc=100.0)
    clob.delay_next(3)  # some taker orders are held by the venue, as on crypto markets
    clob.delay_seconds = 0.0
    source = SimSource(8, assets=("BTC",), background=False)
    _sim_venue(clob, source)

    async def sim_feeds(opts, stack):
        return source, VirtualClock()

    monkeypatch.setattr(run, "build_source", sim_feeds)
    report_path = tmp_path / "report.json"
    code = run.main(["--strategy", "fair_value", "--source", "live", "--live", "--max-total-dollars", "20",
                     "--size", "10", "--markets", "1", "--assets", "BTC", "--seed", "8", "--no-tui",
                     "--log-dir", str(tmp_path / "logs"), "--report", str(report_path)])

    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(report_path.read_text())
    skipped = report["skipped_orders"]
    assert isinstance(skipped["rejected"], dict) and isinstance(skipped["unsold_shares"], float)
    assert isinstance(skipped["still_held"], list)
    assert report["trades"] > 0 and report["source"] == "live"
    assert "skipped orders" in out and "PnL $" in out
    spent = 100.0 - clob.usdc(funder)  # what the wallet paid, sales received back included
    buys = sum((t.cash + t.fee) / 1e6 for t in clob.trades.values() if t.side == "BUY")
    assert buys <= 20.0 and spent <= 20.0  # fees included, whatever was delayed
    assert set(clob.trade_statuses()) == {"CONFIRMED"}  # the run waited for settlement at its end


def test_discovery_skips_a_market_of_another_version_once(caplog):
    async def scenario():
        async with FakeGamma() as gamma:
            gamma.add("BTC", START)
            gamma.add("ETH", START)
            gamma.events[market_slug("ETH", START)]["markets"][0]["version"] = "v2"
            gamma.events[market_slug("BTC", START)]["markets"][0]["version"] = "v1"
            d = await run_discovery(gamma, VirtualClock(START + 1), assets=("BTC", "ETH"))
            async with d.session:
                await d.refresh()
                await d.refresh()
            return [m.asset for m in d.markets], [slug for _, _, slug in gamma.requests]

    caplog.set_level(logging.WARNING)
    markets, slugs = asyncio.run(scenario())
    assert markets == ["BTC"]
    assert slugs.count(market_slug("ETH", START)) == 1  # asked once, then left alone
    assert sum("version 'v2'" in r.getMessage() for r in caplog.records) == 1


def test_the_summary_reads_the_live_brokers_counts():
    from engine.report import format_summary
    from streamers.frames import MarketInfo
    from venues.polymarket.broker import LiveSkipCounts

    counts = LiveSkipCounts(below_min_size=2, exposure_cap=3, unsold_shares=12.5)
    counts.refused("no_match")
    counts.refused("trade_failed")
    counts.hold(MarketInfo("ETH", "0xc", "1", "2", 0, 900, None, 0.01, 5.0, 0.07), "2", 12.5, "unsold at shutdown")

    summary = format_summary({"skipped_orders": json.loads(json.dumps(counts.to_dict()))})

    assert "skipped orders 7" in summary
    assert "skipped orders: below_min_size 2, exposure_cap 3; refused by the venue: no_match 1, trade_failed 1" in summary
    assert "still held on the venue, outside the PnL: ETH DOWN 12.50 shares (unsold at shutdown)" in summary
