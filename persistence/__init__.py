"""Checkpoint save/load/validate for the RL agent, and timestamped backups."""

from persistence.backup import backup_name, list_backups, write_backup
from persistence.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointStats,
    checkpoint_paths,
    load_checkpoint,
    save_checkpoint,
    validate_weights,
    weights_fingerprint,
)
from persistence.errors import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "CheckpointStats",
    "backup_name",
    "checkpoint_paths",
    "list_backups",
    "load_checkpoint",
    "save_checkpoint",
    "validate_weights",
    "weights_fingerprint",
    "write_backup",
]
