"""sim.fit: a recording of a simulator run with known, non-default parameters is fitted, the parameters come
back within stated tolerances, and a twin run from the fitted profile shows the recording's figures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.calibration import return_statistics
from sim import fit as sim_fit
from sim.profiles import SimProfile, load_profile
from streamers.recording import Recorder
from streamers.recording_stats import figures, lead_lag, read_recording

ASSETS = ("BTC", "ETH")
WINDOWS = 5
# The fit starts from (and keeps what it does not estimate of) a base profile given with --base: the
# realistic one with few jumps and thin-tailed seconds, so that 10 windows per asset say what the
# volatility is (with the realistic 60 % of the variance in jumps they mostly say how many jumps came).
BASE = SimProfile(
    "calm", replace(load_profile("realistic").model, jump_share=0.1, second_return_df=0.0, vol_half_life_s=5400.0)
)
TRUTH = SimProfile(
    "truth",
    replace(
        BASE.model,
        # read directly (spread CDF 0.65 / 0.85 / 1: no quantile the twin is checked on sits on a step)
        spread_ticks_probs=(0.0, 0.65, 0.2, 0.15), spread_resample_prob=0.03, book_levels=8, size_median=300.0,
        size_sigma=0.7, size_update_prob=0.3, maker_reaction_s=(0.2, 0.6), rtds_delay_s=(0.3, 0.9),
        vol_of_vol=0.3,
        # matched by simulation
        requote_threshold=0.014, quote_noise_std=0.15, futures_delay_s=(0.9, 1.5), maker_vol_scale=1.3,
    ),
    {"BTC": 0.0030, "ETH": 0.0020},
)  # fmt: skip


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], SimProfile, str]:
    """Two recordings of the truth (seeds 42, 43), fitted by the command line tool."""
    folder = tmp_path_factory.mktemp("fit")
    paths = []
    for seed in (42, 43):
        path = str(folder / f"truth{seed}.jsonl.gz")
        frames, _ = sim_fit.sim_frames(seed, ASSETS, WINDOWS, TRUTH)
        with Recorder(path) as rec:
            for frame in frames:
                rec.write(frame)
        paths.append(path)
    base = folder / "calm.json"
    base.write_text(BASE.to_json())
    out = str(folder / "fitted.json")
    code = sim_fit.main([*paths, "--out", out, "--base", str(base), "--rounds", "4", "--sim-seeds", "1",
                         "--sim-windows", str(WINDOWS)])  # fmt: skip
    assert code == 0
    return paths, load_profile(out), out


def test_direct_parameters_are_recovered(fitted: tuple[list[str], SimProfile, str]) -> None:
    _, profile, _ = fitted
    m = profile.model
    assert len(m.spread_ticks_probs) == 4
    for got, want in zip(m.spread_ticks_probs, TRUTH.model.spread_ticks_probs, strict=True):
        assert got == pytest.approx(want, abs=0.03)
    assert m.spread_resample_prob == pytest.approx(0.03, rel=0.2)
    assert m.book_levels == 8
    assert m.size_median == pytest.approx(300.0, rel=0.05)
    assert m.size_sigma == pytest.approx(0.7, rel=0.1)
    assert m.size_update_prob == pytest.approx(0.3, rel=0.2)
    assert m.maker_reaction_s == pytest.approx((0.2, 0.6), abs=0.03)
    assert m.rtds_delay_s == pytest.approx((0.3, 0.9), abs=0.03)
    # 1-s realized variance over 10 windows per asset: the volatility regime and the jumps still make it
    # the noisiest estimate
    assert profile.return_std_15m["BTC"] == pytest.approx(0.0030, rel=0.3)
    assert profile.return_std_15m["ETH"] == pytest.approx(0.0020, rel=0.3)
    assert 0.15 <= m.vol_of_vol <= 0.6  # how the regime wanders, from 20 windows: only its size


def test_simulated_parameters_are_recovered(fitted: tuple[list[str], SimProfile, str]) -> None:
    _, profile, _ = fitted
    m = profile.model
    assert m.requote_threshold == pytest.approx(0.014, rel=0.2)
    assert m.quote_noise_std == pytest.approx(0.15, rel=0.25)
    # each run draws one delay per asset from the range: the recordings hold four draws (they average about
    # 1.09 s here, not the range's 1.2 s) and the twin two, so the centre is known to a few tenths
    assert sum(m.futures_delay_s) / 2 == pytest.approx(1.2, abs=0.3)
    assert m.maker_vol_scale == pytest.approx(1.3, rel=0.2)
    # what the fit does not touch keeps the base value
    assert (m.jump_share, m.second_return_df, m.season_boost) == (0.1, 0.0, BASE.model.season_boost)


def test_twin_from_the_fitted_profile_shows_the_recordings_figures(fitted: tuple[list[str], SimProfile, str]) -> None:
    paths, profile, _ = fitted
    recorded = [read_recording(p) for p in paths]
    twin = sim_fit.read_sim([7], ASSETS, WINDOWS, profile)  # seeds neither the truth nor the fit ran
    rec_fig, twin_fig = figures(recorded), figures(twin)
    for key in ("spread_q50", "spread_q90", "mid_change_share", "mid_change_q50", "mid_change_q90",
                "depth_top_q10", "depth_top_q50", "depth_top_q90", "book_levels_q50"):  # fmt: skip
        assert twin_fig[key].value == pytest.approx(rec_fig[key].value, rel=0.25), key
    rec_ll, twin_ll = lead_lag(recorded).summary(), lead_lag(twin).summary()
    assert twin_ll["lead_lag_peak_lag"].value == rec_ll["lead_lag_peak_lag"].value
    assert twin_ll["lead_lag_rho_0"].value == pytest.approx(rec_ll["lead_lag_rho_0"].value, rel=0.25)
    # the volatility: the fitted return std is the recording's realized figure, and the model keeps it
    # over a long run of its index (a 10-window twin would show its own regime and jumps)
    long_run = return_statistics(3, 400, ASSETS, profile)
    for asset in ASSETS:
        assert long_run[f"ret_std_{asset}"] == pytest.approx(rec_fig[f"ret_std_rv_{asset}"].value, rel=0.25)


def test_profile_file_is_a_complete_profile_with_what_it_was_fitted_to(fitted: tuple[list[str], SimProfile, str]) -> None:
    paths, profile, out = fitted
    data = json.loads(Path(out).read_text())
    assert data["name"] == "fitted" and all(p in data["description"] for p in paths)
    assert set(data["model"]) == set(json.loads(load_profile("realistic").to_json())["model"])
    assert SimProfile.from_dict(data).model == profile.model


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["/no/such.jsonl", "--out", "p.json"], "does not exist"),
        (["REC", "--out", "/no/such/folder/p.json"], "does not exist"),
        (["REC", "--out", "p.json", "--base", "nonsense"], "no such profile"),
        (["REC"], "--out"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(
    args: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "r.jsonl"
    rec.write_text('{"t": 1.0, "feed": "discovery", "msg": "[]"}\n')
    args = [str(rec) if a == "REC" else (str(tmp_path / a) if a == "p.json" else a) for a in args]
    assert sim_fit.main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert not (tmp_path / "p.json").exists()


def test_recording_without_markets_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "r.jsonl"
    rec.write_text('{"t": 1.0, "feed": "discovery", "msg": "[]"}\n{"t": 2.0, "feed": "polymarket_market", "msg": "PONG"}\n')
    assert sim_fit.main([str(rec), "--out", str(tmp_path / "p.json")]) == 2
    assert "nothing to fit" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()
