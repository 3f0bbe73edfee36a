"""Parallel rollouts for one agent (`run.py --strategy rl --train --workers N`).

N worker processes (the 'spawn' start method) each run their own Engine on their own market stream and
decide with a copy of the current policy (`strategies.rl.remote.RolloutAgent`); the main process is the
one learner (`Learner`): it replays their transitions per market, keeps the reward statistics, runs each
PPO update and broadcasts the new weights (a version number: the agent's update count) to every worker.

Streams: simulator worker i plays seed `--seed + i * SEED_STRIDE`; on recordings worker i plays every
N-th complete window (in time order, or in the `--shuffle-windows` order, each epoch) as its own episode.
`--markets M` is the total over all workers (split as evenly as possible); `--duration` is per stream.
The model is saved in the learner's `finally`, on a normal end, Ctrl+C, SIGTERM or a worker's death.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from engine.trade_log import new_run_id

SEED_STRIDE = 100_000  # worker i's simulator seed is --seed + i * this: clear of the benchmark's held-out 1001...
STOP_POLL_SECONDS = 0.05  # how often a worker looks at the stop flag
WORKER_EXIT_SECONDS = 120.0  # how long the learner waits for stopped workers to hand in their last events


def refusal(args: argparse.Namespace) -> str | None:
    """Why `--workers N` (N > 1) cannot run with these options, in one sentence; None when it can."""
    n = args.workers
    if args.strategy != "rl" or not args.train:
        return f"--workers {n} runs parallel rollouts for training; it needs --strategy rl --train"
    if args.source not in ("sim", "replay"):
        return f"--workers {n} runs parallel market streams on --source sim or replay, not {args.source}"
    if args.speed not in (None, "max"):
        return f"--workers {n} runs its streams at --speed max"
    if not args.no_tui:
        return f"the dashboard shows one stream; --workers {n} needs --no-tui (one line per window and worker)"
    for flag, given in (("--record", args.record), ("--charts", args.charts), ("--tensorboard", args.tensorboard)):
        if given:
            return f"{flag} reads one stream; it cannot be combined with --workers {n}"
    if args.markets is not None and args.markets < n:
        return f"--markets {args.markets} is the total over all workers; give at least one window per worker ({n})"
    return None


def window_shares(total: int | None, workers: int) -> list[int | None]:
    """`--markets` split over the workers, the first ones taking the remainder."""
    if total is None:
        return [None] * workers
    return [total // workers + (i < total % workers) for i in range(workers)]


class WindowShare:
    """Every `count`-th complete window of a library replay, from `index`, each window its own episode."""

    virtual = True

    def __init__(self, source: Any, index: int, count: int) -> None:
        self.source = source
        self.index, self.count = index, count
        self.bad_lines = source.bad_lines

    async def episodes(self) -> AsyncIterator[Any]:
        for n, key in enumerate(self.source.window_order()):
            if n % self.count == self.index:
                yield self.source.window_episode(key)

    async def close(self) -> None:
        await self.source.close()


def worker_seed(args: argparse.Namespace, index: int) -> int:
    """Worker `index`'s simulator seed: --seed (0 when unset) plus index x SEED_STRIDE."""
    return (0 if args.seed is None else args.seed) + index * SEED_STRIDE


def _worker_source(args: argparse.Namespace, index: int, count: int) -> Any:
    from engine.sources import virtual_source
    from sim.faults import FaultSpec
    from sim.profiles import load_profile

    if args.source == "replay":
        library = virtual_source("replay", seed=worker_seed(args, 0), assets=args.assets, recordings=args.replay,
                                 epochs=args.epochs, shuffle=args.shuffle_windows, warn=lambda _: None)
        return WindowShare(library, index, count)
    faults = FaultSpec.parse(args.sim_faults) if args.sim_faults else None
    # the simulator's own generator process pays off only with a spare core per worker (the same frames either way)
    background = (os.cpu_count() or 1) > 2 * count
    return virtual_source("sim", seed=worker_seed(args, index), assets=args.assets,
                          profile=load_profile(args.sim_profile), faults=faults, background=background)


def _put(outbox: Any, item: tuple) -> None:
    """Send to the learner on this worker's own pipe: a worker running ahead waits while the pipe is full
    (that bounds the policy lag); a learner that is gone ends the worker."""
    try:
        outbox.send(item)
    except (BrokenPipeError, ConnectionResetError):
        raise SystemExit(1) from None


def worker_main(index: int, count: int, args: argparse.Namespace, run_id: str, config: Any,
                outbox: Any, inbox: Any, latest: Any, stop: Any) -> None:
    """One rollout worker: its own Engine and stream; events, windows and its report go to `outbox`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole group: the learner decides
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        asyncio.run(_worker(index, count, args, run_id, config, outbox, inbox, latest, stop))
    except BaseException as exc:  # one sentence for the learner; it saves and stops
        if os.environ.get("UPDOWN_DEBUG"):
            traceback.print_exc()
        with contextlib.suppress(BaseException):
            _put(outbox, ("error", index, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None


async def _worker(index: int, count: int, args: argparse.Namespace, run_id: str, config: Any,
                  outbox: Any, inbox: Any, latest: Any, stop: Any) -> None:
    from core.clock import VirtualClock
    from engine.dashboard import window_line
    from engine.engine import Engine, EngineConfig
    from strategies.rl.remote import RolloutAgent
    from streamers.market_data import MarketData

    agent_seed = None if args.seed is None else worker_seed(args, index)
    start = inbox.get(timeout=WORKER_EXIT_SECONDS)  # the learner's weights when the run began
    agent = RolloutAgent(config, agent_seed, *start, send=lambda ev: _put(outbox, ("events", index, ev)),
                         inbox=inbox, latest=latest)
    agent.train()
    source = _worker_source(args, index, count)
    cfg = EngineConfig(
        size=args.size, fill=args.fill,
        latency_ms=EngineConfig.latency_ms if args.latency_ms is None else args.latency_ms,
        max_slippage=args.max_slippage, max_windows=window_shares(args.markets, count)[index],
        duration=args.duration, assets=args.assets, train=True, log_dir=args.log_dir, run_id=f"{run_id}_w{index}",
        seed=agent_seed, source_name=args.source, strategy_name="rl",
        on_window=lambda snap: _put(outbox, ("window", index, (
            window_line(snap), snap["pnl"], snap["trades"], round(snap["win_rate"] * snap["trades"])))),
    )
    engine = Engine(agent, source, VirtualClock(), MarketData(assets=args.assets), cfg)

    async def watch() -> None:
        while not stop.value:
            await asyncio.sleep(STOP_POLL_SECONDS)
        engine.stop()

    watcher = asyncio.create_task(watch())
    try:
        report = await engine.run()
    finally:
        watcher.cancel()
        await source.close()
    agent.flush()  # the shutdown's last rewards
    report["worker"] = index
    report["stream"] = _stream_name(args, index, count)
    _put(outbox, ("done", index, report))


def _stream_name(args: argparse.Namespace, index: int, count: int) -> str:
    if args.source == "replay":
        return f"1 in {count} windows from #{index}"
    return f"seed {worker_seed(args, index)}"


class WorkerDied(Exception):
    """A rollout worker stopped without handing in its report; one sentence for the console."""


def merge_reports(reports: list[dict], updates: int, wall_seconds: float) -> dict:
    """One report over all workers: counts and PnL summed, rates over the learner's wall time."""
    first = reports[0]
    out = dict(first)
    for key in ("windows", "decisions", "trades", "wins", "unresolved_closes", "shutdown_closes", "skipped_ticks"):
        out[key] = sum(r.get(key, 0) for r in reports)
    for key in ("pnl", "fees"):
        out[key] = round(sum(r[key] for r in reports), 6)
    out["win_rate"] = round(out["wins"] / out["trades"], 6) if out["trades"] else 0.0
    out["pnl_by_asset"] = {a: round(sum(r["pnl_by_asset"].get(a, 0.0) for r in reports), 6)
                           for a in first["pnl_by_asset"]}
    out["feed"] = {k: round(sum(r["feed"][k] for r in reports), 3) for k in first["feed"]}
    skipped = first["skipped_orders"]
    out["skipped_orders"] = {k: sum(r["skipped_orders"][k] for r in reports) if type(v) is int else v
                             for k, v in skipped.items()}
    out["updates"] = updates
    out["wall_seconds"] = round(wall_seconds, 3)
    out["decisions_per_second"] = round(out["decisions"] / wall_seconds, 1) if wall_seconds > 0 else 0.0
    out["output_error"] = next((r["output_error"] for r in reports if r.get("output_error")), None)
    out["logs"] = {f"w{r['worker']}": r["logs"] for r in reports if r.get("logs")}
    out["workers"] = [{
        "worker": r["worker"], "stream": r["stream"], "windows": r["windows"], "decisions": r["decisions"],
        "decisions_per_second": r["decisions_per_second"], "pnl": r["pnl"], "trades": r["trades"],
    } for r in sorted(reports, key=lambda r: r["worker"])]
    for key in ("worker", "stream"):
        out.pop(key, None)
    return out


def format_workers(report: dict) -> str:
    """One line per worker under the run's summary."""
    return "\n".join(
        f"worker {w['worker']} ({w['stream']}): windows {w['windows']}  decisions {w['decisions']:,} "
        f"({w['decisions_per_second']:,.0f}/s)  trades {w['trades']}  PnL ${w['pnl']:+,.2f}"
        for w in report["workers"]
    )


class _Run:
    """The learner's side of one parallel run: the processes, their queues, and what came back."""

    def __init__(self, args: argparse.Namespace, learner: Any, run_id: str) -> None:
        self.args = args
        self.learner = learner
        self.count = args.workers
        ctx = mp.get_context("spawn")
        # one pipe per worker, no lock shared between workers: one killed mid-message harms only its own pipe
        pipes = [ctx.Pipe(duplex=False) for _ in range(self.count)]
        self.readers = [reader for reader, _ in pipes]
        self._writers = [writer for _, writer in pipes]
        self.inboxes = [ctx.Queue() for _ in range(self.count)]
        self.latest = ctx.RawValue("q", learner.version)
        self.stop = ctx.RawValue("b", 0)  # lock-free: a worker killed while reading it holds nothing
        self.processes = [
            ctx.Process(target=worker_main, name=f"updown-worker-{i}", daemon=True, args=(
                i, self.count, args, run_id, learner.agent.config, self._writers[i], self.inboxes[i],
                self.latest, self.stop))
            for i in range(self.count)
        ]
        self.reports: dict[int, dict] = {}
        self.progress: dict[int, tuple[float, int, int]] = {}  # worker -> (PnL, trades, wins) at its last window

    def totals(self) -> tuple[float, int, float]:
        """PnL, trades and win rate over all workers as of their last resolved window (the updates log)."""
        pnl = sum(p[0] for p in self.progress.values())
        trades = sum(p[1] for p in self.progress.values())
        wins = sum(p[2] for p in self.progress.values())
        return pnl, trades, wins / trades if trades else 0.0

    def start(self) -> None:
        """Launch the workers; their first weights go through their queues (a large argument would make
        each start wait for its child to boot)."""
        self.broadcast()
        for p in self.processes:
            p.start()
        for writer in self._writers:
            writer.close()  # the worker holds the only write end, so its death reads as the end of its pipe

    def broadcast(self) -> None:
        version, weights = self.learner.broadcast()
        for inbox in self.inboxes:
            inbox.put((version, weights))
        self.latest.value = version  # after the puts: a worker that sees it finds the weights (or soon will)

    def serve(self, stopping: Callable[[], bool], on_update: Callable[[list[dict]], None]) -> None:
        """Apply events until every worker has reported; raise WorkerDied when one stops without a report."""
        stop_asked_at: float | None = None
        exits = {p.sentinel: i for i, p in enumerate(self.processes)}
        while len(self.reports) < self.count:
            if stopping() and stop_asked_at is None:
                self.stop.value = 1
                stop_asked_at = time.monotonic()
            if stop_asked_at is not None and time.monotonic() - stop_asked_at > WORKER_EXIT_SECONDS:
                raise WorkerDied(f"rollout workers did not stop within {WORKER_EXIT_SECONDS:.0f} s of being asked")
            pending = [r for i, r in enumerate(self.readers) if i not in self.reports]
            sentinels = [s for s, i in exits.items() if i not in self.reports]
            for ready in wait(pending + sentinels, timeout=0.2):
                if ready in exits:
                    self._ended(exits[ready], on_update)
                else:
                    worker = self.readers.index(ready)
                    try:
                        self._receive(worker, on_update)
                    except (EOFError, OSError):  # its pipe closed: the worker is gone
                        self._ended(worker, on_update)

    def _receive(self, worker: int, on_update: Callable[[list[dict]], None]) -> None:
        kind, index, payload = self.readers[worker].recv()
        if kind == "events":
            if self.learner.apply(index, payload):
                self.broadcast()
                on_update(self.learner.agent.pop_updates())
        elif kind == "window":
            line, *progress = payload
            self.progress[index] = tuple(progress)
            print(f"[w{index}] {line}", flush=True)
        elif kind == "done":
            self.reports[index] = payload
        else:
            raise WorkerDied(f"rollout worker {index} failed: {payload}")

    def _ended(self, worker: int, on_update: Callable[[list[dict]], None]) -> None:
        """A worker's process ended or its pipe closed: what it sent before still counts; no report is a death."""
        reader = self.readers[worker]
        with contextlib.suppress(EOFError, OSError):
            while worker not in self.reports and reader.poll():
                self._receive(worker, on_update)
        if worker not in self.reports:
            self.processes[worker].join(1.0)
            code = self.processes[worker].exitcode
            raise WorkerDied(f"rollout worker {worker} stopped unexpectedly (exit code {code})")

    def close(self) -> None:
        """Stop every worker: ask, then wait, then terminate one that does not go."""
        self.stop.value = 1
        deadline = time.monotonic() + 10.0
        for i, p in enumerate(self.processes):
            if p.pid is None:
                continue
            while p.exitcode is None and time.monotonic() < deadline:
                with contextlib.suppress(EOFError, OSError):  # a worker waiting on a full pipe must be able to finish
                    if self.readers[i].poll(0.1):
                        self.readers[i].recv()
            if p.exitcode is None:
                p.terminate()
            p.join(5.0)
        for reader in self.readers:
            reader.close()
        for inbox in self.inboxes:
            inbox.cancel_join_thread()  # unread broadcasts must not hold the exit
            inbox.close()


def train_in_workers(
    opts: Any, strategy: Any, save_model: Callable[[Any, str], bool], checkpoint: Callable[[Any, Any], None],
    data_source: dict,
) -> int:
    """Run `--workers N` training to the end; save in `finally`; print the summary; the exit code."""
    from engine.report import format_outputs, format_summary
    from engine.trade_log import RunLogs
    from strategies.rl.remote import Learner

    args = opts.args
    run_id = new_run_id()
    learner = Learner(strategy)
    stop_requested = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stop_requested
        stop_requested = True

    stopping = (signal.SIGINT, signal.SIGTERM)
    # the workers start with both ignored (inherited), so a Ctrl+C while they import cannot kill one
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in stopping}
    logs = RunLogs(args.log_dir, run_id)
    totals = {"updates": 0}

    def on_update(metrics: list[dict]) -> None:
        for m in metrics:
            totals["updates"] += 1
            logs.write_update(time.time(), m, *run.totals())
            every = args.checkpoint_every
            if every and totals["updates"] % every == 0:
                checkpoint(strategy, opts)

    run = _Run(args, learner, run_id)
    wall_start = time.perf_counter()
    failure: str | None = None
    saved = False
    try:
        run.start()
        for sig in stopping:
            signal.signal(sig, request_stop)
        run.serve(lambda: stop_requested, on_update)
    except WorkerDied as exc:
        failure = str(exc)
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # the run is ending: nothing may cut the save short
        run.close()
        logs.close()
        saved = save_model(strategy, opts.save_name)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    wall = time.perf_counter() - wall_start
    if failure is not None:
        print(f"updown: stopped: {failure}; "
              + (f"the model was saved to {opts.save_name}" if saved else "the model could not be saved"),
              file=sys.stderr)
        return 1
    report = merge_reports([run.reports[i] for i in sorted(run.reports)], totals["updates"], wall)
    report["logs"]["learner"] = logs.paths["updates"]
    report["model_saved"] = opts.save_name if saved else None
    report["model_loaded"] = args.load
    report["seed"] = args.seed
    report["data_source"] = {**data_source, "workers": args.workers, "seed_stride": SEED_STRIDE}
    # per worker, in the order the versions were first used: decisions made with each weights version
    report["decision_versions"] = {f"w{w}": {str(v): n for v, n in c.items()}
                                   for w, c in sorted(learner.decision_versions.items())}
    report["transitions"] = {f"w{w}": n for w, n in sorted(learner.transitions.items())}
    code = 0
    print(format_summary(report))
    print(format_workers(report))
    if args.report:
        try:
            Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            print(f"updown: cannot write the report {args.report}: {exc.strerror or exc}", file=sys.stderr)
            code = 1
    print(format_outputs({**report, "logs": {}}, args.report if code == 0 else None))
    paths = [report["logs"]["learner"]] + [p for w in report["workers"] for p in _worker_logs(report, w["worker"])]
    print("\n".join(f"{'logs' if i == 0 else '':<14}{p}" for i, p in enumerate(paths)))
    if report["output_error"]:
        print(f"updown: stopped: {report['output_error']}", file=sys.stderr)
        code = 1
    if not saved:
        print(f"updown: the model could not be saved to {opts.save_name}; the previous checkpoint is unchanged",
              file=sys.stderr)
        return 1
    return code


def _worker_logs(report: dict, worker: int) -> list[str]:
    logs = report["logs"].get(f"w{worker}") or {}
    return [logs[k] for k in ("trades", "episodes") if k in logs]
