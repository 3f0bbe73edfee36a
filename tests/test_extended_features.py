"""The opt-in extended feature set: values, the untouched standard 18, and how checkpoints record the set."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.learning import Outcome, window_pnls
from persistence import CheckpointError
from strategies.base import EXTENDED_FEATURE_NAMES, FEATURE_NAMES, MarketState, features_matrix
from strategies.rl_mlx import PPOConfig, RLStrategy, config_for_features
from tests.conftest import PHASE5


def _state(**kw: float) -> MarketState:
    base = dict(
        market_id="m", asset="BTC", prob=0.5, best_bid=0.49, best_ask=0.51, down_bid=0.49, down_ask=0.51,
        index_price=100.0, price_to_beat=100.0, index_vol=0.0001, seconds_left=400.0, fee_rate=0.07,
        time_remaining=400.0 / 900.0, returns_1m=0.002, spread=0.02,
    )
    base.update(kw)
    return MarketState(**base)  # type: ignore[arg-type]


def test_extended_features_start_with_the_standard_18_unchanged() -> None:
    state = _state(index_price=100.3)
    extended = state.to_extended_features()
    assert len(EXTENDED_FEATURE_NAMES) == extended.shape[0] == 25
    assert EXTENDED_FEATURE_NAMES[:18] == FEATURE_NAMES
    np.testing.assert_array_equal(extended[:18], state.to_features())
    assert features_matrix([state]).shape == (1, 18)
    assert features_matrix([state], "extended").shape == (1, 25)


def test_index_above_strike_shows_as_distance_fair_value_and_a_cheap_up_ask() -> None:
    # index 0.04 % above the strike with 400 s left at 1e-4 per sqrt(s): z = 0.0004 / 0.002 = 0.2
    state = _state(index_price=100.0 * math.exp(0.0004))
    f = dict(zip(EXTENDED_FEATURE_NAMES, state.to_extended_features(), strict=True))
    fair = 0.5 * (1 + math.erf(0.2 / math.sqrt(2)))
    assert f["index_distance"] == pytest.approx(0.2 / 3, abs=1e-5)
    assert f["fair_up"] == pytest.approx((fair - 0.5) * 2, abs=1e-6)
    fee = 0.07 * 0.51 * 0.49
    assert f["up_ask_edge"] == pytest.approx((fair - 0.51 - fee) * 10, abs=1e-5)
    assert f["up_ask_edge"] > 0 > f["down_ask_edge"]
    assert f["up_mid"] == 0.0


def test_unknown_strike_falls_back_to_the_mid_and_a_missing_ask_reads_as_no_edge() -> None:
    state = _state(price_to_beat=0.0, best_ask=1.0)
    f = dict(zip(EXTENDED_FEATURE_NAMES, state.to_extended_features(), strict=True))
    assert f["index_distance"] == 0.0 and f["fair_up"] == 0.0
    assert f["up_ask_edge"] == -1.0
    assert np.all(np.abs(state.to_extended_features()) <= 1.0)


def test_extended_agent_checkpoint_rebuilds_as_extended(tmp_path: Path) -> None:
    agent = RLStrategy(config_for_features("extended"), seed=3)
    agent.eval()
    states = [_state(market_id=f"m{i}", index_price=100.0 + i / 10) for i in range(3)]
    before = agent.act_batch(states)
    agent.save(tmp_path / "ext")
    loaded = RLStrategy.from_checkpoint(tmp_path / "ext", seed=3)
    loaded.eval()
    assert loaded.config.feature_set == "extended" and loaded.config.input_dim == 25
    assert loaded.checkpoint_stats().feature_set == 2
    assert loaded.act_batch(states) == before


def test_extended_checkpoint_refused_by_a_standard_agent(tmp_path: Path) -> None:
    RLStrategy(config_for_features("extended"), seed=1).save(tmp_path / "ext")
    with pytest.raises(CheckpointError):
        RLStrategy(seed=1).load(tmp_path / "ext")


def test_published_phase5_checkpoint_loads_as_the_standard_set() -> None:
    agent = RLStrategy.from_checkpoint(PHASE5 / "rl_model")
    assert agent.config.feature_set == "standard" and agent.config.input_dim == 18
    assert agent.checkpoint_stats().feature_set == 1


def test_config_must_match_its_feature_set() -> None:
    with pytest.raises(ValueError):
        RLStrategy(PPOConfig(feature_set="extended"))
    with pytest.raises(ValueError):
        config_for_features("bogus")


def test_window_pnls_sum_assets_per_window_and_drop_the_shutdown_partial(tmp_path: Path) -> None:
    path = tmp_path / "episodes.csv"
    path.write_text(
        "window_start,asset,market_id,outcome,trades,pnl,fees,exposure\n"
        "100,BTC,a,Up,1,2.5,0.1,50\n100,ETH,b,Down,0,0,0,0\n"
        "1000,BTC,c,Down,2,-1.0,0.2,100\n1000,ETH,d,Up,1,4.0,0.1,50\n"
        "1900,BTC,e,shutdown,1,-0.3,0.1,50\n"
    )
    assert window_pnls(str(path)) == [2.5, 3.0]


def test_outcome_interval_is_mean_plus_minus_1_96_standard_errors() -> None:
    o = Outcome("x", "book", window_pnls=[1.0, 3.0, 5.0, 7.0])
    mean, low, high = o.mean_ci()
    half = 1.96 * math.sqrt(20.0 / 3.0) / 2.0
    assert (mean, low, high) == pytest.approx((4.0, 4.0 - half, 4.0 + half))


def test_cli_features_flag_builds_an_extended_agent_and_refuses_misuse() -> None:
    import run

    opts = run.validate(run.build_parser().parse_args(["--strategy", "rl", "--features", "extended"]))
    agent = run.build_strategy(opts)
    assert agent.config.feature_set == "extended" and agent.config.input_dim == 25
    for argv in (["--strategy", "fair_value", "--features", "extended"],
                 ["--strategy", "rl", "--load", "x", "--features", "extended"]):
        with pytest.raises(run.BadInput):
            run.validate(run.build_parser().parse_args(argv))
