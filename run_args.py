"""run.py's command line: the flags, their types, and every check on them made before the run starts
(`validate`), so that bad input fails in one sentence (exit 2) before anything is built or written."""

from __future__ import annotations

import argparse
import itertools
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.frames import ASSETS
from strategies import STRATEGY_NAMES
from strategies.base import FEATURE_SETS


class BadInput(Exception):
    """A problem with what the user asked for: printed as one sentence, exit code 2."""


class CliParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence, no usage dump
        raise BadInput(f"{message} (see python run.py --help)")


def _number(
    text: str, parse: Callable[[str], Any], what: str, ok: Callable[[Any], bool], expected: str
) -> Any:
    """`text` parsed: a type error saying it is not `what`, or not `expected` when `ok` refuses the value."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, "a whole number", lambda v: v > 0, "a number above 0")


def positive_float(text: str) -> float:
    return _number(text, float, "a number", lambda v: 0 < v < math.inf, "a finite number above 0")


def discount_arg(text: str) -> float:
    return _number(text, float, "a number", lambda v: 0.0 < v <= 1.0, "a discount in (0, 1]")


def latency_arg(text: str) -> float:
    return _number(text, float, "a number of milliseconds", lambda v: 0.0 <= v < math.inf,
                   "a finite latency of 0 ms or more")


def share_arg(text: str) -> float:
    return _number(text, float, "a number", lambda v: 0.0 <= v < 1.0, "a share from 0 up to (not including) 1")


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
    p.add_argument("--features", choices=tuple(FEATURE_SETS), default=None,
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
    faults: object = None  # the parsed --sim-faults (a FaultSpec)


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
    faults = None
    if args.sim_faults:
        from sim.faults import FaultSpec

        try:
            faults = FaultSpec.parse(args.sim_faults)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    if faults is not None and args.speed in (None, "max") and (faults.drop or faults.stall):
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
        check_tensorboard(args.tensorboard)
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
    return Options(args=args, speed=speed, save_name=save_name, profile=profile, faults=faults)


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


def check_tensorboard(folder: str) -> None:
    """--tensorboard: the writer is installed and the folder can be created and written."""
    from engine.tensorboard import TensorBoardError, check_installed

    try:
        check_installed()
    except TensorBoardError as exc:
        raise BadInput(str(exc)) from None
    check_writable_folder("--tensorboard", Path(folder), create=True)


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
