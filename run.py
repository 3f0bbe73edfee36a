#!/usr/bin/env python3
"""updown: trade Polymarket's 15-minute crypto Up/Down markets, and train the PPO agent while doing it.

    python run.py --strategy rl --train                 # train (embedded simulator by default)
    python run.py --strategy rl --train --load rl_model # resume training
    python run.py --strategy rl --load rl_model         # inference only, never writes the model
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from run_args import BadInput, Options, build_parser, validate

EXIT_OK, EXIT_RUNTIME, EXIT_BAD_INPUT = 0, 1, 2


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
    seed = 0 if args.seed is None else args.seed
    faults = opts.faults
    if args.source in ("replay", "mix") or (args.source == "sim" and opts.speed == "max"):
        from engine.sources import virtual_source
        from streamers.recording import RecordingError

        try:
            source = virtual_source(args.source, seed=seed, assets=args.assets, profile=opts.profile,
                                    recordings=args.replay, speed=opts.speed, epochs=args.epochs,
                                    shuffle=args.shuffle_windows, sim_share=args.sim_share, faults=faults)
        except RecordingError as exc:
            raise BadInput(str(exc)) from None
        stack.push_async_callback(source.close)
        return source, VirtualClock()
    if args.source == "sim":
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


def save_checkpoint(strategy, opts: Options) -> None:
    """`--checkpoint-every`: save the model, then keep a timestamped backup of it (`--keep-backups`)."""
    from persistence import CheckpointError, write_backup

    if save_model(strategy, opts.save_name):
        try:
            write_backup(opts.save_name, keep=opts.args.keep_backups)
        except CheckpointError as exc:
            print(f"[backup] {exc}", file=sys.stderr)


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
                save_checkpoint(strategy, opts)

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

            return train_in_workers(opts, build_strategy(opts), save_model, save_checkpoint, source_header(opts))
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
