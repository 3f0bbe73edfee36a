"""The PPO update: the loss in the paper's order, then epochs of shuffled minibatch steps over one batch.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347): eq. 6 is the
probability ratio, eq. 7 the clipped surrogate, eq. 9 the objective with the value loss and the
entropy bonus. A minibatch step (`ppo_loss`, each network's gradients clipped to max_grad_norm by their
global norm, Adam) runs on one of two backends: `NumpyUpdate` (the default: the analytic gradients of
numpy_update.py, tested against MLX autograd of `ppo_loss`) or `MLXUpdate` (MLX autograd, compiled).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any, Protocol

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from strategies.rl.blas import gc_paused, one_blas_thread
from strategies.rl.buffer import RolloutBatch
from strategies.rl.config import PPOConfig
from strategies.rl.networks import ActorCritic
from strategies.rl.numpy_update import NumpyPPO

METRIC_NAMES = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")  # ppo_loss's parts
_APPROX_KL = METRIC_NAMES.index("approx_kl")


def ppo_loss(
    model: ActorCritic,
    features: mx.array,
    history: mx.array,
    actions: mx.array,
    old_log_probs: mx.array,
    advantages: mx.array,
    returns: mx.array,
    *,
    config: PPOConfig,
) -> tuple[mx.array, mx.array]:
    """The loss to minimise on one minibatch, and its parts in METRIC_NAMES order.

    old_log_probs: of the taken actions when they were sampled; advantages: GAE, normalised over the
    whole batch; returns: the GAE returns the critic regresses on.
    """
    # the probability ratio r = pi(a|s) / pi_old(a|s) of the taken action (eq. 6), via log-probabilities
    logits = model.actor(features, history)
    log_probs_all = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    log_probs = mx.take_along_axis(log_probs_all, actions[:, None], axis=-1).squeeze(-1)
    log_ratio = log_probs - old_log_probs
    ratio = mx.exp(log_ratio)
    # the clipped surrogate L^CLIP = mean(min(r A, clip(r, 1 - eps, 1 + eps) A)) (eq. 7), negated
    clipped_ratio = mx.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps)
    policy_loss = -mx.minimum(ratio * advantages, clipped_ratio * advantages).mean()
    # the value loss L^VF: squared error of the critic against the returns (not clipped)
    value_loss = mx.square(model.critic(features, history).squeeze(-1) - returns).mean()
    # the entropy S of the policy, a bonus that keeps it exploring
    entropy = -(mx.exp(log_probs_all) * log_probs_all).sum(axis=-1).mean()
    # eq. 9 as a loss, -(L^CLIP - c1 L^VF + c2 S), added up in the order earlier releases used (same bits)
    loss = policy_loss - config.entropy_coef * entropy + config.value_coef * value_loss
    # diagnostics, not optimised: the low-variance "k3" estimator of KL(old || new), and the share of
    # ratios outside the clip range
    approx_kl = ((ratio - 1) - log_ratio).mean()
    clip_fraction = (mx.abs(ratio - 1) > config.clip_eps).astype(mx.float32).mean()
    return loss, mx.stack([policy_loss, value_loss, entropy, approx_kl, clip_fraction])


def ppo_update(
    backend: UpdateBackend, batch: RolloutBatch, config: PPOConfig, rng: np.random.Generator
) -> dict[str, float]:
    """One PPO update on `batch`. Metrics: the loss parts averaged over the minibatch steps taken, how much
    of the returns the values recorded at collection explained, the batch's mean reward and win rate."""
    sums, steps = ppo_epochs(backend, loss_inputs(batch), config, rng)
    mean = sums / steps
    realized = batch.rewards[batch.rewards != 0]
    return {
        **{name: float(value) for name, value in zip(METRIC_NAMES, mean, strict=True)},
        "explained_variance": explained_variance(batch.values, batch.returns),
        "buffer_avg_reward": float(batch.rewards.mean()),
        # share of the realized (non-zero) rewards in the batch that were gains
        "buffer_win_rate": float((realized > 0).mean()) if len(realized) else 0.0,
    }


def ppo_epochs(
    backend: UpdateBackend, inputs: Sequence[np.ndarray], config: PPOConfig, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """n_epochs passes of shuffled minibatch steps over `inputs` (`loss_inputs`), stopping early once an
    epoch's mean approx-KL exceeds kl_stop_factor x target_kl. Returns the summed step metrics and the steps.
    """
    n = len(inputs[0])
    starts = range(0, n, config.batch_size)
    sums, steps = np.zeros(len(METRIC_NAMES)), 0
    with backend.running():
        for _ in range(config.n_epochs):
            order = rng.permutation(n)
            shuffled = [a[order] for a in inputs]
            total = 0  # adding numpy's float64 metrics to it is exact; MLX's stay lazy until epoch_metrics
            for start in starts:
                total = total + backend.step([a[start : start + config.batch_size] for a in shuffled])
            epoch = backend.epoch_metrics(total)
            sums, steps = sums + epoch, steps + len(starts)
            if float(epoch[_APPROX_KL]) / len(starts) > config.kl_stop_factor * config.target_kl:
                break  # the policy moved too far from the one that collected the data
    return sums, steps


def loss_inputs(batch: RolloutBatch) -> list[np.ndarray]:
    """`ppo_loss`'s inputs after the model; advantages normalised over the whole batch, not per minibatch."""
    n = len(batch.actions)
    advantages = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    history = batch.history.reshape(n, -1)
    return [batch.features, history, batch.actions, batch.log_probs, advantages, batch.returns]


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - predicted) / Var(target); NaN when the target is constant."""
    var = float(np.var(target))
    return float("nan") if var == 0.0 else 1.0 - float(np.var(target - predicted)) / var


class UpdateBackend(Protocol):
    """Who runs the minibatch steps of an update on an `ActorCritic`'s weights."""

    def running(self) -> AbstractContextManager[None]:
        """Around one update's steps: the model's weights are current when it exits."""
        ...

    def step(self, minibatch: Sequence[np.ndarray]) -> Any:
        """One gradient step on `loss_inputs` rows; its metrics before the step, in METRIC_NAMES order
        (an array that supports `+`, possibly not computed yet)."""
        ...

    def epoch_metrics(self, total: Any) -> np.ndarray:
        """The sum of an epoch's `step` results, computed, as numpy."""
        ...


class MLXUpdate:
    """MLX autograd of `ppo_loss`, per-network gradient clipping and Adam, compiled into one step."""

    def __init__(self, model: ActorCritic, config: PPOConfig) -> None:
        self.model = model
        self.actor_optimizer = optim.Adam(learning_rate=config.actor_lr)
        self.critic_optimizer = optim.Adam(learning_rate=config.critic_lr)
        self.actor_optimizer.init(model.actor.trainable_parameters())
        self.critic_optimizer.init(model.critic.trainable_parameters())
        loss_and_grad = nn.value_and_grad(model, partial(ppo_loss, config=config))

        def train_step(*minibatch: mx.array) -> mx.array:
            (_, metrics), grads = loss_and_grad(model, *minibatch)
            actor_grads, _ = optim.clip_grad_norm(grads["actor"], config.max_grad_norm)
            critic_grads, _ = optim.clip_grad_norm(grads["critic"], config.max_grad_norm)
            self.actor_optimizer.update(model.actor, actor_grads)
            self.critic_optimizer.update(model.critic, critic_grads)
            return metrics

        state = [model.state, self.actor_optimizer.state, self.critic_optimizer.state]
        self._train_step = mx.compile(train_step, inputs=state, outputs=state)

    @contextmanager
    def running(self) -> Iterator[None]:
        yield  # the steps update the model in place

    def step(self, minibatch: Sequence[np.ndarray]) -> mx.array:
        return self._train_step(*(mx.array(a) for a in minibatch))

    def epoch_metrics(self, total: mx.array) -> np.ndarray:
        mx.eval(total, self.model.parameters())  # one host sync per epoch
        return np.array(total)


class NumpyUpdate:
    """The same step in numpy (`NumpyPPO`): the weights leave the model before an update, return after it."""

    def __init__(self, model: ActorCritic, config: PPOConfig) -> None:
        self.model = model
        self.trainer = NumpyPPO({k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}, config)

    @contextmanager
    def running(self) -> Iterator[None]:
        self.trainer.load({k: np.array(v) for k, v in tree_flatten(self.model.parameters())})
        with one_blas_thread(), gc_paused():
            yield
        self.model.update(tree_unflatten([(k, mx.array(v)) for k, v in self.trainer.weights().items()]))
        mx.eval(self.model.parameters())

    def step(self, minibatch: Sequence[np.ndarray]) -> np.ndarray:
        return self.trainer.step(*minibatch)

    def epoch_metrics(self, total: np.ndarray) -> np.ndarray:
        return total


UPDATE_BACKENDS: dict[str, Callable[[ActorCritic, PPOConfig], UpdateBackend]] = {
    "numpy": NumpyUpdate,
    "mlx": MLXUpdate,
}
