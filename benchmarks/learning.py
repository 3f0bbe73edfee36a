"""Does the agent learn? Train `rl` on training seeds, then evaluate greedy on held-out seeds beside every baseline.

Everything runs in-process through the same Engine, SimSource and PaperBroker that `run.py --source sim
--speed max` uses (one process, no MLX start-up per run); the equivalent run.py commands are printed.

    python -m benchmarks.learning                                   # quick: BTC,ETH, 2 x 5 training windows
    python -m benchmarks.learning --features extended --train-windows 20 --train-seeds 1,2,3
    python -m benchmarks.learning --resume-check --train-windows 20  # 20 + save/load + 20 vs 40 straight
    python -m benchmarks.learning --train-recordings 'data/2026010[1-3]*' --eval-recordings 'data/20260104*'

Walk-forward on recordings: `--train-recordings` trains on recorded windows (`--epochs`, `--shuffle-windows`,
`--sim-share` to alternate with simulator windows, `--pretrain-sim-windows` to start from the simulator) and
`--eval-recordings` evaluates on later ones, each through the same LibrarySource as `run.py --source replay`;
every evaluation window must start after the last training window ends.

The unit of the confidence intervals is one 15-minute window of one evaluation seed or recording (PnL summed
over the assets traded in it); the interval is mean +- 1.96 standard errors (normal approximation).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.learning_results import (
    Outcome,
    print_table,
    ratio_line,
    resume_summary,
    seed_summary,
    selected_candidate,
    update_summary,
    verdict,
    window_pnls,
)
from engine.clock import VirtualClock
from engine.engine import Engine, EngineConfig
from engine.sources import virtual_source
from engine.tensorboard import TensorBoardLog
from run_args import BadInput, check_tensorboard
from sim.profiles import DEFAULT_PROFILE, ProfileError, SimProfile, load_profile
from strategies import create_strategy
from strategies.base import Strategy
from strategies.rl_mlx import PPOConfig, RLStrategy, config_for_features
from streamers.library import Library, LibrarySource, MixSource
from streamers.market_data import MarketData
from streamers.recording import RecordingError

BASELINES = ("random", "momentum", "mean_revert", "fade_spike", "gating", "fair_value")


async def run_engine(strategy: Strategy, cfg: EngineConfig, source: object) -> dict:
    """Run the engine over `source` on a virtual clock (frame times drive it); close the source after."""
    try:
        return await Engine(strategy, source, VirtualClock(), MarketData(assets=cfg.assets), cfg).run()
    finally:
        await source.close()  # type: ignore[attr-defined]


def run_once(
    strategy: Strategy, name: str, seed: int, windows: int, assets: tuple[str, ...], fill: str, train: bool,
    log_dir: Path, run_id: str, profile: SimProfile | None = None, latency_ms: float = 300.0,
    tensorboard: TensorBoardLog | None = None, background: bool = True,
) -> tuple[dict, list[float]]:
    """One sim run at max speed; returns the engine report and the PnL of each completed window.
    `background`: the simulator generates in a child process (the same frames either way)."""
    cfg = EngineConfig(
        size=100.0, fill=fill, max_windows=windows, assets=assets, train=train, log_dir=log_dir, run_id=run_id,
        seed=seed, source_name="sim", strategy_name=name, latency_ms=latency_ms, tensorboard=tensorboard,
    )
    source = virtual_source("sim", seed=seed, assets=assets, profile=profile, background=background)
    report = asyncio.run(run_engine(strategy, cfg, source))
    return report, window_pnls(report["logs"]["episodes"])


def run_recordings(
    strategy: Strategy, name: str, source: LibrarySource | MixSource, assets: tuple[str, ...], fill: str,
    train: bool, log_dir: Path, run_id: str, latency_ms: float = 300.0,
) -> tuple[dict, list[float]]:
    """One run over recordings (or the sim/recording mix) at max speed; the report and the PnL of each window."""
    cfg = EngineConfig(
        size=100.0, fill=fill, assets=assets, train=train, log_dir=log_dir, run_id=run_id, source_name="replay",
        strategy_name=name, latency_ms=latency_ms,
    )
    report = asyncio.run(run_engine(strategy, cfg, source))
    return report, window_pnls(report["logs"]["episodes"])


def replay_command(strategy: str, spec: str, assets: tuple[str, ...], fill: str, extra: str = "",
                   source: str = "replay") -> str:
    """The run.py command line equivalent to one in-process run over recordings."""
    return (f"python run.py --strategy {strategy} --source {source} --replay '{spec}' --speed max "
            f"--assets {','.join(assets)} --fill {fill} --no-tui{extra}")


def walk_forward_split(train: Library, evaluation: Library) -> tuple[int, int]:
    """(end of the last training window, start of the first evaluation window); SystemExit unless the first
    comes no later than the second, so that every evaluation window lies after everything trained on."""
    if not train.complete_windows() or not evaluation.complete_windows():
        empty = "training" if not train.complete_windows() else "evaluation"
        raise SystemExit(f"the {empty} recordings hold no complete window (see python -m streamers.recording info)")
    last_end = max(end for _, end in train.complete_windows())
    first_start = min(start for start, _ in evaluation.complete_windows())
    if first_start < last_end:
        raise SystemExit(f"an evaluation window starts at {_utc(first_start)}, before the last training window ends "
                         f"({_utc(last_end)}); walk-forward evaluation needs every evaluation window after the "
                         "training ones")
    return last_end, first_start


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def command(strategy: str, seed: int, windows: int, assets: tuple[str, ...], fill: str, extra: str = "") -> str:
    """The run.py command line equivalent to one in-process run."""
    return (
        f"python run.py --strategy {strategy} --source sim --speed max --seed {seed} --markets {windows} "
        f"--assets {','.join(assets)} --fill {fill} --no-tui{extra}"
    )


def sim_flags(profile: SimProfile, latency_ms: float) -> str:
    """The run.py flags for a non-default profile and latency ('' for the defaults)."""
    flags = "" if profile.name == DEFAULT_PROFILE else f" --sim-profile {profile.name}"
    return flags + latency_flag(latency_ms)


def latency_flag(latency_ms: float) -> str:
    return "" if latency_ms == 300.0 else f" --latency-ms {latency_ms:g}"


@dataclass
class Bench:
    """Options shared by every step of the benchmark."""

    assets: tuple[str, ...]
    out: Path
    features: str
    config: PPOConfig
    quiet: bool = False
    val_seeds: list[int] = field(default_factory=list)  # empty: no checkpoint selection
    val_windows: int = 5
    commands: list[str] = field(default_factory=list)
    profile: SimProfile = field(default_factory=lambda: load_profile(None))
    latency_ms: float = 300.0
    tensorboard: str | None = None  # folder: one TensorBoard run (subfolder) per trained agent
    background_sim: bool = True  # False: the simulator in this process (parallel trials, one core each)
    libraries: dict[str, Library] = field(default_factory=dict)  # scanned once per path

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def new_agent(self, seed: int) -> RLStrategy:
        return RLStrategy(self.config, seed=seed)

    def train(
        self, agent: RLStrategy, seeds: Sequence[int], windows: int, tag: str, save: str | None, fresh: bool = True
    ) -> list[dict]:
        """Train `agent` on each seed in turn for `windows` windows; one summary dict per seed.

        `fresh`: the agent is new (its first run.py equivalent creates the model; later ones resume it).
        """
        rows = []
        board = TensorBoardLog(Path(self.tensorboard) / tag) if self.tensorboard else None
        for i, seed in enumerate(seeds):
            start = time.perf_counter()
            run_id = f"{tag}_train_s{seed}"
            report, _ = run_once(agent, "rl", seed, windows, self.assets, "book", True, self.out, run_id,
                                 self.profile, self.latency_ms, board, self.background_sim)
            summary = update_summary(report["logs"]["updates"])
            row = {
                "seed": seed, "windows": report["windows"], "trades": report["trades"], "pnl": report["pnl"],
                "fees": report["fees"], "win_rate": report["win_rate"], "reward_count": agent.reward_count,
                "decisions_per_second": report["decisions_per_second"], "wall_seconds": time.perf_counter() - start,
                **summary,
            }
            rows.append(row)
            new_model = fresh and i == 0
            flags = self._rl_flags(True, save) if new_model or not save else self._rl_flags(True, load=save)
            self.commands.append(command("rl", seed, windows, self.assets, "book",
                                         flags + sim_flags(self.profile, self.latency_ms)))
            self.say(
                f"  train {tag} seed {seed}: {row['windows']} windows, PnL ${row['pnl']:+,.0f} "
                f"(fees ${row['fees']:,.0f}), {row['trades']} trades, win {100 * row['win_rate']:.0f}%, "
                f"updates {row['updates']}, entropy {row.get('entropy', float('nan')):.3f}, "
                f"value loss {row.get('value_loss', float('nan')):.3f}, "
                f"EV {row.get('explained_variance', float('nan')):.2f}, reward_count {agent.reward_count}, "
                f"{row['decisions_per_second']:,.0f} decisions/s, {row['wall_seconds']:.0f} s"
            )
            if self.val_seeds and save:
                self.validate(agent, row, f"{save}_after_s{seed}", f"{tag}_s{seed}")
        if board is not None:
            board.close()
        if save:
            agent.save(save)
        return rows

    def library(self, spec: str) -> Library:
        """The recordings named by `spec`, scanned (and their problems told) once per benchmark."""
        if spec not in self.libraries:
            try:
                library = Library.open(spec)
            except RecordingError as exc:
                raise SystemExit(str(exc)) from None
            if not set(library.assets) & set(self.assets):
                raise SystemExit(f"the recordings {spec} hold none of the assets {','.join(self.assets)} "
                                 f"(they hold {','.join(library.assets) or 'none'}); choose --assets")
            for message in library.warnings():
                self.say(f"[replay] {message}")
            self.libraries[spec] = library
        return self.libraries[spec]

    def source(self, spec: str, epochs: int = 1, shuffle: bool = False, sim_share: float = 0.0,
               seed: int = 0) -> LibrarySource | MixSource:
        """A fresh replay of the recordings (shuffled from `seed` when `shuffle`; alternating with simulator
        windows seeded from `seed` when `sim_share` is above 0), as `run.py --source replay` or `--source mix`
        builds it."""
        return virtual_source("mix" if sim_share else "replay", seed=seed, assets=self.assets, profile=self.profile,
                              recordings=self.library(spec), epochs=epochs, shuffle=shuffle, sim_share=sim_share,
                              warn=lambda _: None)  # the library's warnings were told once, by library()

    def train_recordings(
        self, agent: RLStrategy, spec: str, tag: str, save: str, fresh: bool, epochs: int = 1,
        shuffle: bool = False, sim_share: float = 0.0, seed: int = 0,
    ) -> dict:
        """Train `agent` on every complete window of the recordings (`epochs` passes, shuffled from `seed` or in
        time order, alternating with simulator windows seeded from `seed` when `sim_share` is above 0)."""
        start = time.perf_counter()
        source = self.source(spec, epochs, shuffle, sim_share, seed)
        report, _ = run_recordings(agent, "rl", source, self.assets, "book", True, self.out, f"{tag}_train_rec",
                                   self.latency_ms)
        agent.save(save)
        row = {
            "recordings": spec, "epochs": epochs, "shuffle_seed": seed if shuffle else None, "sim_share": sim_share,
            "library": report.get("library"), "windows": report["windows"], "trades": report["trades"],
            "pnl": report["pnl"], "fees": report["fees"], "win_rate": report["win_rate"],
            "reward_count": agent.reward_count, "decisions_per_second": report["decisions_per_second"],
            "wall_seconds": time.perf_counter() - start, **update_summary(report["logs"]["updates"]),
        }
        flags = self._rl_flags(True, save) if fresh else self._rl_flags(True, load=save)
        flags += f" --epochs {epochs}" if epochs != 1 else ""
        flags += " --shuffle-windows" if shuffle else ""
        flags += f" --sim-share {sim_share:g}" if sim_share else ""
        flags += f" --seed {seed}" if shuffle or sim_share else ""
        self.commands.append(replay_command("rl", spec, self.assets, "book", flags + latency_flag(self.latency_ms),
                                            "mix" if sim_share else "replay"))
        mixed = f" and {source.sim_windows} simulator windows" if isinstance(source, MixSource) else ""
        self.say(
            f"  train {tag} on recordings {spec}: {row['windows']} windows{mixed} ({epochs} epoch(s), "
            f"{'shuffled' if shuffle else 'in time order'}), PnL ${row['pnl']:+,.0f} (fees ${row['fees']:,.0f}), "
            f"{row['trades']} trades, updates {row['updates']}, entropy {row.get('entropy', float('nan')):.3f}, "
            f"EV {row.get('explained_variance', float('nan')):.2f}, reward_count {agent.reward_count}, "
            f"{row['decisions_per_second']:,.0f} decisions/s, {row['wall_seconds']:.0f} s"
        )
        return row

    def evaluate_recordings(
        self, make: Callable[[int], Strategy], name: str, spec: str, fill: str, tag: str, load: str | None = None,
    ) -> Outcome:
        """A greedy (no learning) run of one strategy over every complete window of the recordings, in time order."""
        outcome = Outcome(name if not tag else f"{name}[{tag}]", fill)
        report, per_window = run_recordings(make(0), name, self.source(spec), self.assets, fill, False, self.out,
                                            f"eval_{tag or name}_{fill}_rec", self.latency_ms)
        outcome.add(report, per_window)
        extra = self._rl_flags(False, load=load) if name == "rl" else ""
        self.commands.append(replay_command(name, spec, self.assets, fill, extra + latency_flag(self.latency_ms)))
        return outcome

    def validate(self, agent: RLStrategy, row: dict, candidate: str, tag: str) -> None:
        """Save the agent as a candidate and record its greedy PnL on the validation seeds in `row`."""
        agent.save(candidate)
        val = self.evaluate(lambda s: RLStrategy.from_checkpoint(candidate, config=self.config, seed=s), "rl",
                            self.val_seeds, self.val_windows, "book", f"val_{tag}", load=candidate)
        mean, low, high = val.mean_ci()
        row.update(candidate=candidate, val_pnl=val.pnl, val_trades=val.trades)
        self.say(f"    validation (seeds {self.val_seeds}, book): {val.trades} trades, net ${val.pnl:+,.0f}, "
                 f"{mean:.1f} [{low:.1f}, {high:.1f}] $/window")

    def _rl_flags(self, train: bool, save: str | None = None, load: str | None = None) -> str:
        flags = f" --features {self.features}" if self.features != "standard" and not load else ""
        if train and not load and self.config.gamma != PPOConfig().gamma:
            flags += f" --gamma {self.config.gamma:g}"
        if train:
            flags += " --train"
        if load:
            flags += f" --load {load}"
        if save:
            flags += f" --save {save}"
        return flags

    def evaluate(
        self, make: Callable[[int], Strategy], name: str, seeds: Sequence[int], windows: int, fill: str,
        tag: str, load: str | None = None,
    ) -> Outcome:
        """Greedy (no learning) runs of one strategy on the held-out seeds with one fill mode."""
        outcome = Outcome(name if not tag else f"{name}[{tag}]", fill)
        for seed in seeds:
            run_id = f"eval_{tag or name}_{fill}_s{seed}"
            report, per_window = run_once(make(seed), name, seed, windows, self.assets, fill, False, self.out, run_id,
                                          self.profile, self.latency_ms, background=self.background_sim)
            outcome.add(report, per_window)
            extra = self._rl_flags(False, load=load) if name == "rl" else ""
            self.commands.append(command(name, seed, windows, self.assets, fill,
                                         extra + sim_flags(self.profile, self.latency_ms)))
        return outcome


PPO_FIELD_TYPES = {f.name: type(getattr(PPOConfig(), f.name)) for f in dataclasses.fields(PPOConfig)}
NOT_OVERRIDDEN = ("input_dim", "feature_set")  # set by --features, never by --set, --grid or a search


def parse_overrides(items: Sequence[str]) -> dict[str, object]:
    """`key=value` pairs for PPOConfig, typed like the field they set."""
    types = PPO_FIELD_TYPES
    out: dict[str, object] = {}
    for item in items:
        for pair in item.split(","):
            key, _, value = pair.partition("=")
            key = key.strip()
            if key not in types or not value or key in NOT_OVERRIDDEN:
                raise SystemExit(f"--set {pair!r}: expected key=value with a PPOConfig field (not input_dim/feature_set)")
            out[key] = types[key](value)
    return out


def seeds_arg(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--assets", default="BTC,ETH", help="comma list (default BTC,ETH: half the CPU of all four)")
    p.add_argument("--features", choices=("standard", "extended"), default="standard")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="PPOConfig override(s)")
    p.add_argument("--train-seeds", type=seeds_arg, default=[1, 2], help="simulator seeds to train on")
    p.add_argument("--train-windows", type=int, default=5, help="15-minute windows per training seed")
    p.add_argument("--eval-seeds", type=seeds_arg, default=[1001, 1002], help="held-out seeds (never trained on)")
    p.add_argument("--eval-windows", type=int, default=5, help="15-minute windows per evaluation seed")
    p.add_argument("--fills", default="book,mid", help="fill modes to evaluate (book, mid or both)")
    p.add_argument("--baselines", default=",".join(BASELINES), help="rule strategies to evaluate beside rl")
    p.add_argument("--agent-seed", type=int, default=0, help="seed of the agent's weights and sampling")
    p.add_argument("--agent-seeds", type=seeds_arg, default=None,
                   help="train one agent per seed (comma list) on the same frames; prints the mean and spread")
    p.add_argument("--val-seeds", type=seeds_arg, default=[],
                   help="validation seeds: after each training seed the model is checkpointed and run greedy on "
                        "these; the best checkpoint is evaluated beside the last one")
    p.add_argument("--val-windows", type=int, default=5, help="15-minute windows per validation seed")
    p.add_argument("--load", metavar="NAME", help="evaluate this checkpoint instead of training one")
    p.add_argument("--resume-check", action="store_true",
                   help="train on the first half of --train-seeds, save, load, train on the rest; vs straight")
    p.add_argument("--out", default=None, help="folder for CSV logs, checkpoints and results.json")
    p.add_argument("--sim-profile", default=None, metavar="NAME|FILE",
                   help="simulator market model: realistic (default), lagged (what-if, not real) or a JSON profile")
    p.add_argument("--latency-ms", type=float, default=300.0, help="paper fill latency (default 300, as run.py)")
    p.add_argument("--tensorboard", metavar="DIR", help="TensorBoard scalars of each agent's training, one run each")
    from benchmarks import sweep  # --ray, --grid, --search: the trials run through benchmarks/sweep.py

    sweep.add_arguments(p)
    rec = p.add_argument_group("walk-forward on recordings (files, folders or quoted globs, as run.py --replay)")
    rec.add_argument("--train-recordings", metavar="PATH", help="train on these recordings instead of simulator seeds")
    rec.add_argument("--eval-recordings", metavar="PATH",
                     help="evaluate on these instead of --eval-seeds; every window must start after the training ones")
    rec.add_argument("--pretrain-sim-windows", type=int, default=0, metavar="N",
                     help="before the recordings, train on N simulator windows spread over --train-seeds")
    rec.add_argument("--epochs", type=int, default=1, metavar="N", help="passes over the training recordings")
    rec.add_argument("--shuffle-windows", action="store_true", help="train on the recorded windows in a random order")
    rec.add_argument("--sim-share", type=float, default=0.0, metavar="S",
                     help="alternate simulator windows with the recorded ones, S of all training windows (as "
                          "run.py --source mix)")
    rec.add_argument("--replay-seed", type=int, default=10000, metavar="N",
                     help="seeds the shuffled order and the simulator windows of --sim-share (seeds N, N+1, ...), as "
                          "run.py --seed does; the default keeps them away from the usual simulator seeds")
    args = p.parse_args(argv)
    if args.tensorboard:
        try:
            check_tensorboard(args.tensorboard)
        except BadInput as exc:
            print(exc, file=sys.stderr)
            return 2
    try:
        profile = load_profile(args.sim_profile)
    except ProfileError as exc:
        raise SystemExit(str(exc)) from None
    if not args.latency_ms >= 0:
        raise SystemExit(f"--latency-ms must be 0 or more, got {args.latency_ms}")
    if not args.train_recordings and (args.pretrain_sim_windows or args.epochs != 1 or args.shuffle_windows
                                      or args.sim_share):
        raise SystemExit("--pretrain-sim-windows, --epochs, --shuffle-windows and --sim-share train on recordings; "
                         "add --train-recordings PATH")
    if args.train_recordings and (args.resume_check or args.val_seeds):
        raise SystemExit("--resume-check and --val-seeds work with simulator training seeds, not --train-recordings")
    if args.epochs < 1 or args.pretrain_sim_windows < 0 or not 0.0 <= args.sim_share < 1.0:
        raise SystemExit("--epochs must be 1 or more, --pretrain-sim-windows 0 or more, --sim-share in [0, 1)")

    assets = tuple(a.strip().upper() for a in args.assets.split(",") if a.strip())
    overrides = parse_overrides(args.set)
    config = config_for_features(args.features, PPOConfig(**overrides))
    out = Path(args.out or tempfile.mkdtemp(prefix="learning_"))
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(assets, out, args.features, config, val_seeds=args.val_seeds, val_windows=args.val_windows,
                  profile=profile, latency_ms=args.latency_ms, tensorboard=args.tensorboard)
    fills = [f for f in args.fills.split(",") if f]
    overlap = set(args.train_seeds) & set(args.eval_seeds)
    if overlap:
        raise SystemExit(f"evaluation seeds {sorted(overlap)} are also training seeds; held-out means unseen")
    if set(args.val_seeds) & (set(args.train_seeds) | set(args.eval_seeds)):
        raise SystemExit("validation seeds must differ from the training and the evaluation seeds")
    if sweep.requested(args):
        if args.train_recordings or args.eval_recordings:
            raise SystemExit("--ray, --grid and --search evaluate on simulator seeds; give recordings to train on as "
                             "--train-source and drop --train-recordings/--eval-recordings")
        return sweep.run(args, assets, profile, out, fills)
    results: dict = {"argv": sys.argv[1:] if argv is None else list(argv), "config": dataclasses.asdict(config)}
    if args.train_recordings:
        library = bench.library(args.train_recordings)
        pretrain = f"{args.pretrain_sim_windows} simulator windows, then " if args.pretrain_sim_windows else ""
        trained = (f"train {pretrain}recordings {args.train_recordings} ({library.windows_complete} complete windows, "
                   f"{library.windows_cut} cut) x {args.epochs} epoch(s)"
                   + (", shuffled" if args.shuffle_windows else "")
                   + (f", simulator share {args.sim_share:g}" if args.sim_share else ""))
    else:
        trained = f"train seeds {args.train_seeds} x {args.train_windows} windows"
    if args.load:
        trained = f"model {args.load}"
    if args.eval_recordings:
        library = bench.library(args.eval_recordings)
        held_out = (f"eval recordings {args.eval_recordings} ({library.windows_complete} complete windows, "
                    f"{library.windows_cut} cut)")
        if args.train_recordings and not args.load:
            last_end, first_start = walk_forward_split(bench.library(args.train_recordings), library)
            results["walk_forward"] = {"last_training_window_end": last_end, "first_evaluation_window": first_start}
            held_out += f", all after the training ones (last ends {_utc(last_end)}, first starts {_utc(first_start)})"
    else:
        held_out = f"eval seeds {args.eval_seeds} x {args.eval_windows} windows"
    print(f"learning benchmark: features {args.features}, overrides {overrides or 'none'}, assets {','.join(assets)}, "
          f"{trained}, {held_out}, sim profile {profile.name}, latency {args.latency_ms:g} ms, logs in {out}")

    def evaluate(make: Callable[[int], Strategy], name: str, fill: str, tag: str, load: str | None = None) -> Outcome:
        if args.eval_recordings:
            return bench.evaluate_recordings(make, name, args.eval_recordings, fill, tag, load=load)
        return bench.evaluate(make, name, args.eval_seeds, args.eval_windows, fill, tag, load=load)

    agent_seeds = args.agent_seeds or [args.agent_seed]
    several = len(agent_seeds) > 1
    if args.resume_check:
        checks = [resume_check(bench, args, fills, seed, f"_a{seed}" if several else "") for seed in agent_seeds]
        results["resume"] = checks if several else checks[0]
        if several:
            for fill in fills:
                print(resume_summary(checks, fill))
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print_commands(bench)
        return 0

    if args.load and several:
        raise SystemExit("--load evaluates one saved model; --agent-seeds trains several")
    # the rule baselines do not depend on the agent: run once, shown beside every agent seed
    rules_by_fill = {
        fill: [
            evaluate(lambda s, n=name: create_strategy(n, seed=s), name, fill, "")
            for name in args.baselines.split(",") if name
        ]
        for fill in fills
    }
    outcomes: list[Outcome] = [o for rules in rules_by_fill.values() for o in rules]
    runs: list[dict] = []
    for agent_seed in agent_seeds:
        tag = f"a{agent_seed}" if several else ""
        model = args.load or str(out / (f"rl_model_{tag}" if several else "rl_model"))
        run: dict = {"agent_seed": agent_seed, "model": model}
        if not args.load:
            if several:
                bench.say(f"agent seed {agent_seed}:")
            agent = bench.new_agent(agent_seed)
            if args.train_recordings:
                run["training"] = pretrain_then_recordings(bench, agent, args, f"rl{tag}", model)
            else:
                run["training"] = bench.train(agent, args.train_seeds, args.train_windows, f"rl{tag}", model)
            run["selected"] = selected_candidate(run["training"])
        # the last model, and the checkpoint chosen on validation seeds when there are some
        models = [("", model)] + ([("sel", run["selected"])] if run.get("selected") else [])
        for fill in fills:
            rules = rules_by_fill[fill]
            fair = next((o for o in rules if o.strategy == "fair_value"), None)
            for kind, path in models:
                rl = evaluate(lambda s, m=path: RLStrategy.from_checkpoint(m, config=config, seed=s), "rl", fill,
                              tag + kind, load=path)
                outcomes.append(rl)
                title = "held-out evaluation" + (f", checkpoint selected on validation: {path}" if kind else "")
                where = (f"recordings {args.eval_recordings}, {rl.windows} windows" if args.eval_recordings
                         else f"{len(args.eval_seeds)} seeds")
                print_table([rl, *rules], f"{title}, --fill {fill} (greedy rl, {where})")
                key = f"{kind}_{fill}" if kind else fill
                if fair is not None:
                    print(ratio_line(rl, fair))
                    run[f"ratio_{key}"] = rl.pnl / fair.pnl if fair.pnl > 0 else float("nan")
                    run[f"diff_{key}"] = rl.pnl - fair.pnl
                run[f"pnl_{key}"] = rl.pnl
                print(verdict(rl, rules))
        runs.append(run)
    if several:
        results["agent_seeds"] = runs
        for fill in fills:
            print(seed_summary(runs, fill))
    else:
        results["training"] = runs[0].get("training")
    results["evaluation"] = [o.to_dict() for o in outcomes]
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_commands(bench)
    print(f"results: {out / 'results.json'}")
    return 0


def pretrain_then_recordings(bench: Bench, agent: RLStrategy, args: argparse.Namespace, tag: str, model: str) -> list[dict]:
    """`--pretrain-sim-windows` simulator windows spread over the training seeds, then the training recordings."""
    seeds = args.train_seeds
    n = args.pretrain_sim_windows
    share = [n // len(seeds) + (1 if i < n % len(seeds) else 0) for i in range(len(seeds))]
    rows: list[dict] = []
    for i, (sim_seed, windows) in enumerate((s, w) for s, w in zip(seeds, share, strict=True) if w):
        rows += bench.train(agent, [sim_seed], windows, f"{tag}_pre", model, fresh=i == 0)
    rows.append(bench.train_recordings(agent, args.train_recordings, tag, model, fresh=not rows, epochs=args.epochs,
                                       shuffle=args.shuffle_windows, sim_share=args.sim_share, seed=args.replay_seed))
    return rows


def resume_check(bench: Bench, args: argparse.Namespace, fills: list[str], agent_seed: int, tag: str = "") -> dict:
    """Train on the first half of the training seeds, save, load a fresh agent, train on the second half;
    against one agent trained on all of them straight. Both see the same frames in the same order.
    """
    seeds = args.train_seeds
    if len(seeds) < 2:
        raise SystemExit("--resume-check needs at least two --train-seeds (one per half)")
    half = len(seeds) // 2
    first, second = seeds[:half], seeds[half:]
    windows = args.train_windows
    straight_name, part_name = str(bench.out / f"straight{tag}"), str(bench.out / f"resumed{tag}")
    bench.say(f"agent seed {agent_seed}, straight run:")
    straight = bench.new_agent(agent_seed)
    straight_rows = bench.train(straight, seeds, windows, f"straight{tag}", straight_name)
    bench.say(f"agent seed {agent_seed}, resumed run:")
    part = bench.new_agent(agent_seed)
    first_rows = bench.train(part, first, windows, f"resumed1{tag}", part_name)
    count_saved = part.reward_count
    loaded = RLStrategy.from_checkpoint(part_name, config=bench.config, seed=agent_seed + 1)
    count_loaded = loaded.reward_count
    second_rows = bench.train(loaded, second, windows, f"resumed2{tag}", part_name, fresh=False)
    print(f"\nreward statistics: saved reward_count {count_saved}, loaded {count_loaded}, after the second half "
          f"{loaded.reward_count} (straight run: {straight.reward_count}); reward_std saved "
          f"{part.reward_std:.3f} -> final {loaded.reward_std:.3f}")
    outcomes = []
    pnl: dict[str, dict[str, float]] = {}
    for fill in fills:
        a = bench.evaluate(lambda s: RLStrategy.from_checkpoint(straight_name, seed=s), "rl", args.eval_seeds,
                           args.eval_windows, fill, f"straight{tag}", load=straight_name)
        b = bench.evaluate(lambda s: RLStrategy.from_checkpoint(part_name, seed=s), "rl", args.eval_seeds,
                           args.eval_windows, fill, f"resumed{tag}", load=part_name)
        outcomes += [a, b]
        pnl[fill] = {"straight": a.pnl, "resumed": b.pnl}
        print_table([a, b], f"resume check, held-out --fill {fill}")
        (_, a_low, a_high), (_, b_low, b_high) = a.mean_ci(), b.mean_ci()
        same = a_low <= b_high and b_low <= a_high
        print(f"intervals {'overlap (within noise)' if same else 'do not overlap'}")
    return {
        "agent_seed": agent_seed, "pnl": pnl,
        "straight": straight_rows, "resumed_first": first_rows, "resumed_second": second_rows,
        "reward_count": {"saved": count_saved, "loaded": count_loaded, "final": loaded.reward_count,
                         "straight": straight.reward_count},
        "evaluation": [o.to_dict() for o in outcomes],
    }


def print_commands(bench: Bench) -> None:
    print("\nequivalent run.py commands (each run here is one of these, in-process):")
    seen = set()
    for c in bench.commands:
        if c not in seen:
            seen.add(c)
            print(f"  {c}")


if __name__ == "__main__":
    sys.exit(main())
