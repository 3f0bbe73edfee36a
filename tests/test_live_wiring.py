"""How live orders plug in: the engine runs a blocking broker off the event loop and cancels what rests at
the end; run.py builds the real LiveBroker from the environment (against the local fake CLOB) or refuses
with one sentence."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from eth_account import Account

import run
from engine.broker import PaperBroker
from engine.clock import VirtualClock
from engine.engine import Engine, EngineConfig
from engine.live_broker import LiveBroker
from sim.source import SimSource
from strategies import create_strategy
from streamers.market_data import MarketData
from tests.fake_clob import FakeClob


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


def test_run_builds_the_live_broker_from_the_environment_with_its_caps(clob, monkeypatch):
    account, funder = Account.create(), Account.create().address
    monkeypatch.setenv("UPDOWN_CLOB_URL", clob.url)
    monkeypatch.setenv("POLYMARKET_PRIVATE_KEY", account.key.hex())
    monkeypatch.setenv("POLYMARKET_FUNDER", funder)
    monkeypatch.setenv("POLYMARKET_SIGNATURE_TYPE", "2")

    broker = run.build_broker(_live_options("--size", "30", "--order-type", "FOK"))

    assert isinstance(broker, LiveBroker)
    assert (broker.max_total_dollars, broker.max_order_dollars, broker.order_type) == (20.0, 15.0, "FOK")
    assert broker.funder == funder
    assert any(path == "/auth/api-keys" for _, path in clob.requests)  # the session was proven at start


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "POLYMARKET_PRIVATE_KEY"),
        ({"POLYMARKET_SIGNATURE_TYPE": "0"}, "deposit wallet"),
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
        from engine.live_credentials import LiveBrokerFatal

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
