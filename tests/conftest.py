"""What every test file shares: where the committed fixtures are (the repository alone, nothing beside it)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
