"""benchmarks.learning --agent-seeds: one agent per seed on the same frames, baselines once, mean and spread."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.learning import main, seed_summary


def test_seed_summary_reports_mean_spread_and_each_seed() -> None:
    runs = [{"pnl_book": 100.0, "ratio_book": 0.2}, {"pnl_book": 300.0, "ratio_book": 0.6}]
    text = seed_summary(runs, "book")
    assert "over 2 agent seeds" in text
    assert "RL / fair_value: mean 0.40, sd 0.28, range 0.20 .. 0.60 (per seed: 0.20, 0.60)" in text
    assert "net PnL $: mean 200, sd 141" in text


def test_agent_seeds_train_one_model_each_and_run_the_baselines_once(tmp_path: Path) -> None:
    argv = [
        "--assets", "BTC", "--features", "extended", "--agent-seeds", "3,4", "--train-seeds", "1",
        "--train-windows", "1", "--eval-seeds", "1001", "--eval-windows", "1", "--fills", "book",
        "--baselines", "fair_value", "--out", str(tmp_path),
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    runs = results["agent_seeds"]
    assert [r["agent_seed"] for r in runs] == [3, 4]
    for run in runs:
        assert Path(run["model"] + ".safetensors").is_file()
        assert run["training"][0]["windows"] >= 1
    names = [o["strategy"] for o in results["evaluation"]]
    assert sorted(names) == ["fair_value", "rl[a3]", "rl[a4]"]
    fair = next(o for o in results["evaluation"] if o["strategy"] == "fair_value")
    for run in runs:
        rl = next(o for o in results["evaluation"] if o["strategy"] == f"rl[a{run['agent_seed']}]")
        assert run["ratio_book"] == rl["pnl"] / fair["pnl"]
