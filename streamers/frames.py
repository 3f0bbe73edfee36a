"""The frame vocabulary lives in `core.frames`; this path stays for scripts and code that import it here."""

from core.frames import *  # noqa: F403 (every name core.frames exports)
from core.frames import __all__ as __all__
