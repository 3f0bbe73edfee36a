"""benchmarks.learning: several agent seeds on the same frames, baselines once, checkpoint selection on validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.learning import main, seed_summary, selected_candidate


def test_seed_summary_reports_mean_spread_and_each_seed() -> None:
    runs = [{"pnl_book": 100.0, "ratio_book": 0.2}, {"pnl_book": 300.0, "ratio_book": 0.6}]
    text = seed_summary(runs, "book")
    assert "over 2 agent seeds" in text
    assert "RL / fair_value: mean 0.40, sd 0.28, range 0.20 .. 0.60 (per seed: 0.20, 0.60)" in text
    assert "net PnL $: mean 200, sd 141" in text
    assert "selected" not in text  # no validation figures were given


def test_selected_candidate_is_the_best_on_validation_and_the_later_one_on_a_tie() -> None:
    rows = [
        {"candidate": "after_s1", "val_pnl": 50.0},
        {"candidate": "after_s2", "val_pnl": 120.0},
        {"candidate": "after_s3", "val_pnl": 120.0},
        {"candidate": "after_s4", "val_pnl": -10.0},
    ]
    assert selected_candidate(rows) == "after_s3"
    assert selected_candidate([{"seed": 1}]) is None


def test_agent_seeds_train_one_model_each_select_on_validation_and_run_the_baselines_once(tmp_path: Path) -> None:
    argv = [
        "--assets", "BTC", "--features", "extended", "--agent-seeds", "3,4", "--train-seeds", "1,2",
        "--train-windows", "1", "--eval-seeds", "1001", "--eval-windows", "1", "--val-seeds", "2001",
        "--val-windows", "1", "--fills", "book", "--baselines", "fair_value", "--out", str(tmp_path),
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    runs = results["agent_seeds"]
    assert [r["agent_seed"] for r in runs] == [3, 4]
    evaluation = {o["strategy"]: o for o in results["evaluation"]}
    assert sorted(evaluation) == ["fair_value", "rl[a3]", "rl[a3sel]", "rl[a4]", "rl[a4sel]"]
    fair = evaluation["fair_value"]
    for run in runs:
        training = run["training"]
        assert [row["seed"] for row in training] == [1, 2]
        for row in training:  # one checkpoint per training seed, each run on the validation seed
            assert Path(row["candidate"] + ".safetensors").is_file()
        assert run["selected"] == selected_candidate(training)
        last, chosen = evaluation[f"rl[a{run['agent_seed']}]"], evaluation[f"rl[a{run['agent_seed']}sel]"]
        assert run["ratio_book"] == last["pnl"] / fair["pnl"]
        assert run["ratio_sel_book"] == chosen["pnl"] / fair["pnl"]
    with pytest.raises(SystemExit, match="validation seeds"):
        main([*argv[:-2], "--val-seeds", "1001", "--out", str(tmp_path)])
