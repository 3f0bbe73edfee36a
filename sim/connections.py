"""The simulator's websocket plumbing: one client's outbox and writer task, the router of (feed, key)
subscriptions, and the seeded server-side faults (dropped connections, stalled feeds)."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection

from core.frames import FEED_FUTURES_MARKET, FEED_FUTURES_PUBLIC, FEED_POLYMARKET, FEED_RTDS, FEED_SPOT
from sim.faults import FaultSpec
from sim.messages import SimEvent

# frames waiting for one client before it is cut off, so a stuck client cannot grow memory
OUTBOX_LIMIT = 200_000
# a stall pauses one feed for this many seconds of clock time
STALL_SECONDS = (2.0, 6.0)
FEEDS_SERVED = (FEED_FUTURES_MARKET, FEED_FUTURES_PUBLIC, FEED_SPOT, FEED_POLYMARKET, FEED_RTDS)

DROP = object()  # outbox marker: kill the connection here (the drop fault)


@dataclass(slots=True)
class ServerStats:
    """Per-server counters, for tests and the console."""

    connections: int = 0  # websocket connections accepted, or REST requests served
    messages: int = 0  # websocket frames sent, or REST responses
    dropped: int = 0  # connections killed by the drop fault (or for being too slow)


class Conn:
    """One websocket client: what it asked for, and the frames waiting to be written to it."""

    __slots__ = ("custom_features", "feed", "keys", "outbox", "server", "stats", "wake", "ws")

    def __init__(self, ws: ServerConnection, feed: str, server: str, stats: ServerStats) -> None:
        self.ws = ws
        self.feed = feed
        self.server = server
        self.stats = stats
        self.keys: set[str] = set()
        self.custom_features = False
        self.outbox: deque[object] = deque()
        self.wake = asyncio.Event()

    def push(self, item: object) -> None:
        if len(self.outbox) >= OUTBOX_LIMIT:
            # a client this far behind is cut off, as real venues do with slow consumers
            self.outbox.clear()
            self.stats.dropped += 1
            self.ws.transport.abort()
            return
        self.outbox.append(item)
        self.wake.set()

    async def write_forever(self) -> None:
        """Drain the outbox in order; a `DROP` marker aborts the TCP connection mid-stream."""
        ws = self.ws
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.outbox:
                item = self.outbox.popleft()
                if item is DROP:
                    self.stats.dropped += 1
                    ws.transport.abort()
                    return
                await ws.send(item)  # type: ignore[arg-type]
                self.stats.messages += 1

    def on_writer_done(self, task: asyncio.Task) -> None:
        """A writer that stops on its own (dropped, too slow, crashed) takes the connection down with it."""
        if not task.cancelled():
            self.ws.transport.abort()


class Router:
    """(feed, key) -> connections; key is a stream name, a token id or an RTDS symbol."""

    def __init__(self) -> None:
        self._subs: dict[tuple[str, str], set[Conn]] = {}

    def add(self, conn: Conn, keys: Iterable[str]) -> list[str]:
        """Subscribe; returns the keys that were new for this connection."""
        added = []
        for key in keys:
            if key not in conn.keys:
                conn.keys.add(key)
                self._subs.setdefault((conn.feed, key), set()).add(conn)
                added.append(key)
        return added

    def remove(self, conn: Conn, keys: Iterable[str]) -> None:
        for key in keys:
            conn.keys.discard(key)
            subscribers = self._subs.get((conn.feed, key))
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self._subs[(conn.feed, key)]

    def forget(self, conn: Conn) -> None:
        self.remove(conn, list(conn.keys))

    def subscribers(self, feed: str, key: str) -> set[Conn]:
        return self._subs.get((feed, key), set())


class Faults:
    """Seeded server-side faults: drop a connection, stall a feed (SimMarket itself injects garbage)."""

    def __init__(self, spec: FaultSpec | None, seed: int) -> None:
        self.drop = spec.drop if spec is not None else 0.0
        self.stall = spec.stall if spec is not None else 0.0
        self._rng = random.Random(f"sim-faults-{seed}")
        self.stalled_until = dict.fromkeys(FEEDS_SERVED, 0.0)
        self.held: dict[str, deque[SimEvent]] = {feed: deque() for feed in FEEDS_SERVED}
        self.stalls = 0

    def deliver(self, conn: Conn, msg: str) -> None:
        """Push one message to a connection; with probability `drop` the connection dies right after it."""
        conn.push(msg)
        if self._rng.random() < self.drop:
            conn.push(DROP)

    def is_stalled(self, feed: str, now: float) -> bool:
        """Whether `feed` is paused at clock time `now`; each message may start a new pause."""
        if now < self.stalled_until[feed]:
            return True
        if self._rng.random() < self.stall:
            self.stalled_until[feed] = now + self._rng.uniform(*STALL_SECONDS)
            self.stalls += 1
            return True
        return False
