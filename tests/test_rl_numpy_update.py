"""The numpy PPO step against MLX autograd of `ppo_loss`: same gradients, same update, deterministic."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from strategies.rl import PPOConfig, RLStrategy, RolloutBatch, ppo_loss
from strategies.rl import kernels as ppo_kernels
from strategies.rl.blas import one_blas_thread, openblas_threads
from strategies.rl.numpy_update import NumpyPPO
from strategies.rl.ppo import loss_inputs


def _batch(n: int, seed: int, input_dim: int = 18) -> RolloutBatch:
    """Random transitions whose stored log-probs are far enough off that some ratios fall outside the clip."""
    rng = np.random.default_rng(seed)
    return RolloutBatch(
        features=rng.uniform(-1, 1, (n, input_dim)).astype(np.float32),
        history=rng.uniform(-1, 1, (n, 5, input_dim)).astype(np.float32),
        actions=rng.integers(0, 3, n).astype(np.int32),
        log_probs=(np.log(1 / 3) + rng.normal(0, 0.3, n)).astype(np.float32),
        values=rng.normal(0, 1, n).astype(np.float32),
        rewards=rng.normal(0, 1, n),
        advantages=rng.normal(0, 1, n).astype(np.float32),
        returns=rng.normal(0, 1, n).astype(np.float32),
    )


@pytest.fixture(params=["fused", "plain"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the compiled (numba) loops and on the plain numpy path, which must agree."""
    if request.param == "plain":
        monkeypatch.setattr(ppo_kernels, "AVAILABLE", False)
    else:
        assert ppo_kernels.AVAILABLE, "numba is a dependency: the compiled loops must be in use"
    return request.param


def test_numpy_gradients_and_loss_parts_equal_mlx_autograd_on_the_phase5_model(
    phase5_model: Path, kernels: str
) -> None:
    agent = RLStrategy.from_checkpoint(phase5_model, seed=0)
    batch = _batch(64, seed=1)
    arrays = loss_inputs(batch)
    ratio = np.exp(agent.evaluate(batch.features, batch.history)[0][np.arange(64), batch.actions]) / np.exp(
        batch.log_probs
    )
    assert (np.abs(ratio - 1) > agent.config.clip_eps).sum() >= 5  # the clipped branch is exercised

    loss_and_grad = nn.value_and_grad(agent.model, partial(ppo_loss, config=agent.config))
    (_, parts), grads = loss_and_grad(agent.model, *(mx.array(a) for a in arrays))
    expected = {k: np.array(v) for k, v in tree_flatten(grads)}

    trainer = NumpyPPO(agent.expected_shapes(), agent.config)
    assert trainer.fused == (kernels == "fused")
    trainer.load(agent.weights())
    metrics = trainer.gradients(*arrays)
    np.testing.assert_allclose(metrics, np.array(parts), rtol=1e-5, atol=1e-6)
    assert set(trainer.net.places) == set(expected)
    got = {k: trainer.grad(k) for k in expected}
    for name, grad in expected.items():
        scale = max(float(np.abs(grad).max()), 1e-3)
        np.testing.assert_allclose(got[name], grad, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


@pytest.mark.parametrize("feature_set", ["standard", "extended"])
def test_numpy_update_gives_the_weights_and_metrics_of_the_compiled_mlx_update(
    feature_set: str, kernels: str
) -> None:
    def trained(backend: str) -> tuple[dict[str, np.ndarray], dict]:
        base = replace(PPOConfig(n_epochs=3, batch_size=64, update_backend=backend), feature_set=feature_set)
        config = replace(base, input_dim=25 if feature_set == "extended" else 18)
        agent = RLStrategy(config, seed=4)
        metrics = {}
        for i in range(2):  # the second update starts from the Adam moments of the first
            metrics = agent.train_on_batch(_batch(200, seed=10 + i, input_dim=config.input_dim))
        return agent.weights(), metrics

    (mlx_weights, mlx_metrics), (np_weights, np_metrics) = trained("mlx"), trained("numpy")
    start = RLStrategy(
        replace(PPOConfig(), feature_set=feature_set, input_dim=25 if feature_set == "extended" else 18),
        seed=4,
    ).weights()
    for name, weight in mlx_weights.items():
        moved = float(np.abs(weight - start[name]).max())
        assert moved > 1e-5, name  # every tensor was trained
        np.testing.assert_allclose(np_weights[name], weight, atol=max(1e-7, 1e-3 * moved), err_msg=name)
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
        assert np_metrics[key] == pytest.approx(mlx_metrics[key], rel=1e-3, abs=1e-5), key


def test_numpy_update_is_deterministic_for_a_seed_and_refreshes_the_decision_weights() -> None:
    def run() -> tuple[RLStrategy, np.ndarray]:
        agent = RLStrategy(PPOConfig(n_epochs=2), seed=9)
        before = agent.evaluate_numpy(_batch(8, seed=3).features, _batch(8, seed=3).history)[0]
        agent.train_on_batch(_batch(256, seed=2))
        return agent, before

    (first, before), (second, _) = run(), run()
    for name, weight in first.weights().items():
        np.testing.assert_array_equal(second.weights()[name], weight)
    probe = _batch(8, seed=3)
    probs, values = first.evaluate(probe.features, probe.history)
    fast_probs, fast_values = first.evaluate_numpy(probe.features, probe.history)
    np.testing.assert_allclose(fast_probs, probs, atol=1e-5)
    np.testing.assert_allclose(fast_values, values, atol=1e-5)
    assert np.abs(fast_probs - before).max() > 1e-4  # decisions use the updated weights


def test_unknown_update_backend_is_refused_when_the_agent_is_built() -> None:
    with pytest.raises(ValueError, match="update_backend"):
        RLStrategy(PPOConfig(update_backend="torch"), seed=0)


def test_update_matmuls_run_onone_blas_thread_and_the_count_is_restored() -> None:
    assert openblas_threads is not None  # numpy's wheels bundle OpenBLAS: its thread count is reachable
    previous = openblas_threads(2)
    try:
        with one_blas_thread():
            assert openblas_threads(1) == 1
        assert openblas_threads(2) == 2
    finally:
        openblas_threads(previous)


def _at_offset(values: np.ndarray, offset: int) -> np.ndarray:
    """A copy of `values` starting `offset` floats into a fresh buffer (another memory alignment)."""
    buffer = np.empty(values.size + 16, dtype=values.dtype)
    view = buffer[offset : offset + values.size].reshape(values.shape)
    view[...] = values
    return view


def test_compiled_loops_give_bitwise_identical_results_at_any_memory_alignment() -> None:
    """Seeded runs must repeat exactly: vectorised sums may not depend on where numpy put an array."""
    rng = np.random.default_rng(5)
    a, d = (rng.standard_normal((64, 160)).astype(np.float32) for _ in range(2))
    w, b, bias_in = (rng.standard_normal(160).astype(np.float32) for _ in range(3))
    params, grads = rng.standard_normal(5000).astype(np.float32), rng.standard_normal(5000).astype(np.float32)
    mask, lr = (np.arange(5000) % 3 == 0).astype(np.float32), np.full(5000, 1e-4, dtype=np.float32)
    results = []
    for offset in range(8):
        xhat, out = _at_offset(np.zeros_like(a), offset), _at_offset(np.zeros_like(a), (offset * 3) % 8)
        inv_std = np.empty((64, 2), dtype=np.float32)
        ppo_kernels.layer_norm_forward(_at_offset(a, offset), bias_in, 64, w, b, xhat, inv_std, out)
        h = np.tanh(out)
        g_w, g_b, dx = (
            _at_offset(np.zeros(160, np.float32), offset),
            np.zeros(160, np.float32),
            np.empty_like(a),
        )
        ppo_kernels.layer_norm_tanh_backward(_at_offset(d, offset), h, xhat, inv_std, 64, w, g_w, g_b, dx)
        p, m, v = (
            _at_offset(params, offset),
            np.zeros(5000, np.float32),
            _at_offset(np.zeros(5000, np.float32), 1),
        )
        ppo_kernels.clip_and_adam(p, _at_offset(grads, offset), m, v, mask, lr, 0.5, 0.9, 0.999, 1e-8)
        results.append([xhat.copy(), inv_std, out.copy(), g_w.copy(), g_b, dx, p.copy(), m, v.copy()])
    for other in results[1:]:
        for got, first in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, first)
