"""The clocks live in `core.clock`; this path stays for scripts and code that import them here."""

from core.clock import Clock, RealClock, VirtualClock

__all__ = ["Clock", "RealClock", "VirtualClock"]
