"""Checkpoint save/load: round trip, the published fixtures, every refusal, failed saves, backups."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import persistence
from persistence import CheckpointError, load_checkpoint, save_checkpoint
from persistence.safetensors_file import encode_safetensors, read_safetensors
from strategies.base import MarketState
from strategies.rl_mlx import PPOConfig, RLStrategy
from tests.conftest import PHASE3, PHASE5, as_ordinary_user, copy_model

WRITER = Path(__file__).resolve().parent / "checkpoint_writer.py"
PROBE = np.random.default_rng(0)
PROBE_FEATURES = PROBE.uniform(-1, 1, (8, 18)).astype(np.float32)
PROBE_HISTORY = PROBE.uniform(-1, 1, (8, 5, 18)).astype(np.float32)


def _trained_agent(seed: int) -> RLStrategy:
    """An agent with weights changed by one update and non-trivial reward statistics."""
    agent = RLStrategy(PPOConfig(buffer_size=16, batch_size=8, n_epochs=2), seed=seed)
    agent.train()
    rng = np.random.default_rng(seed)
    for tick in range(24):
        agent.act_batch([MarketState(market_id="m", returns_1m=0.001 * tick)])
        agent.record("m", float(rng.normal()) if tick % 3 == 0 else 0.0)
    assert agent.updates_done == 1
    return agent


def _snapshot(agent: RLStrategy) -> tuple[dict[str, np.ndarray], tuple[float, float, int, int], np.ndarray]:
    stats = (agent.reward_mean, agent.reward_std, agent.reward_count, agent.updates_done)
    return agent.weights(), stats, agent.evaluate(PROBE_FEATURES, PROBE_HISTORY)[0]


def _assert_same(agent: RLStrategy, snapshot: tuple) -> None:
    weights, stats, probs = snapshot
    now = _snapshot(agent)
    assert now[0].keys() == weights.keys()
    for name in weights:
        np.testing.assert_array_equal(now[0][name], weights[name])
    assert now[1] == stats
    np.testing.assert_array_equal(now[2], probs)


def test_round_trip_restores_identical_outputs_and_reward_statistics(tmp_path: Path) -> None:
    saved = _trained_agent(seed=1)
    saved.save(tmp_path / "rl_model")
    loaded = RLStrategy(seed=99)
    assert loaded.load(tmp_path / "rl_model") == []
    _assert_same(loaded, _snapshot(saved))
    probs, values = saved.evaluate(PROBE_FEATURES, PROBE_HISTORY)
    probs2, values2 = loaded.evaluate(PROBE_FEATURES, PROBE_HISTORY)
    np.testing.assert_array_equal(probs, probs2)
    np.testing.assert_array_equal(values, values2)


def test_saved_files_follow_the_published_format(tmp_path: Path) -> None:
    agent = _trained_agent(seed=2)
    agent.save(tmp_path / "rl_model")
    published = mx.load(str(PHASE5 / "rl_model.safetensors"))
    ours = mx.load(str(tmp_path / "rl_model.safetensors"))  # MLX reads our writer's files
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in published.items()}
    assert all(v.dtype == mx.float32 for v in ours.values())
    with np.load(tmp_path / "rl_model_stats.npz", allow_pickle=False) as stats:
        for key in ("reward_mean", "reward_std", "reward_count", "input_dim", "hidden_size",
                    "critic_hidden_size", "history_len", "temporal_dim", "gamma", "buffer_size"):
            assert stats[key].shape == () and stats[key].dtype.kind in "if", key
        assert int(stats["reward_count"]) == agent.reward_count
        assert int(stats["critic_hidden_size"]) == 96 and float(stats["gamma"]) == pytest.approx(0.95)


def test_phase5_fixture_loads_and_gives_valid_distributions(phase5_model: Path) -> None:
    base = phase5_model
    agent = RLStrategy(seed=0)
    agent.load(base)
    assert agent.reward_count == 24325
    assert agent.reward_std == pytest.approx(31.597165, rel=1e-6)
    assert agent.reward_mean == pytest.approx(-0.0239616, rel=1e-5)
    probs, values = agent.evaluate(PROBE_FEATURES, PROBE_HISTORY)
    assert probs.shape == (8, 3) and values.shape == (8,)
    assert np.all(np.isfinite(probs)) and np.all(np.isfinite(values)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # training continues the same reward statistics: one more realized reward moves the count on
    agent.train()
    agent.act_batch([MarketState(market_id="m")])
    agent.record("m", 5.0)
    assert agent.reward_count == 24326


def test_phase3_fixture_is_refused_naming_the_tensor_and_both_shapes(tmp_path: Path) -> None:
    base = copy_model(PHASE3, "rl_model_prob_pnl", tmp_path, as_name="rl_model")
    for load in (lambda: RLStrategy(seed=0).load(base), lambda: RLStrategy.from_checkpoint(base)):
        with pytest.raises(CheckpointError) as err:
            load()
        message = str(err.value)
        assert "actor.fc1.weight" in message and "(128, 18)" in message and "(64, 50)" in message
        assert "architecture changed" in message


def test_from_checkpoint_builds_the_architecture_the_stats_record(tmp_path: Path) -> None:
    small = RLStrategy(
        PPOConfig(hidden_size=32, critic_hidden_size=48, temporal_dim=16, temporal_hidden=24, history_len=3), seed=4
    )
    small.save(tmp_path / "small")
    with pytest.raises(CheckpointError, match="architecture changed"):
        RLStrategy(seed=0).load(tmp_path / "small")
    rebuilt = RLStrategy.from_checkpoint(tmp_path / "small", PPOConfig(buffer_size=32))
    assert (rebuilt.config.hidden_size, rebuilt.config.critic_hidden_size) == (32, 48)
    assert (rebuilt.config.temporal_dim, rebuilt.config.temporal_hidden) == (16, 24)
    assert (rebuilt.config.history_len, rebuilt.config.buffer_size) == (3, 32)
    history = PROBE_HISTORY[:, :3]
    np.testing.assert_array_equal(
        rebuilt.evaluate(PROBE_FEATURES, history)[0], small.evaluate(PROBE_FEATURES, history)[0]
    )


def _truncate(base: Path) -> None:
    path = base.with_name("rl_model.safetensors")
    path.write_bytes(path.read_bytes()[:60_000])


def _flip_data_byte(base: Path) -> None:
    path = base.with_name("rl_model.safetensors")
    blob = bytearray(path.read_bytes())
    blob[-1000] ^= 0x40
    path.write_bytes(bytes(blob))


def _flip_header_byte(base: Path) -> None:
    path = base.with_name("rl_model.safetensors")
    blob = bytearray(path.read_bytes())
    blob[20] = 0xFF
    path.write_bytes(bytes(blob))


def _rewrite_weights(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    """Rewrite the weights file (keeping the stats file) after `change`, as a foreign tool would."""

    def apply(base: Path) -> None:
        path = base.with_name("rl_model.safetensors")
        weights, _ = read_safetensors(path)
        change(weights)
        path.write_bytes(encode_safetensors(weights, {}))

    return apply


def _nan_weight(weights: dict[str, np.ndarray]) -> None:
    weights["critic.fc2.weight"][3, 4] = np.nan


def _renamed_tensor(weights: dict[str, np.ndarray]) -> None:
    weights["actor.fc9.bias"] = weights.pop("actor.fc3.bias")


def _extra_tensor(weights: dict[str, np.ndarray]) -> None:
    weights["actor.fc4.weight"] = np.zeros((3, 3), dtype=np.float32)


def _remove_stats(base: Path) -> None:
    base.with_name("rl_model_stats.npz").unlink()


def _garble_stats(base: Path) -> None:
    base.with_name("rl_model_stats.npz").write_bytes(b"PK\x03\x04 not really a zip")


@pytest.mark.parametrize(
    ("source", "damage", "expected"),
    [
        ("phase5", _truncate, "truncated"),
        ("own", _truncate, "truncated"),
        ("own", _flip_data_byte, "do not match the checksum"),
        ("phase5", _flip_header_byte, "corrupt"),
        ("phase5", _rewrite_weights(_nan_weight), "critic.fc2.weight contains NaN"),
        ("phase5", _rewrite_weights(_renamed_tensor), "lacks 1 of the model's tensors (first: actor.fc3.bias)"),
        ("phase5", _rewrite_weights(_extra_tensor), "1 tensors this model does not have (first: actor.fc4.weight)"),
        ("phase5", _remove_stats, "is missing: without its reward statistics, reward scaling would restart"),
        ("phase5", _garble_stats, "is unusable"),
    ],
    ids=["truncated", "own-truncated", "corrupt-data", "corrupt-header", "nan", "missing-name", "unexpected-name",
         "missing-stats", "unreadable-stats"],
)
def test_damaged_checkpoint_is_refused_clearly_and_leaves_the_live_model_unchanged(
    tmp_path: Path, source: str, damage: Callable[[Path], None], expected: str
) -> None:
    if source == "phase5":
        base = copy_model(PHASE5, "rl_model", tmp_path)
    else:
        base = tmp_path / "rl_model"
        _trained_agent(seed=11).save(base)
    damage(base)
    agent = _trained_agent(seed=3)
    before = _snapshot(agent)
    with pytest.raises(CheckpointError) as err:
        agent.load(base)
    assert expected in str(err.value)
    _assert_same(agent, before)


def test_missing_reference_stats_can_be_accepted_with_fresh_reward_statistics(tmp_path: Path) -> None:
    base = copy_model(PHASE5, "rl_model", tmp_path)
    _remove_stats(base)
    agent = _trained_agent(seed=3)
    notes = agent.load(base, allow_fresh_stats=True)
    assert len(notes) == 1 and "starts fresh" in notes[0]
    assert (agent.reward_mean, agent.reward_std, agent.reward_count) == (0.0, 1.0, 0)


def test_own_checkpoint_without_its_stats_file_uses_the_statistics_embedded_in_the_weights(tmp_path: Path) -> None:
    saved = _trained_agent(seed=5)
    saved.save(tmp_path / "rl_model")
    _remove_stats(tmp_path / "rl_model")
    loaded = RLStrategy(seed=0)
    notes = loaded.load(tmp_path / "rl_model")
    assert len(notes) == 1 and "rl_model_stats.npz is missing" in notes[0]
    _assert_same(loaded, _snapshot(saved))


def test_stats_file_from_another_save_is_never_combined_with_the_weights(tmp_path: Path) -> None:
    first, second = _trained_agent(seed=6), _trained_agent(seed=7)
    first.save(tmp_path / "rl_model")
    old_stats = (tmp_path / "rl_model_stats.npz").read_bytes()
    second.save(tmp_path / "rl_model")
    (tmp_path / "rl_model_stats.npz").write_bytes(old_stats)  # as if killed between the two renames
    loaded = RLStrategy(seed=0)
    notes = loaded.load(tmp_path / "rl_model")
    assert "belongs to a different save" in notes[0]
    _assert_same(loaded, _snapshot(second))


def test_missing_checkpoint_says_so(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no model at .*nothing_here\.safetensors: the file does not exist"):
        RLStrategy(seed=0).load(tmp_path / "nothing_here")


def _temp_litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_save_to_a_directory_path_raises_and_leaves_no_litter(tmp_path: Path) -> None:
    agent = _trained_agent(seed=8)
    (tmp_path / "models").mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        agent.save(tmp_path / "models")
    (tmp_path / "rl_model.safetensors").mkdir()  # the weights file's own name is taken by a folder
    with pytest.raises(CheckpointError, match="previous checkpoint was left as it was"):
        agent.save(tmp_path / "rl_model")
    assert _temp_litter(tmp_path) == []
    assert not (tmp_path / "rl_model_stats.npz").exists()


def test_save_refuses_nan_weights_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    agent = _trained_agent(seed=9)
    agent.save(tmp_path / "rl_model")
    before = (tmp_path / "rl_model.safetensors").read_bytes()
    weights = agent.weights()
    weights["actor.ln1.bias"][0] = np.inf
    with pytest.raises(CheckpointError, match=r"actor\.ln1\.bias contains NaN or infinite"):
        save_checkpoint(tmp_path / "rl_model", weights, agent.checkpoint_stats())
    assert (tmp_path / "rl_model.safetensors").read_bytes() == before


def _limit_file_size() -> None:
    """Child process only: writes past 20 KB fail with EFBIG, as on a full disk."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


@pytest.mark.parametrize(
    ("prepare", "limit", "reason"),
    [
        (lambda folder: folder.chmod(0o555), as_ordinary_user(), "Permission denied"),
        (lambda folder: None, _limit_file_size, "File too large"),
    ],
    ids=["read-only-folder", "disk-full"],
)
def test_failed_save_keeps_the_previous_checkpoint_and_leaves_no_litter(
    tmp_path: Path, prepare: Callable[[Path], None], limit: Callable[[], None] | None, reason: str
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    base = folder / "rl_model"
    subprocess.run([sys.executable, str(WRITER), str(base), "once", "1"], check=True)
    prepare(folder)
    try:  # a process of its own: the permission or file-size limit applies to it alone
        result = subprocess.run(
            [sys.executable, str(WRITER), str(base), "once", "2"], preexec_fn=limit, capture_output=True, text=True
        )
    finally:
        folder.chmod(0o755)
    assert result.returncode == 1, result.stderr
    assert "could not save the model" in result.stdout and reason in result.stdout
    assert "previous checkpoint was left as it was" in result.stdout
    assert _temp_litter(folder) == []
    checkpoint = load_checkpoint(base)
    assert checkpoint.notes == [] and checkpoint.stats is not None and checkpoint.stats.updates == 1
    assert all(np.all(w == 1.0) for w in checkpoint.weights.values())


def test_backups_are_timestamped_loadable_and_pruned_to_keep(tmp_path: Path) -> None:
    agent = _trained_agent(seed=10)
    base = tmp_path / "rl_model"
    assert persistence.write_backup(base, keep=2) is None  # nothing saved yet
    agent.save(base)
    times = [datetime(2026, 1, 2, 3, 4, s) for s in (5, 6, 7)]
    names = [persistence.write_backup(base, keep=2, when=t) for t in times]
    assert names[0] == tmp_path / "rl_model_backup_20260102_030405"
    assert persistence.list_backups(base) == names[1:]
    assert not (tmp_path / "rl_model_backup_20260102_030405.safetensors").exists()
    assert not (tmp_path / "rl_model_backup_20260102_030405_stats.npz").exists()
    assert (tmp_path / "rl_model_backup_20260102_030407_stats.npz").exists()
    restored = RLStrategy(seed=0)
    assert restored.load(names[-1]) == []
    _assert_same(restored, _snapshot(agent))
