"""The PPO agent (`--strategy rl`), one role a file; read in this order:

- `config.py`: `PPOConfig`, every hyperparameter with its published Phase 5 default.
- `networks.py`: the actor and critic (MLX modules) whose 36 tensors are the checkpoint.
- `buffer.py`: the per-market rollout buffer and `gae`.
- `ppo.py`: `ppo_loss` in the paper's order, and the update's loop over epochs and minibatches.
- `agent.py`: `RLStrategy`, the Strategy: decisions, rewards, updates, save and load.

The speed-ups sit beside them: `numpy_decisions.py` (the numpy copy of the networks that decides),
`numpy_update.py` and `kernels.py` (the update in numpy with numba loops, the default backend) and
`blas.py` (one OpenBLAS thread and no garbage collection during an update).
"""

from strategies.rl.agent import MAX_TRACKED_MARKETS, RLStrategy
from strategies.rl.buffer import RolloutBatch, RolloutBuffer, Step, gae
from strategies.rl.config import FEATURE_SET, PPOConfig, config_for_features
from strategies.rl.networks import ActorCritic, TemporalEncoder, TemporalMLP
from strategies.rl.ppo import explained_variance, ppo_loss

__all__ = [
    "FEATURE_SET",
    "MAX_TRACKED_MARKETS",
    "ActorCritic",
    "PPOConfig",
    "RLStrategy",
    "RolloutBatch",
    "RolloutBuffer",
    "Step",
    "TemporalEncoder",
    "TemporalMLP",
    "config_for_features",
    "explained_variance",
    "gae",
    "ppo_loss",
]
