"""The virtual-clock sources, built one way for `run.py`, the benchmarks and the gym env: the simulator, a
library of recordings, or the mix of both (live feeds and the real-time simulator stay in run.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sim.faults import FaultSpec
from sim.profiles import SimProfile
from sim.source import SimSource
from streamers.library import Library, LibrarySource, MixSource

VIRTUAL_KINDS = ("sim", "replay", "mix")


def virtual_source(
    kind: str,
    *,
    seed: int,
    assets: Sequence[str],
    profile: SimProfile | None = None,
    recordings: str | Library | None = None,
    speed: float | str = "max",
    epochs: int = 1,
    shuffle: bool = False,
    sim_share: float = 0.5,
    faults: FaultSpec | None = None,
    background: bool = True,
    warn: Callable[[str], None] | None = None,
) -> SimSource | LibrarySource | MixSource:
    """`kind` "sim": the simulator seeded `seed` at max speed (`background`: generated in a child process).
    "replay": the recordings (a path, folder or glob, or an open Library) `epochs` times, shuffled from `seed`
    when `shuffle`, paced at `speed`. "mix": those recorded windows alternating with simulator windows, the
    i-th seeded `seed + i`, `sim_share` of them simulated. `warn` takes the library's warnings (default
    stderr). Raises RecordingError for recordings that cannot be replayed.
    """
    if kind == "sim":
        return SimSource(seed, assets, faults, background=background, profile=profile)
    if kind not in VIRTUAL_KINDS:
        raise ValueError(f"no virtual source {kind!r}; use one of {', '.join(VIRTUAL_KINDS)}")
    if recordings is None:
        raise ValueError(f"a {kind} source needs recordings")
    library = Library.open(recordings) if isinstance(recordings, str) else recordings
    told = {} if warn is None else {"warn": warn}
    source = LibrarySource(library, speed, epochs=epochs, shuffle_seed=seed if shuffle else None, **told)
    if kind == "replay":
        return source
    return MixSource(source, lambda i: SimSource(seed + i, assets=assets, profile=profile), sim_share)
