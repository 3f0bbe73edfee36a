"""Sweeps of the learning benchmark: agent seeds x hyperparameter settings as trials, in parallel on Ray.

    python -m benchmarks.sweep --agent-seeds 1,2,3,4 --grid gamma=0.95,1.0      # 8 trials on this machine's cores
    python -m benchmarks.sweep --search optuna --space actor_lr=1e-5:1e-3:log --space entropy_coef=0:0.05 \\
        --samples 16 --val-seeds 501,502                                           # Optuna (Ray Tune's OptunaSearch)
    python -m benchmarks.sweep --agent-seeds 1,2 --ray-address HEAD:6379           # on an existing Ray cluster
    python -m benchmarks.sweep --agent-seeds 1,2 --no-ray                          # the same trials one after another
    python -m benchmarks.learning --ray --agent-seeds 1,2                          # the same as the first kind

Every option of `benchmarks.learning` applies (assets, features, training, validation and held-out seeds and
windows, fills, baselines, --set, --sim-profile, --latency-ms, --tensorboard). A trial trains one agent (one
agent seed, one setting) on the training seeds and evaluates it greedy on the held-out seeds; the rule
baselines run once beside them. A search samples settings with Ray Tune's OptunaSearch (TPE, or Optuna's
random sampler) and maximises the validation net PnL (--val-seeds, never the held-out seeds); the held-out
figures of every trial are printed, the best-on-validation one's first.

Each trial runs as a Ray task in a temporary folder on whichever node runs it and returns its files, so the
results land in one folder on this machine without shared storage: OUT/<trial>/ (the model, the engine's CSV
logs, trial.log, report.json, tensorboard/), OUT/baselines/, OUT/summary.csv and OUT/results.json.
Without Ray installed the same command runs the trials one after another in this process, and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import itertools
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.learning import NOT_OVERRIDDEN, PPO_FIELD_TYPES, Bench, parse_overrides  # noqa: E402  (the path above makes the repository importable)
from benchmarks.learning_results import Outcome, mean_sd, print_table, ratio_line, verdict  # noqa: E402
from benchmarks.sweep_runners import (  # noqa: E402
    INSTALL_HINT,
    OBJECTIVE,
    OnRay,
    Sequential,
    SweepError,
    searcher_for,
    start_ray,
)
from sim.profiles import SimProfile  # noqa: E402
from strategies import create_strategy  # noqa: E402
from strategies.rl import PPOConfig, RLStrategy, config_for_features  # noqa: E402


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep options, added to the learning benchmark's parser."""
    g = p.add_argument_group(f"sweeps (also python -m benchmarks.sweep; Ray and Optuna: {INSTALL_HINT})")
    g.add_argument("--ray", action=argparse.BooleanOptionalAction, default=None,
                   help="run the trials as Ray tasks, on this machine's cores unless --ray-address (the default of "
                        "benchmarks.sweep); --no-ray runs the same trials one after another in this process")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="an existing Ray cluster: its head's host:port (ray start --head prints it) or ray://host:10001")
    g.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a PPOConfig field and its values; every combination x every agent seed is a trial")
    g.add_argument("--search", choices=("optuna", "random"),
                   help="sample --samples settings from --space with Ray Tune's OptunaSearch (TPE sampler, or random) "
                        "maximising the validation net PnL (needs --val-seeds)")
    g.add_argument("--space", action="append", default=[], metavar="KEY=LOW:HIGH[:log] | KEY=A,B",
                   help="a searched PPOConfig field: a range (':log' samples its logarithm) or a list of choices")
    g.add_argument("--samples", type=int, default=8, help="settings a search tries (default 8)")
    g.add_argument("--search-seed", type=int, default=0, help="seed of the search's sampler")
    g.add_argument("--train-source", action="append", default=[], metavar="sim | RECORDINGS",
                   help="a training source, repeatable: 'sim' (--train-seeds x --train-windows, the default) or "
                        "recordings (a file, folder or quoted glob, one pass in time order); every source x "
                        "setting x agent seed is a trial, all evaluated on the same held-out seeds")
    g.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="CPUs Ray reserves per trial (default 1: the trial's simulator then runs in its own process, "
                        "not a second one; 2 or more gives it a process of its own)")


def requested(args: argparse.Namespace) -> bool:
    """Whether the learning benchmark should hand this run to the sweep."""
    return args.ray is not None or bool(args.ray_address or args.grid or args.search or args.space
                                        or args.train_source)


# ---- what to run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepOptions:
    """What every trial shares (plain data: it travels to Ray workers)."""

    assets: tuple[str, ...]
    features: str
    train_seeds: tuple[int, ...]
    train_windows: int
    eval_seeds: tuple[int, ...]
    eval_windows: int
    val_seeds: tuple[int, ...]
    val_windows: int
    fills: tuple[str, ...]
    profile: dict
    latency_ms: float
    tensorboard: bool
    background_sim: bool = True  # the simulator in a child process of its own: only with 2 or more CPUs a trial


@dataclass(frozen=True)
class Trial:
    name: str
    agent_seed: int
    settings: dict[str, Any]  # the PPOConfig overrides of this trial (--set, then its grid or sampled values)
    source: str = "sim"  # what it trains on: the simulator's training seeds, or recordings (a path or glob)


def typed(key: str, value: str) -> Any:
    """`value` as the type of the PPOConfig field `key`."""
    if key not in PPO_FIELD_TYPES or key in NOT_OVERRIDDEN:
        raise SweepError(f"{key!r} is not a PPOConfig field a sweep can set; choose from "
                         f"{', '.join(k for k in PPO_FIELD_TYPES if k not in NOT_OVERRIDDEN)}")
    try:
        return PPO_FIELD_TYPES[key](value)
    except ValueError:
        kind = {int: "a whole number", float: "a number"}.get(PPO_FIELD_TYPES[key], "a word")
        raise SweepError(f"{key}={value}: expected {kind}") from None


def parse_grid(items: list[str]) -> list[dict[str, Any]]:
    """Every combination of the --grid values ([{}] without a grid)."""
    axes: dict[str, list[Any]] = {}
    for item in items:
        key, _, values = item.partition("=")
        key = key.strip()
        if not values:
            raise SweepError(f"--grid {item!r}: expected KEY=V1,V2 with a PPOConfig field")
        axes[key] = [typed(key, v.strip()) for v in values.split(",") if v.strip()]
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def parse_space(items: list[str]) -> dict[str, Any]:
    """--space items as Ray Tune search domains (uniform / loguniform, randint / lograndint, choice)."""
    try:
        from ray import tune
    except ImportError:
        raise SweepError(f"--search samples with Ray Tune's OptunaSearch: {INSTALL_HINT}") from None

    space: dict[str, Any] = {}
    for item in items:
        key, _, spec = item.partition("=")
        key = key.strip()
        if not spec:
            raise SweepError(f"--space {item!r}: expected KEY=LOW:HIGH[:log] or KEY=A,B with a PPOConfig field")
        if ":" not in spec:
            space[key] = tune.choice([typed(key, v.strip()) for v in spec.split(",") if v.strip()])
            continue
        parts = spec.split(":")
        log = parts[-1] == "log"
        if log:
            parts = parts[:-1]
        kind = PPO_FIELD_TYPES.get(key)
        if len(parts) != 2 or kind not in (int, float):
            raise SweepError(f"--space {item!r}: a range is LOW:HIGH[:log] of a numeric PPOConfig field")
        low, high = typed(key, parts[0]), typed(key, parts[1])
        if not low < high or (log and low <= 0):
            raise SweepError(f"--space {item!r}: needs LOW < HIGH" + (" and LOW > 0 on a log scale" if log else ""))
        if kind is int:  # Tune's integer upper bounds are exclusive
            space[key] = tune.lograndint(low, high + 1) if log else tune.randint(low, high + 1)
        else:
            space[key] = tune.loguniform(low, high) if log else tune.uniform(low, high)
    return space


def trial_name(index: int, agent_seed: int, settings: dict[str, Any], source_tag: str = "") -> str:
    parts = [f"t{index:02d}", *([source_tag] if source_tag else []), f"a{agent_seed}"]
    parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()]
    return "_".join(parts)


# ---- one trial (runs in a Ray worker, or in this process) -------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _relocated(data: Any, folder: Path, destination: str) -> Any:
    """`data` with the temporary folder's path replaced by where its files will land."""
    return json.loads(json.dumps(data).replace(str(folder), destination))


def _bench(options: SweepOptions, folder: Path, config: PPOConfig) -> Bench:
    return Bench(
        options.assets, folder, options.features, config, val_seeds=list(options.val_seeds),
        val_windows=options.val_windows, profile=SimProfile.from_dict(options.profile), latency_ms=options.latency_ms,
        tensorboard=str(folder / "tensorboard") if options.tensorboard else None,
        background_sim=options.background_sim,
    )


@contextlib.contextmanager
def _trial_folder(destination: str) -> Iterator[tuple[Path, io.StringIO, dict]]:
    """A temporary folder and a console log for one job; its files come back in `out["files"]`."""
    out: dict[str, Any] = {"pid": os.getpid(), "host": os.uname().nodename, "started": time.time()}
    with tempfile.TemporaryDirectory(prefix="updown_trial_") as tmp:
        folder = Path(tmp)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            yield folder, log, out
        out["finished"] = time.time()
        (folder / "trial.log").write_text(log.getvalue().replace(str(folder), destination))
        out["files"] = _files(folder)


def run_trial(options: SweepOptions, trial: Trial, destination: str) -> dict:
    """Train one agent and evaluate it on the held-out seeds; the report plus the trial's files (bytes)."""
    with _trial_folder(destination) as (folder, _, out):
        config = config_for_features(options.features, PPOConfig(**trial.settings))
        bench = _bench(options, folder, config)
        agent = bench.new_agent(trial.agent_seed)
        model = str(folder / "rl_model")
        if trial.source == "sim":
            training = bench.train(agent, options.train_seeds, options.train_windows, "rl", model)
        else:
            training = [bench.train_recordings(agent, trial.source, "rl", model, fresh=True)]
        evaluation = {
            fill: bench.evaluate(lambda s: RLStrategy.from_checkpoint(model, config=config, seed=s), "rl",
                                 options.eval_seeds, options.eval_windows, fill, "", load=model)
            for fill in options.fills
        }
        report = {
            "trial": trial.name, "agent_seed": trial.agent_seed, "settings": trial.settings, "source": trial.source,
            "config": dataclasses.asdict(config), "model": model, "training": training,
            OBJECTIVE: training[-1].get("val_pnl") if training else None,
            "evaluation": {fill: o.to_dict() for fill, o in evaluation.items()},
            "commands": list(dict.fromkeys(bench.commands)),
        }
        out["report"] = _relocated(report, folder, destination)
        (folder / "report.json").write_text(json.dumps(out["report"], indent=2) + "\n")
    return out


def run_baselines(options: SweepOptions, names: tuple[str, ...], destination: str) -> dict:
    """The rule strategies on the held-out seeds, once for the whole sweep."""
    with _trial_folder(destination) as (folder, _, out):
        bench = _bench(options, folder, PPOConfig())
        outcomes = {
            fill: [bench.evaluate(lambda s, n=name: create_strategy(n, seed=s), name, options.eval_seeds,
                                  options.eval_windows, fill, "").to_dict() for name in names]
            for fill in options.fills
        }
        (folder / "report.json").write_text(json.dumps({"evaluation": outcomes}, indent=2) + "\n")
    out["report"] = {"evaluation": outcomes}
    return out


# ---- the sweep -------------------------------------------------------------------------------------------


@dataclass
class Finished:
    """A trial's result as the driver keeps it."""

    trial: Trial
    report: dict | None = None
    error: str | None = None
    meta: dict = field(default_factory=dict)  # pid, host, started, finished

    def outcome(self, fill: str) -> Outcome | None:
        if self.report is None:
            return None
        data = self.report["evaluation"][fill]
        return Outcome.from_dict(data)


def _write_files(folder: Path, files: dict[str, bytes], tensorboard: Path | None) -> None:
    """A job's files into its folder; its TensorBoard runs under `tensorboard`/<job> when one was given."""
    for rel, blob in files.items():
        inner = Path(rel)
        if tensorboard is not None and inner.parts[0] == "tensorboard":
            path = tensorboard / folder.name / inner.relative_to("tensorboard")
        else:
            path = folder / inner
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()) or "defaults"


def run(args: argparse.Namespace, assets: tuple[str, ...], profile: SimProfile, out: Path, fills: list[str]) -> int:
    """Plan, run and summarise a sweep; 2 on bad input, 1 if a trial failed, else 0."""
    try:
        return _run(args, assets, profile, out, fills)
    except SweepError as exc:
        print(exc, file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, assets: tuple[str, ...], profile: SimProfile, out: Path, fills: list[str]) -> int:
    start = time.perf_counter()
    if args.resume_check or args.load:
        raise SweepError("--resume-check and --load run in one process; leave out --ray, --grid and --search")
    if args.ray is False and args.ray_address:
        raise SweepError("--ray-address runs on a Ray cluster; leave out --no-ray")
    if args.search and args.grid:
        raise SweepError("--search samples its settings from --space; a --grid goes in a separate sweep")
    if args.space and not args.search:
        raise SweepError("--space is searched with --search optuna (or random)")
    if args.search and not args.space:
        raise SweepError("--search needs at least one --space KEY=LOW:HIGH[:log] or KEY=A,B")
    if args.search and not args.val_seeds:
        raise SweepError("--search picks settings on validation seeds: give --val-seeds (never the held-out seeds)")
    if args.search and args.agent_seeds and len(args.agent_seeds) > 1:
        raise SweepError("--search tries each setting with one --agent-seed; confirm the best on several with --grid")
    sources = args.train_source or ["sim"]
    if args.search and len(sources) > 1:
        raise SweepError("--search tries its settings on one training source; give one --train-source")
    for spec in sources:
        if spec != "sim":
            from streamers.library import Library
            from streamers.recording import RecordingError

            try:
                library = Library.open(spec)
            except RecordingError as exc:
                raise SweepError(f"--train-source {spec}: {exc}") from None
            if not library.windows_complete:
                raise SweepError(f"--train-source {spec} holds no complete window to train on")
    if args.samples < 1 or not args.cpus_per_trial > 0:
        raise SweepError("--samples must be 1 or more and --cpus-per-trial above 0")
    base = parse_overrides(args.set)
    settings = [{**base, **g} for g in parse_grid(args.grid)]
    space = parse_space(args.space) if args.search else {}
    agent_seeds = args.agent_seeds or [args.agent_seed]
    options = SweepOptions(
        assets=assets, features=args.features, train_seeds=tuple(args.train_seeds), train_windows=args.train_windows,
        eval_seeds=tuple(args.eval_seeds), eval_windows=args.eval_windows, val_seeds=tuple(args.val_seeds),
        val_windows=args.val_windows, fills=tuple(fills), profile=profile.to_dict(), latency_ms=args.latency_ms,
        tensorboard=bool(args.tensorboard),
        background_sim=not (args.ray or args.ray_address) or args.cpus_per_trial >= 2,
    )
    for trial_settings in settings:  # a bad setting fails here, not in every worker
        config_for_features(args.features, PPOConfig(**trial_settings))

    ray = start_ray(args) if (args.ray or args.ray_address) else None
    ray_started = time.perf_counter() - start  # the checks above take milliseconds: this is Ray's start-up
    runner: Sequential | OnRay
    if ray is None:
        runner = Sequential()
        count = args.samples if args.search else len(settings) * len(agent_seeds)
        why = f"Ray is not installed ({INSTALL_HINT}), so " if (args.ray or args.ray_address) else ""
        print(f"sweep: {why}the {count} trials run one after another in this process", flush=True)
    else:
        runner = OnRay(ray, args.cpus_per_trial, args.ray_address)
        print(f"sweep: trials run as {runner.name}; Ray started in {ray_started:.0f} s", flush=True)
    print(f"sweep: assets {','.join(assets)}, train seeds {args.train_seeds} x {args.train_windows} windows, "
          f"held-out seeds {args.eval_seeds} x {args.eval_windows}, validation seeds {args.val_seeds or 'none'}, "
          f"sim profile {profile.name}, latency {args.latency_ms:g} ms, results in {out}", flush=True)
    try:
        finished, baselines = _execute(args, runner, options, settings, space, agent_seeds, out, sources)
    finally:
        runner.close()
    wall = time.perf_counter() - start
    return _summarise(args, finished, baselines, options, out, runner.name, wall, ray_started if ray else None)


def _execute(
    args: argparse.Namespace, runner: Sequential | OnRay, options: SweepOptions, settings: list[dict],
    space: dict[str, Any], agent_seeds: list[int], out: Path, sources: list[str],
) -> tuple[list[Finished], Finished]:
    """Submit the baselines and the trials (a search asks its searcher as slots free up); collect the files."""
    names = tuple(n for n in args.baselines.split(",") if n)
    baselines = Finished(Trial("baselines", -1, {}))
    runner.submit(-1, run_baselines, options, names, str(out / "baselines"))
    searcher = searcher_for(args, space) if args.search else None
    planned: list[Trial] = []
    if searcher is None:
        for trial_settings in settings:
            for j, source in enumerate(sources):
                tag = "" if len(sources) == 1 else ("sim" if source == "sim" else f"rec{j}")
                for seed in agent_seeds:
                    planned.append(Trial(trial_name(len(planned), seed, trial_settings, tag), seed, trial_settings,
                                         source))
    total = args.samples if searcher is not None else len(planned)
    trials: dict[int, Trial] = {}
    finished: dict[int, Finished] = {}
    waiting = 1  # the baselines

    def submit_next() -> None:
        nonlocal waiting
        index = len(trials)
        if searcher is not None:
            sampled = searcher.suggest(str(index))
            trial_settings = {**parse_overrides(args.set), **{k: PPO_FIELD_TYPES[k](v) for k, v in sampled.items()}}
            trial = Trial(trial_name(index, args.agent_seed, trial_settings), args.agent_seed, trial_settings,
                          sources[0])
        else:
            trial = planned[index]
        trials[index] = trial
        runner.submit(index, run_trial, options, trial, str(out / trial.name))
        waiting += 1

    # a search keeps only as many trials in flight as there are slots, so later samples learn from earlier ones
    while len(trials) < total and (searcher is None or len(trials) < runner.slots):
        submit_next()
    while waiting:
        key, result = runner.next_done()
        waiting -= 1
        done = baselines if key == -1 else Finished(trials[key])
        if isinstance(result, BaseException):
            done.error = "".join(traceback.format_exception_only(type(result), result)).strip().splitlines()[-1]
        else:
            files = result.pop("files")
            _write_files(out / done.trial.name, files, Path(args.tensorboard) if args.tensorboard else None)
            done.report = result.pop("report")
            done.meta = result
        if key != -1:
            finished[key] = done
            if searcher is not None:
                value = done.report[OBJECTIVE] if done.report else None
                searcher.on_trial_complete(str(key), None if value is None else {OBJECTIVE: value}, error=value is None)
            _progress(done, len(finished), total, options)
        else:
            print(f"  baselines done: {', '.join(names)}" if done.error is None else f"  baselines failed: {done.error}",
                  flush=True)
        if searcher is not None and key != -1 and len(trials) < total:
            submit_next()
    return [finished[i] for i in sorted(finished)], baselines


def _progress(done: Finished, count: int, total: int, options: SweepOptions) -> None:
    head = f"  [{count}/{total}] {done.trial.name}"
    if done.error is not None:
        print(f"{head} failed: {done.error}", flush=True)
        return
    seconds = done.meta["finished"] - done.meta["started"]
    parts = [f"{seconds:.0f} s (pid {done.meta['pid']} on {done.meta['host']})"]
    if done.report.get(OBJECTIVE) is not None:
        parts.append(f"validation ${done.report[OBJECTIVE]:+,.0f}")
    for fill in options.fills:
        parts.append(f"held-out {fill} ${done.report['evaluation'][fill]['pnl']:+,.0f}")
    print(f"{head}: " + ", ".join(parts), flush=True)


def _summarise(
    args: argparse.Namespace, finished: list[Finished], baselines: Finished, options: SweepOptions, out: Path,
    backend: str, wall: float, ray_started: float | None,
) -> int:
    rules = {fill: [Outcome.from_dict(d) for d in outs]
             for fill, outs in (baselines.report or {}).get("evaluation", {}).items()}
    ok = [f for f in finished if f.report is not None]
    order = sorted(ok, key=lambda f: -(f.report.get(OBJECTIVE) or 0.0)) if args.search else ok
    for done in order:
        for fill in options.fills:
            rl = done.outcome(fill)
            rule_outcomes = rules.get(fill, [])
            print_table([rl, *rule_outcomes], f"trial {done.trial.name} (trained on {done.trial.source}, "
                        f"agent seed {done.trial.agent_seed}, "
                        f"{_settings_text(done.trial.settings)}): held-out evaluation, --fill {fill}")
            fair = next((o for o in rule_outcomes if o.strategy == "fair_value"), None)
            if fair is not None:
                print(ratio_line(rl, fair))
            print(verdict(rl, rule_outcomes))
    rows = [_summary_row(f, options, rules) for f in finished]
    _print_summary(rows, options, bool(options.val_seeds))
    _print_settings(ok, options)
    if args.search and ok:
        best = order[0]
        print(f"\nbest on validation: {best.trial.name} ({_settings_text(best.trial.settings)}), validation "
              f"${best.report[OBJECTIVE]:+,.0f}; its held-out net PnL: "
              + ", ".join(f"{fill} ${best.report['evaluation'][fill]['pnl']:+,.0f}" for fill in options.fills))
    own = sum(f.meta["finished"] - f.meta["started"] for f in [*finished, baselines] if f.meta)
    started = f" (Ray start-up {ray_started:.0f} s)" if ray_started is not None else ""
    print(f"\nsweep wall time {wall:.0f} s{started} for {len(finished)} trials and the baselines, {backend}; "
          f"their own run times add up to {own:.0f} s (about what one after another takes, plus start-ups)")
    with (out / "summary.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    results = {
        "argv": sys.argv[1:], "backend": backend, "wall_seconds": wall, "ray_startup_seconds": ray_started,
        "trials": [{"trial": f.trial.name, "error": f.error, **f.meta, "report": f.report} for f in finished],
        "baselines": {"error": baselines.error, **baselines.meta, "report": baselines.report},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out / 'summary.csv'}, {out / 'results.json'}; each trial's model, logs and report in its folder")
    failed = [f.trial.name for f in finished if f.error] + (["baselines"] if baselines.error else [])
    if failed:
        print(f"sweep: {len(failed)} job(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _summary_row(done: Finished, options: SweepOptions, rules: dict[str, list[Outcome]]) -> dict:
    row: dict[str, Any] = {"trial": done.trial.name, "agent_seed": done.trial.agent_seed,
                           "settings": json.dumps(done.trial.settings), "error": done.error or ""}
    if options.val_seeds:
        row[OBJECTIVE] = done.report.get(OBJECTIVE) if done.report else None
    for fill in options.fills:
        rl = done.outcome(fill)
        mean, low, high = rl.mean_ci() if rl else (math.nan,) * 3
        fair = next((o for o in rules.get(fill, []) if o.strategy == "fair_value"), None)
        row.update({
            f"trades_{fill}": rl.trades if rl else None, f"pnl_{fill}": rl.pnl if rl else None,
            f"mean_{fill}": mean, f"ci_low_{fill}": low, f"ci_high_{fill}": high,
            f"ratio_{fill}": rl.pnl / fair.pnl if rl and fair and fair.pnl > 0 else None,  # as learning.ratio_line
        })
    row["wall_seconds"] = done.meta["finished"] - done.meta["started"] if done.meta else None
    row["pid"] = done.meta.get("pid")
    return row


def _print_summary(rows: list[dict], options: SweepOptions, validation: bool) -> None:
    fills = options.fills
    print(f"\nsweep summary ({len(rows)} trials; held-out net PnL and mean $/window [95% CI] per fill)")
    width = max([len(r["trial"]) for r in rows] + [5]) + 2
    head = f"{'trial':<{width}}" + (f"{'val $':>9}" if validation else "")
    head += "".join(f"{'net ' + f + ' $':>12}{'mean [95% CI]':>28}{'RL/fair':>9}" for f in fills) + f"{'wall s':>8}"
    print(head)
    for r in rows:
        line = f"{r['trial']:<{width}}"
        if validation:
            line += f"{r[OBJECTIVE]:>9,.0f}" if r.get(OBJECTIVE) is not None else f"{'-':>9}"
        if r["error"]:
            print(line + f"failed: {r['error']}")
            continue
        for f in fills:
            ratio = r[f"ratio_{f}"]
            line += (f"{r[f'pnl_{f}']:>12,.0f}{r[f'mean_{f}']:>10,.1f} [{r[f'ci_low_{f}']:>6,.1f}, "
                     f"{r[f'ci_high_{f}']:>6,.1f}]" + (f"{ratio:>9.2f}" if ratio is not None else f"{'-':>9}"))
        print(line + f"{r['wall_seconds']:>8.0f}")


def _print_settings(ok: list[Finished], options: SweepOptions) -> None:
    """Per setting tried with several agent seeds: the mean and spread of the held-out net PnL over them."""
    groups: dict[str, list[Finished]] = {}
    for done in ok:
        groups.setdefault(json.dumps(done.trial.settings, sort_keys=True), []).append(done)
    for key, members in groups.items():
        if len(members) < 2:
            continue
        for fill in options.fills:
            values = [m.report["evaluation"][fill]["pnl"] for m in members]
            mean, sd = mean_sd(values)
            print(f"  {_settings_text(json.loads(key))}, --fill {fill}: held-out net PnL over {len(values)} agent "
                  f"seeds: mean {mean:,.0f}, sd {sd:,.0f}, range {min(values):,.0f} .. {max(values):,.0f}")


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.sweep`: the learning benchmark with --ray unless --no-ray is given."""
    from benchmarks.learning import main as learning_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return learning_main(argv if "--no-ray" in argv or "--ray" in argv else ["--ray", *argv])


if __name__ == "__main__":
    # the importable module's main, so Ray pickles the trial functions by name, not by value
    from benchmarks.sweep import main as sweep_main

    sys.exit(sweep_main())
