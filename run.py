#!/usr/bin/env python3
"""updown: trade Polymarket's 15-minute crypto Up/Down markets, and train the PPO agent while doing it.

    python run.py --strategy rl --train                 # train (embedded simulator by default)
    python run.py --strategy rl --train --load rl_model # resume training
    python run.py --strategy rl --load rl_model         # inference only, never writes the model
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from core.frames import ASSETS
from strategies import STRATEGY_NAMES

EXIT_OK, EXIT_RUNTIME, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """A problem with what the user asked for: printed as one sentence, exit code 2."""


class CliParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence, no usage dump
        raise BadInput(f"{message} (see python run.py --help)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text}")
    return value


def discount_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a discount in (0, 1], got {text}")
    return value


def latency_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds, got {text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite latency of 0 ms or more, got {text}")
    return value


def share_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a share from 0 up to (not including) 1, got {text}")
    return value


def speed_arg(text: str) -> float | str:
    return "max" if text == "max" else positive_float(text)


def assets_arg(text: str) -> tuple[str, ...]:
    names = tuple(a.strip().upper() for a in text.split(",") if a.strip())
    unknown = [a for a in names if a not in ASSETS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown asset {', '.join(unknown) or text!r}; choose from {','.join(ASSETS)}"
        )
    return tuple(a for a in ASSETS if a in names)


def build_parser() -> CliParser:
    p = CliParser(prog="run.py", description="Polymarket 15-minute Up/Down trading bot with built-in PPO.")
    p.add_argument("--strategy", required=True, choices=STRATEGY_NAMES, help="decision rule to trade with")
    p.add_argument("--train", action="store_true", help="learn online (rl only); saves the model on exit")
    p.add_argument("--load", metavar="NAME", help="load NAME.safetensors + NAME_stats.npz (rl only)")
    p.add_argument("--save", metavar="NAME", help="where a training run saves (default: --load name, else rl_model)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --train replace an existing model of the --save name with a new one")
    p.add_argument("--features", choices=("standard", "extended"), default=None,
                   help="features a new rl model sees: the published 18 (default) or 25 with quotes vs the index")
    p.add_argument("--gamma", type=discount_arg, default=None,
                   help="discount per decision of a new rl model (default 0.95, the published value; 1.0 = the "
                        "window's undiscounted PnL, see TRAINING_JOURNAL.md); a loaded model keeps its own")
    p.add_argument("--size", type=positive_float, default=100.0, help="trade size in USD; a position is size x 0.5")
    p.add_argument("--source", choices=("live", "sim", "replay", "mix"), default="sim",
                   help="market data source (mix: simulator and recorded windows alternate, for training)")
    p.add_argument("--replay", metavar="PATH",
                   help="recordings to replay (--source replay or mix): a file, a folder or a quoted glob")
    p.add_argument("--shuffle-windows", action="store_true",
                   help="replay every complete recorded window as its own episode, in a random order from --seed")
    p.add_argument("--epochs", type=positive_int, default=1, metavar="N",
                   help="pass over the recordings N times (default 1)")
    p.add_argument("--sim-share", type=share_arg, default=0.5, metavar="S",
                   help="with --source mix: the share of windows taken from the simulator (default 0.5)")
    p.add_argument("--record", metavar="FILE",
                   help="record every received frame (JSON Lines, .gz to compress); time fields such as "
                        "data/%%Y%%m%%d-%%H.jsonl.gz start a new file whenever the name changes (UTC)")
    p.add_argument("--seed", type=int, default=None, help="seed for the simulator and the strategy")
    p.add_argument("--speed", type=speed_arg, default=None, help="'max' or a multiple of real time (sim, replay)")
    p.add_argument("--markets", type=positive_int, default=None, help="stop after N 15-minute windows")
    p.add_argument("--duration", type=positive_float, default=None, help="stop after N seconds of clock time")
    p.add_argument("--assets", type=assets_arg, default=ASSETS, help="comma list from BTC,ETH,SOL,XRP")
    p.add_argument("--log-dir", default="logs", help="folder for the CSV logs (default logs/)")
    p.add_argument("--report", metavar="FILE.json", help="write the run's figures as JSON at exit")
    p.add_argument("--charts", metavar="DIR", help="draw PNG charts of the run into DIR at exit (needs matplotlib)")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="write TensorBoard scalars into DIR: every PPO update's metrics and every window's PnL "
                        "(needs tensorboardX; the CSV logs stay)")
    p.add_argument("--fill", choices=("book", "mid"), default="book", help="paper fills: walk the book, or mid")
    p.add_argument("--latency-ms", type=latency_arg, default=None, metavar="MS",
                   help="paper orders fill against the book MS after the decision (default 300: the venue's "
                        "~250 ms taker delay plus network; 0 fills at once)")
    p.add_argument("--max-slippage", type=positive_float, default=0.05, metavar="PRICE",
                   help="how far past the best price an order's limit may go, live or delayed paper (default 0.05)")
    p.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                   help="also save every N PPO updates, keeping timestamped backups")
    p.add_argument("--keep-backups", type=positive_int, default=5, metavar="K",
                   help="how many timestamped backups --checkpoint-every keeps (default 5)")
    p.add_argument("--sim-faults", default=None, metavar="SPEC",
                   help="simulator fault injection, e.g. drop=0.01,garbage=0.001,stall=0.001")
    p.add_argument("--sim-profile", default=None, metavar="NAME|FILE",
                   help="simulator market model: realistic (default; calibrated to real recordings), lagged (a "
                        "what-if whose maker trails the index by 1-8 s, not real) or a JSON profile from sim.fit")
    p.add_argument("--no-tui", action="store_true", help="plain console output instead of the live dashboard")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="with --train on sim or replay: N market streams in worker processes feed one learner "
                        "(default 1: one process; see README, Parallel rollouts)")
    live = p.add_argument_group("live orders (real money; credentials from POLYMARKET_* variables, see README)")
    live.add_argument("--live", action="store_true",
                      help="send real orders to Polymarket's CLOB V2 instead of paper fills (needs --source live)")
    live.add_argument("--max-total-dollars", type=positive_float, default=None, metavar="USD",
                      help="required with --live: stop opening positions once entries have committed this much")
    live.add_argument("--max-order-dollars", type=positive_float, default=None, metavar="USD",
                      help="cap per order (default: the position size, --size x 0.5)")
    live.add_argument("--order-type", choices=("FAK", "FOK"), default="FAK",
                      help="FAK fills what it can and cancels the rest (default); FOK all or nothing")
    return p


@dataclass
class Options:
    args: argparse.Namespace
    speed: float | str
    save_name: str | None
    profile: object = None  # the SimProfile of a --source sim run


def validate(args: argparse.Namespace) -> Options:
    if args.strategy != "rl":
        if args.train:
            raise BadInput(f"--train needs --strategy rl; {args.strategy} is a fixed rule and does not learn")
        if (args.load or args.save is not None or args.overwrite or args.checkpoint_every or args.features
                or args.gamma is not None):
            raise BadInput("--load, --save, --overwrite, --checkpoint-every, --features and --gamma apply only to "
                           "--strategy rl")
    if args.load and args.features:
        raise BadInput("--features applies to a new model; a loaded model keeps the feature set it was trained on")
    if args.load and args.gamma is not None:
        raise BadInput("--gamma applies to a new model; a loaded model keeps the gamma saved in its stats")
    if args.gamma is not None and not args.train:
        raise BadInput("--gamma is a training setting; add --train")
    if args.source in ("replay", "mix"):
        if not args.replay:
            raise BadInput(f"--source {args.source} needs --replay PATH (a recording, a folder or a glob)")
        from streamers.library import resolve
        from streamers.recording import RecordingError

        try:
            resolve(args.replay)
        except RecordingError as exc:
            raise BadInput(str(exc).rstrip(".")) from None
        if args.record and (args.epochs > 1 or args.shuffle_windows or args.source == "mix"):
            raise BadInput("--record writes one stream in time order; it cannot record --epochs, "
                           "--shuffle-windows or --source mix")
    else:
        if args.replay:
            raise BadInput("--replay PATH is only used with --source replay or mix")
        if args.shuffle_windows or args.epochs != 1:
            raise BadInput("--shuffle-windows and --epochs apply to recordings (--source replay or mix)")
    if args.source != "mix" and args.sim_share != 0.5:
        raise BadInput("--sim-share applies only to --source mix")
    if args.source == "mix" and args.speed not in (None, "max"):
        raise BadInput("--source mix runs at --speed max (it switches between simulated and recorded windows)")
    if args.source == "live" and args.speed not in (None, 1.0):
        raise BadInput("--speed applies to --source sim and replay; live markets run in real time")
    if args.live:
        if args.source != "live":
            raise BadInput("--live sends real orders and needs --source live (sim and replay trade on paper)")
        if args.max_total_dollars is None:
            raise BadInput("--live needs --max-total-dollars USD, the most this run may commit to entries")
        if args.fill != "book":
            raise BadInput("--fill chooses how paper orders fill; with --live the venue fills them")
        if args.latency_ms is not None:
            raise BadInput("--latency-ms delays paper fills; with --live the venue supplies the real latency")
    elif args.max_total_dollars is not None or args.max_order_dollars is not None:
        raise BadInput("--max-total-dollars and --max-order-dollars apply only with --live")
    if args.max_slippage >= 1:
        raise BadInput("--max-slippage is a price distance below 1 (e.g. 0.05)")
    if args.sim_faults and args.source != "sim":
        raise BadInput("--sim-faults applies only to --source sim")
    if args.sim_faults and args.speed in (None, "max"):
        from sim.faults import FaultSpec

        try:
            faults = FaultSpec.parse(args.sim_faults)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        if faults.drop or faults.stall:
            raise BadInput("--sim-faults drop and stall act on the simulator's websocket connections, which "
                           "--speed max does not use; run them with --speed X (e.g. --speed 60), or keep only "
                           "garbage= at --speed max")
    if args.sim_profile and args.source not in ("sim", "mix"):
        raise BadInput("--sim-profile applies only to --source sim or mix (a recording or the live venues bring "
                       "their own market)")
    profile = None
    if args.source in ("sim", "mix"):
        from sim.profiles import ProfileError, load_profile

        try:
            profile = load_profile(args.sim_profile)
        except ProfileError as exc:
            raise BadInput(str(exc)) from None
    if args.workers > 1:
        from engine.rollouts import refusal

        if problem := refusal(args):
            raise BadInput(problem)
    if args.checkpoint_every and not args.train:
        raise BadInput("--checkpoint-every needs --train (inference never writes the model)")
    for flag, given in (("--save", args.save is not None), ("--overwrite", args.overwrite)):
        if given and not args.train:
            raise BadInput(f"{flag} needs --train (inference never writes the model)")
    if args.save == "":
        raise BadInput("--save needs a model name, e.g. --save rl_model")
    if args.load:
        for suffix in (".safetensors", "_stats.npz"):
            if args.load.endswith(suffix):
                raise BadInput(f"give --load the model name without extension, e.g. --load {args.load[: -len(suffix)]}")
    if args.charts:
        check_charts(args.charts)
    if args.tensorboard:
        from engine.tensorboard import TensorBoardError, check_folder

        try:
            check_folder(args.tensorboard)
        except TensorBoardError as exc:
            raise BadInput(str(exc)) from None
    speed = args.speed if args.speed is not None else ("max" if args.source in ("sim", "replay", "mix") else 1.0)
    save_name = None
    if args.strategy == "rl" and args.train:
        save_name = args.save or args.load or "rl_model"
        if Path(save_name + ".safetensors").is_dir() or Path(save_name).is_dir():
            raise BadInput(f"--save {save_name} names a folder; give a file name without extension")
        refuse_replacing_a_model(save_name, args.load, args.overwrite)
        check_writable_folder("--save", Path(save_name).parent, create=False)
    check_writable_folder("--log-dir", Path(args.log_dir), create=True)
    if args.report:
        check_writable_file("--report", Path(args.report), create_folder=True)
    if args.record and "%" in args.record:  # a rotating series: its fixed folder must take new files
        fixed = list(itertools.takewhile(lambda part: "%" not in part, Path(args.record).parent.parts))
        check_writable_folder("--record", Path(*fixed) if fixed else Path("."), create=False)
    elif args.record:
        check_writable_file("--record", Path(args.record), create_folder=False)
    return Options(args=args, speed=speed, save_name=save_name, profile=profile)


def refuse_replacing_a_model(save_name: str, load: str | None, overwrite: bool) -> None:
    """A training run never replaces a model it did not load, unless told to with --overwrite."""
    from persistence import checkpoint_paths

    existing = [p for p in checkpoint_paths(save_name) if p.exists()]
    if overwrite or not existing:
        return
    if load is None:
        raise BadInput(f"a model named {save_name} already exists ({existing[0]}); add --load {save_name} to "
                       f"resume training it, or --overwrite to replace it with a new one")
    if checkpoint_paths(load)[0].resolve() != checkpoint_paths(save_name)[0].resolve():
        raise BadInput(f"a model named {save_name} already exists ({existing[0]}) and this run would replace it "
                       f"with one trained from {load}; give --save another name, or add --overwrite to replace it")


def check_writable_folder(flag: str, folder: Path, *, create: bool) -> None:
    """Create a file in `folder` and remove it: the only check that holds for every user and file system."""
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"{flag}: cannot create the folder {folder}: {exc.strerror or exc}") from None
    elif not folder.is_dir():
        reason = "is not a folder" if folder.exists() else "does not exist"
        raise BadInput(f"{flag}: {folder} {reason}; create the folder or choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".updown-write-check-"):
            pass
    except OSError as exc:
        raise BadInput(f"{flag}: cannot write in the folder {folder}: {exc.strerror or exc}") from None


def check_writable_file(flag: str, path: Path, *, create_folder: bool) -> None:
    """An existing file opens for writing (it is rewritten in place), else its folder takes a new file."""
    if path.is_dir():
        raise BadInput(f"{flag} {path} is a folder; give a file name")
    if not path.exists():
        check_writable_folder(flag, path.parent, create=create_folder)
        return
    try:  # append and non-blocking: opening changes nothing in the file and never waits on a pipe
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
    except OSError as exc:
        raise BadInput(f"{flag}: cannot write {path}: {exc.strerror or exc}") from None


def check_charts(folder: str) -> None:
    """--charts is drawn at the end of the run: fail now, not after hours of training."""
    from benchmarks.charts import require_matplotlib

    try:
        require_matplotlib()
    except ImportError as exc:
        raise BadInput(f"--charts: {exc}") from None
    check_writable_folder("--charts", Path(folder), create=True)


def draw_charts(report: dict, folder: str) -> list[str]:
    """The run's charts from its CSV logs; never raising, since the run itself is done and saved."""
    from benchmarks.charts import NothingToDraw, draw_run

    logs = report.get("logs") or {}
    if not logs:
        print("[charts] no CSV logs were written, so there is nothing to draw", file=sys.stderr)
        return []
    trades = Path(logs["trades"])
    name = trades.stem.removeprefix("trades_")
    try:
        return [str(p) for p in draw_run(trades, Path(logs["updates"]), Path(folder), name)]
    except NothingToDraw as exc:
        print(f"[charts] {exc}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"[charts] could not draw the charts into {folder}: {exc}", file=sys.stderr)
    return []


def build_strategy(opts: Options):
    from persistence import CheckpointError
    from strategies import create_strategy

    args = opts.args
    if args.strategy == "rl":
        from strategies.rl_mlx import RLStrategy, config_for_features

        try:
            if args.load:
                strategy = RLStrategy.from_checkpoint(args.load, seed=args.seed)
            else:
                config = config_for_features(args.features or "standard")
                if args.gamma is not None:
                    config = replace(config, gamma=args.gamma)
                strategy = RLStrategy(config, seed=args.seed)
        except CheckpointError as exc:
            raise BadInput(str(exc)) from None
        for note in getattr(strategy, "load_notes", None) or ():
            print(f"[load] {note}", file=sys.stderr)
        if args.train:
            strategy.train()
        else:
            strategy.eval()
        return strategy
    return create_strategy(args.strategy, seed=args.seed)


async def build_source(opts: Options, stack: contextlib.AsyncExitStack):
    """Return (source, clock) for the chosen --source."""
    from core.clock import RealClock, VirtualClock

    args = opts.args
    if args.source in ("replay", "mix"):
        from streamers.library import Library, LibrarySource, MixSource
        from streamers.recording import RecordingError

        seed = 0 if args.seed is None else args.seed
        try:
            source = LibrarySource(Library.open(args.replay), opts.speed, epochs=args.epochs,
                                   shuffle_seed=seed if args.shuffle_windows else None)
            if args.source == "mix":
                from sim.source import SimSource

                source = MixSource(source, lambda i: SimSource(seed + i, assets=args.assets, profile=opts.profile),
                                   args.sim_share)
        except RecordingError as exc:
            raise BadInput(str(exc)) from None
        stack.push_async_callback(source.close)
        return source, VirtualClock()
    if args.source == "sim":
        faults = None
        if args.sim_faults:
            from sim.faults import FaultSpec

            try:
                faults = FaultSpec.parse(args.sim_faults)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
        seed = 0 if args.seed is None else args.seed
        if opts.speed == "max":
            from sim.source import SimSource

            source = SimSource(seed, assets=args.assets, faults=faults, profile=opts.profile)
            stack.push_async_callback(source.close)
            return source, VirtualClock()
        from sim.servers import SimServers
        from streamers.live import LiveSource

        servers = SimServers(seed, float(opts.speed), assets=args.assets, faults=faults, profile=opts.profile)
        endpoints = await servers.start()
        stack.push_async_callback(servers.stop)
        clock = servers.clock
        source = LiveSource(clock, args.assets, endpoints_from_mapping(endpoints))
        stack.push_async_callback(source.close)
        return source, clock
    from streamers.live import LiveSource, VenueUnreachable

    clock = clock_from_env() or RealClock()
    source = LiveSource(clock, args.assets)
    stack.push_async_callback(source.close)
    try:
        await source.check(timeout=10.0)
    except VenueUnreachable as exc:
        raise BadInput(str(exc)) from None
    return source, clock


def build_broker(opts: Options):
    """None (paper fills) or the live broker, connected, its credentials, caps, pUSD balance and approvals
    checked before the first decision."""
    args = opts.args
    if not args.live:
        return None
    try:
        from venues.polymarket.broker import LiveBroker, LiveBrokerError
    except ImportError:
        raise BadInput("--live needs py-clob-client-v2: pip install -e '.[live]'") from None
    try:
        broker = LiveBroker.from_env(
            max_order_dollars=args.max_order_dollars or args.size * 0.5,
            max_total_dollars=args.max_total_dollars,
            max_slippage=args.max_slippage,
            order_type=args.order_type,
        )
        broker.connect()
        balance = broker.check_account()
    except LiveBrokerError as exc:
        raise BadInput(str(exc).rstrip(".")) from None
    caps = broker.caps
    print(f"[live] sending real orders as {broker.funder} (${balance:,.2f} pUSD; cap ${caps.max_total_dollars:,.2f} "
          f"in entries, ${caps.max_order_dollars:,.2f} per order, fees included, {caps.order_type})", file=sys.stderr)
    return broker


def source_header(opts: Options) -> dict:
    """What produced a run's data: a recording's first line and the report's `data_source`."""
    args = opts.args
    header: dict = {"source": args.source, "assets": list(args.assets)}
    if args.source in ("sim", "mix"):
        header["seed"] = 0 if args.seed is None else args.seed
        header["sim_profile"] = opts.profile.to_dict()
    if args.source in ("replay", "mix"):
        header["recording"] = args.replay
    return header


def endpoints_from_mapping(mapping: dict[str, str]):
    from core.endpoints import Endpoints

    return Endpoints.from_env(mapping)


def clock_from_env():
    """`python -m sim` prints UPDOWN_CLOCK=wall_origin,sim_origin,speed so live clients share its time."""
    from core.clock import RealClock

    text = os.environ.get("UPDOWN_CLOCK")
    if not text:
        return None
    try:
        wall_origin, sim_origin, speed = (float(x) for x in text.split(","))
    except ValueError:
        raise BadInput(f"UPDOWN_CLOCK={text!r} is not 'wall_origin,sim_origin,speed'") from None
    return RealClock.from_origins(wall_origin=wall_origin, sim_origin=sim_origin, speed=speed)


def print_window(snap: dict) -> None:
    """--no-tui: one line per resolved window, flushed so `tee` and log files see it at once."""
    from engine.dashboard import window_line

    print(window_line(snap), flush=True)


def save_model(strategy, name: str) -> bool:
    """Save, never raising: a failed save keeps the previous checkpoint and says so."""
    from persistence import CheckpointError

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not interrupt a save
    try:
        strategy.save(name)
        return True
    except CheckpointError as exc:
        print(f"[save] {exc}", file=sys.stderr)
        return False
    finally:
        signal.signal(signal.SIGINT, previous)


async def run(opts: Options) -> int:
    from engine.engine import Engine, EngineConfig
    from engine.report import format_outputs, format_summary
    from streamers.market_data import MarketData

    args = opts.args
    strategy = build_strategy(opts)
    saved = False
    report: dict | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            source, clock = await build_source(opts, stack)
            broker = build_broker(opts)
            market_data = MarketData(assets=args.assets)
            recorder = None
            if args.record:
                from streamers.recording import Recorder, RecordingError, RotatingRecorder, is_pattern

                try:
                    if is_pattern(args.record):
                        recorder = RotatingRecorder(args.record, source_header(opts), market_data.restate)
                    else:
                        recorder = Recorder(args.record, header=json.dumps(source_header(opts)))
                except RecordingError as exc:
                    raise BadInput(str(exc)) from None
                stack.callback(recorder.close)

            tensorboard = None
            if args.tensorboard:
                from engine.tensorboard import TensorBoardLog

                tensorboard = TensorBoardLog(args.tensorboard)
                stack.callback(tensorboard.close)

            def checkpoint() -> None:
                from persistence import CheckpointError, write_backup

                if save_model(strategy, opts.save_name):
                    try:
                        write_backup(opts.save_name, keep=args.keep_backups)
                    except CheckpointError as exc:
                        print(f"[backup] {exc}", file=sys.stderr)

            cfg = EngineConfig(
                size=args.size,
                fill=args.fill,
                latency_ms=EngineConfig.latency_ms if args.latency_ms is None else args.latency_ms,
                max_slippage=args.max_slippage,
                max_windows=args.markets,
                duration=args.duration,
                assets=args.assets,
                train=bool(args.train),
                log_dir=args.log_dir,
                checkpoint_every=args.checkpoint_every or 0,
                on_checkpoint=checkpoint if args.checkpoint_every else None,
                recorder=recorder,
                seed=args.seed,
                source_name=args.source,
                strategy_name=args.strategy,
                live_console=not args.no_tui,
                on_window=print_window if args.no_tui else None,
                tensorboard=tensorboard,
            )
            engine = Engine(strategy, source, clock, market_data, cfg, broker=broker)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, engine.stop)
            try:
                report = await engine.run()
                if recorder is not None:
                    recorder.close()  # now, so that a last write failing on a full disk is in the report
                    report["output_error"] = engine.output_error()
            finally:
                # the run is ending: a further Ctrl+C or SIGTERM must not cut the save or the exit short, so
                # both go from the engine's handler to ignored with no moment of Python's default between
                stopping = {signal.SIGINT, signal.SIGTERM}
                signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
                for sig in stopping:
                    loop.remove_signal_handler(sig)
                    signal.signal(sig, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)
    finally:
        if opts.save_name is not None:
            saved = save_model(strategy, opts.save_name)
            if saved and report is None:  # otherwise the summary's list of outputs names it
                print(f"[rl] model saved to {opts.save_name}.safetensors + {opts.save_name}_stats.npz")
    code = EXIT_OK
    if report is not None:
        report["model_saved"] = opts.save_name if saved else None
        report["model_loaded"] = args.load
        report["recording"] = args.record
        report["tensorboard"] = args.tensorboard
        if recorder is not None and hasattr(recorder, "paths"):
            report["recording_files"] = recorder.paths
        if hasattr(source, "summary"):
            report["library"] = source.summary()
        report["data_source"] = source_header(opts)
        print(format_summary(report))
        if args.charts:
            report["charts"] = draw_charts(report, args.charts)
        if args.report:
            try:
                Path(args.report).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
            except OSError as exc:
                print(f"updown: cannot write the report {args.report}: {exc.strerror or exc}", file=sys.stderr)
                code = EXIT_RUNTIME
        print(format_outputs(report, args.report if code == EXIT_OK else None))
        if report["output_error"]:
            print(f"updown: stopped: {report['output_error']}", file=sys.stderr)
            code = EXIT_RUNTIME
    if opts.save_name is not None and not saved:
        print(f"updown: the model could not be saved to {opts.save_name}; the previous checkpoint is unchanged",
              file=sys.stderr)
        return EXIT_RUNTIME
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        opts = validate(build_parser().parse_args(argv))
        if opts.args.workers > 1:
            from engine.rollouts import train_in_workers

            return train_in_workers(opts, build_strategy(opts), save_model, source_header(opts))
        return asyncio.run(run(opts))
    except BadInput as exc:
        print(f"updown: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        if os.environ.get("UPDOWN_DEBUG"):
            traceback.print_exc()
        if getattr(exc, "one_sentence", False):  # e.g. the venue refused our credentials mid-run
            print(f"updown: stopped: {exc}", file=sys.stderr)
            return EXIT_RUNTIME
        print(f"updown: stopped by an unexpected error: {type(exc).__name__}: {exc} "
              "(set UPDOWN_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
