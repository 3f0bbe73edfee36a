"""The trading engine: frames in, ticks every 0.5 s of clock time, one batched decision per tick.

A tick, for all active markets at once: (1) settle markets whose window ended; (2) build the
MarketState of every market with fresh data and no order in flight; (3) one `strategy.act_batch`;
(4) send the orders; (5) `strategy.record` per market, PPO update rows, checkpoints.

Paper orders are delayed: an order decided at tick time t fills against the book as it stands at
t + `latency_ms` (the venue holds API taker orders on crypto markets ~250 ms, plus network), and the
decision's `record` comes after that fill. With `latency_ms = 0`, or a broker that blocks on a real
venue (which supplies the real latency), orders execute within the tick.

Virtual sources (sim/replay at max speed) drive a VirtualClock: every tick and every fill due at a
time T < t runs, in time order, before the frame at time t is applied (a fill due at a tick's time
runs first). Real-time sources are pumped into a queue while the loop wakes on tick times and fill
due times, so both happen on time even when no frame arrives. A virtual source may come in episodes (a
library of recordings): the engine trades only the windows each episode holds whole, and forgets its
markets, data and clock between two (the strategy and the totals carry on).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.clock import Clock
from core.frames import ASSETS, FEED_DISCOVERY, FEED_POLYMARKET, EpisodeSource, Frame, Source
from engine.broker import Broker, Moment, PaperBroker
from engine.markets import Market, Recent, Windows, trusted
from engine.orders import InFlight, Order
from engine.positions import EXIT_SHUTDOWN, EXIT_UNRESOLVED, TradeRecord, settle
from engine.progress import History, run_progress
from engine.report import RunStats, build_report
from engine.state_builder import IndexVol, book_prob, build_state
from engine.trade_log import EpisodeRecord, RunLogs, new_run_id
from strategies.base import Action, MarketState, Strategy
from streamers.market_data import MarketData
from streamers.polymarket import PolymarketBook

_END = object()  # pump -> loop: the source is exhausted
_YIELD_EVERY = 512  # frames between event-loop yields on virtual sources (lets stop() and the dashboard run)
_MAX_TICK_LAG = 4  # real time: ticks further behind than this are skipped, not replayed
_DONE_MEMORY = 2048  # settled markets remembered so rediscovery does not revive them


# what a market's order would meet at this tick: its two books, the time, the index price
_Seen = tuple[PolymarketBook | None, PolymarketBook | None, float, float | None]


@dataclass
class EngineConfig:
    size: float = 100.0  # dollars, as run.py --size; each position's notional is size * 0.5
    fill: str = "book"  # "book" walks the real book with fees; "mid" is the reference's paper assumption
    max_windows: int | None = None  # stop after this many 15-minute windows resolved (--markets)
    duration: float | None = None  # stop after this many seconds of clock time
    assets: tuple[str, ...] = ASSETS
    train: bool = False
    stale_book_seconds: float = 30.0  # Polymarket market feed silent longer than this: no trading
    stale_futures_seconds: float = 15.0  # the asset's futures state older than this: no trading
    tick_seconds: float = 0.5
    log_dir: str | Path | None = "logs"  # None writes no CSV files
    run_id: str | None = None  # names the CSV files; default the wall-clock start time (ms) and the pid
    checkpoint_every: int = 0  # call on_checkpoint every N PPO updates (0: never)
    on_checkpoint: Callable[[], None] | None = None
    recorder: Any = None  # anything with write(frame)
    seed: int | None = None
    source_name: str = ""
    strategy_name: str = ""
    live_console: bool = False  # show the rich dashboard while running
    on_window: Callable[[dict], None] | None = None  # called with snapshot() each time a window resolves
    settle_grace_seconds: float = 60.0  # wait this long for an outcome before closing at the book
    latency_ms: float = 300.0  # paper orders fill against the book this long after the decision (0: at once)
    max_slippage: float = 0.05  # a delayed book order's limit: this far past the decision's best price
    tensorboard: Any = None  # anything with write_update/write_window (engine.tensorboard.TensorBoardLog)


class Engine:
    def __init__(
        self,
        strategy: Strategy,
        source: Source | EpisodeSource,
        clock: Clock,
        market_data: MarketData,
        cfg: EngineConfig,
        broker: Broker | None = None,
    ) -> None:
        """`clock` is a VirtualClock (advanced by the engine) when `source.virtual`, else a RealClock."""
        self.strategy = strategy
        self.source = source
        self.clock = clock
        self.md = market_data
        self.cfg = cfg
        self.assets = tuple(sorted(cfg.assets))
        self.broker: Broker = broker if broker is not None else PaperBroker(cfg.fill)
        # a broker whose calls block on the network (live orders) runs them in a worker thread, one at a
        # time, so the event loop keeps reading the feeds; frames are only applied between ticks either way
        self._blocking_broker = self.broker.blocking
        if not cfg.latency_ms >= 0.0:
            raise ValueError(f"latency_ms must be 0 or more, got {cfg.latency_ms}")
        # the live venue supplies the real latency; paper orders get the configured one
        latency = 0.0 if self._blocking_broker else cfg.latency_ms / 1000.0
        self._in_flight = InFlight(latency, cfg.fill, cfg.max_slippage, self.broker.skipped)
        self.stats = RunStats()
        self.logs: RunLogs | None = None
        self._markets: dict[str, Market] = {}
        self._order: list[Market] = []  # markets sorted by (start, asset): a stable iteration order
        self._reset_stream()
        self._stop = False
        self._finished = False
        self._start_time: float | None = None
        self._elapsed = 0.0  # clock seconds played in earlier episodes of a library replay
        self._tradable: Callable[[int, int], bool] | None = None  # the episode's complete windows (None: all)
        self._wall_start = 0.0
        self._pump_error: BaseException | None = None
        self.skipped_ticks = 0
        # the dashboard's histories, bounded however long the run
        self._history = History()

    # ---- public API -------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask for a clean stop; run() closes open positions and returns its report."""
        self._stop = True

    async def run(self) -> dict:
        self._wall_start = time.perf_counter()
        if self.cfg.log_dir is not None:
            run_id = self.cfg.run_id or new_run_id()
            self.logs = RunLogs(self.cfg.log_dir, run_id)
        if self.cfg.train:
            self.strategy.train()
        else:
            self.strategy.eval()
        dashboard_stop = asyncio.Event()
        dashboard = None
        if self.cfg.live_console:
            from engine.dashboard import run_dashboard

            dashboard = asyncio.create_task(run_dashboard(self.snapshot, dashboard_stop))
        try:
            if self.source.virtual:
                await self._run_virtual()
            else:
                await self._run_realtime()
            await self._shutdown()
        finally:
            if self.logs is not None:
                self.logs.close()
            if dashboard is not None:
                dashboard_stop.set()
                with contextlib.suppress(Exception):
                    await dashboard
        if self._pump_error is not None:
            raise self._pump_error
        return self.report()

    def report(self) -> dict:
        report = build_report(
            self.stats,
            strategy=self.cfg.strategy_name or self.strategy.name,
            source=self.cfg.source_name or type(self.source).__name__,
            seed=self.cfg.seed,
            fill=self.cfg.fill,
            wall_seconds=time.perf_counter() - self._wall_start,
            messages=self.md.messages,
            rejected=self.md.rejected,
            unknown=self.md.unknown,
            # counters a source may keep: a recording's unreadable lines, a live source's reconnects per feed
            bad_lines=int(getattr(self.source, "bad_lines", 0)),
            reconnects=getattr(self.source, "reconnects", 0),
            skipped={**self.broker.skipped.to_dict(), **self._in_flight.skips.to_dict()},
            assets=self.assets,
            latency_ms=None if self._blocking_broker else self.cfg.latency_ms,
        )
        report["skipped_ticks"] = self.skipped_ticks
        report["output_error"] = self.output_error()
        if self.md.source_info:  # a replayed recording's header: what produced the data
            report["recorded_source"] = self.md.source_info
        summary = getattr(self.source, "summary", None)  # a library of recordings: files, windows, episodes
        if summary is not None:
            report["library"] = summary()
        if self.logs is not None:
            report["logs"] = self.logs.paths
        return report

    def output_error(self) -> str | None:
        """Why a log or the recording could not be written (the run then stops at its next tick), else None."""
        for writer in (self.logs, self.cfg.recorder):
            error = getattr(writer, "error", None)
            if error:
                return error
        return None

    def snapshot(self) -> dict:
        """What the dashboard shows; reads state, changes nothing."""
        now = self.clock.now()
        wall = max(1e-9, time.perf_counter() - self._wall_start)
        current: tuple[float, float] | None = None
        for m in self._order:
            if current is None or m.info.end < current[1]:
                current = (m.info.start, m.info.end)
        grace = self.cfg.settle_grace_seconds
        markets = [m.row(self.md, now) for m in self._order if m.info.start <= now < m.info.end + grace]
        return {
            "clock": now,
            "started": bool(self._last_feed),  # a frame has arrived: the clock means something
            "strategy": self.cfg.strategy_name or self.strategy.name,
            "source": self.cfg.source_name,
            "training": self.cfg.train,
            "assets": self.assets,
            "pnl": self.stats.pnl,
            "fees": self.stats.fees,
            "trades": self.stats.trades,
            "win_rate": self.stats.win_rate,
            "windows": self.stats.windows,
            "decisions_per_second": self.stats.decisions / wall,
            "markets": markets,
            "last_update": self._history.last_update,
            "updates": self.stats.updates,
            "progress": run_progress(
                windows=self.stats.windows, max_windows=self.cfg.max_windows, duration=self.cfg.duration,
                started_at=self._start_time if self._last_feed else None, now=now, current_window=current,
                wall_seconds=wall,
            ),
            **self._history.curves(),
        }

    # ---- loops ------------------------------------------------------------------------------
    async def _run_virtual(self) -> None:
        if not isinstance(self.source, EpisodeSource):
            await self._run_frames(self.source.frames())
            return
        async for episode in self.source.episodes():
            self._tradable = episode.tradable
            await self._run_frames(episode.frames)
            if self._finished or self._stop:
                return
            await self._end_episode()

    async def _run_frames(self, frames: AsyncIterator[Frame]) -> None:
        step = self.cfg.tick_seconds
        k: int | None = None
        count = 0
        # the per-frame path, bound once: this loop runs ~70k times per simulated window
        recorder = self.cfg.recorder
        advance = self.clock.advance
        apply = self._apply
        in_flight = self._in_flight.queue
        async for frame in frames:
            if self._stop:
                break
            t = frame.t
            if recorder is not None:  # on receipt: a replay must see the frame that triggered the last tick
                recorder.write(frame)
            if k is None:
                k = math.ceil(t / step)
                self._start_time = t - self._elapsed
            # ticks and fills due before this frame, in time order; a fill due at a tick's time goes first
            while k * step < t or (in_flight and in_flight[0].due < t):
                tick_time = k * step
                if in_flight and in_flight[0].due <= tick_time:
                    due = in_flight[0].due
                    advance(due)
                    await self._fill_due(due)
                    continue
                advance(tick_time)
                await self._tick(tick_time)
                k += 1
                if self._finished:
                    return
            advance(t)
            apply(frame)
            count += 1
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _reset_stream(self) -> None:
        """What the engine knows of the data stream: fresh at the start and at each new episode."""
        self._done = Recent(_DONE_MEMORY)
        self._windows = Windows()
        self._index_vol = {a: IndexVol(self.cfg.tick_seconds) for a in self.assets}
        self._last_feed: dict[str, float] = {}
        self._discovery_dirty = True

    async def _end_episode(self) -> None:
        """Between episodes of a library replay: settle what is left (its outcome, else at the book), then
        forget the markets, their data and the clock, since the next episode's time may lie before this one's."""
        now = self.clock.now()
        for m in list(self._order):
            await self._try_settle(m, max(now, m.info.end + self.cfg.settle_grace_seconds))
        if self._end_reached(now):
            self._finished = True
            return
        self._elapsed = now - self._start_time if self._start_time is not None else self._elapsed
        self._reset_stream()
        self.md.forget()
        self.clock.restart()

    async def _run_realtime(self) -> None:
        step = self.cfg.tick_seconds
        queue: asyncio.Queue = asyncio.Queue(maxsize=100_000)
        pump = asyncio.create_task(self._pump(queue))
        self._start_time = self.clock.now()
        k = math.floor(self._start_time / step) + 1
        try:
            while not self._stop:
                tick_time = k * step
                now = self.clock.now()
                due = self._in_flight.queue[0].due if self._in_flight.queue else math.inf
                if due <= tick_time and now >= due:
                    await self._fill_due(due)
                    continue
                if now >= tick_time:
                    behind = int((now - tick_time) / step)
                    if behind > _MAX_TICK_LAG:
                        k += behind
                        self.skipped_ticks += behind
                        tick_time = k * step
                    await self._tick(tick_time)
                    k += 1
                    if self._finished:
                        return
                    continue
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        wake = min(tick_time, due)
                        item = await asyncio.wait_for(queue.get(), timeout=self.clock.seconds_until(wake))
                    except TimeoutError:
                        continue
                if item is _END:
                    return
                self._record(item)
                self._apply(item)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump(self, queue: asyncio.Queue) -> None:
        try:
            async for frame in self.source.frames():
                await queue.put(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced by run() after positions are closed
            self._pump_error = exc
        await queue.put(_END)

    def _record(self, frame: Frame) -> None:
        if self.cfg.recorder is not None:
            self.cfg.recorder.write(frame)

    def _apply(self, frame: Frame) -> None:
        self._last_feed[frame.feed] = frame.t
        self.md.handle(frame)
        if frame.feed == FEED_DISCOVERY:
            self._discovery_dirty = True

    # ---- the tick ---------------------------------------------------------------------------
    async def _tick(self, now: float) -> None:
        self.broker.begin_tick()
        if self._discovery_dirty:
            self._sync_markets(now)
        for asset in self.assets:
            self._index_vol[asset].sample(self.md.chainlink_price(asset))
        await self._settle_expired(now)
        if self._end_reached(now):
            self._finished = True
            return
        batch = self._build_states(now)
        if batch:
            await self._decide(batch)
        self._drain_updates(now)

    async def _settle_expired(self, now: float) -> None:
        """(1) Settle the markets whose window ended (each waits for its outcome up to the grace)."""
        for m in [m for m in self._order if m.info.end <= now]:
            await self._try_settle(m, now)

    def _build_states(self, now: float) -> list[tuple[Market, MarketState, _Seen]]:
        """(2) The state of every market in its window with fresh data and no order in flight, and what an
        order would meet now (its Moment is built only for an order); every market's prob history moves on."""
        md = self.md
        batch: list[tuple[Market, MarketState, Moment]] = []
        stale = 0
        poly_seen = self._last_feed.get(FEED_POLYMARKET)
        poly_fresh = poly_seen is not None and now - poly_seen <= self.cfg.stale_book_seconds
        for m in self._order:
            info = m.info
            if not info.start <= now < info.end:
                continue
            up_book = trusted(md.book(info.token_up))
            if up_book is not None:
                m.prob = book_prob(up_book, m.prob)
                m.probs.append(m.prob)
            if m.order is not None:
                continue  # its order is in flight: no new decision until it fills or fails
            futures = md.futures(info.asset)
            fut_at = futures.updated_at
            futures_stale = not fut_at or now - fut_at > self.cfg.stale_futures_seconds
            if up_book is None or not poly_fresh or futures_stale:
                stale += 1
                continue
            down_book = trusted(md.book(info.token_down))
            index_price = md.chainlink_price(info.asset)
            state = build_state(
                info, now, up_book, down_book, futures,
                index_price=index_price,
                price_to_beat=m.price_to_beat(md),
                index_vol=self._index_vol[info.asset].per_sqrt_second,
                position=m.position,
                prob=m.prob,
                probs=m.probs,
            )
            m.state = state
            batch.append((m, state, (up_book, down_book, now, index_price)))
        self.stats.stale_seconds += stale * self.cfg.tick_seconds
        return batch

    async def _decide(self, batch: list[tuple[Market, MarketState, _Seen]]) -> None:
        """(3) One batched decision, (4) its orders, (5) their rewards (a delayed order's at its fill)."""
        actions = self.strategy.act_batch([state for _, state, _ in batch])
        self.stats.decisions += len(batch)
        delayed = self._in_flight.latency > 0.0
        for (m, _, (up_book, down_book, now, index_price)), action in zip(batch, actions, strict=True):
            m.acted = True
            reward = 0.0
            if action != Action.HOLD:  # the broker does nothing on HOLD, the most common action
                at = Moment(up_book, down_book, now, m.prob, m.underlying_change(self.md, index_price))
                if not delayed:
                    reward = await self._execute(m, Action(int(action)), at)
                elif self._in_flight.send(m, Action(int(action)), at):
                    continue
            self.strategy.record(m.info.condition_id, reward)

    async def _execute(self, m: Market, action: Action, at: Moment) -> float:
        """Execute one action through the broker and book what it did; returns the PnL it realized."""
        result = await self._broker_call(
            self.broker.execute, action, m.info, m.position, self.cfg.size * 0.5, at
        )
        if result.opened and result.position is not None:
            m.exposure += result.position.cost
        m.position = result.position
        if result.record is None:
            return 0.0
        self._book_trade(m, result.record)
        return result.record.pnl

    # ---- delayed paper orders (engine.orders) -----------------------------------------------
    async def _fill_due(self, due: float) -> None:
        """Fill every order due at or before `due` against the book as it stands now, then record."""
        while (order := self._in_flight.pop_due(due)) is not None:
            m = order.market
            if order.due >= m.info.end:
                self._in_flight.skips.window_closed += 1
                reward = 0.0
            else:
                reward = await self._fill(order)
            self.strategy.record(m.info.condition_id, reward)

    async def _fill(self, order: Order) -> float:
        m = order.market
        md = self.md
        up_book = trusted(md.book(m.info.token_up))
        prob = book_prob(up_book, m.prob)
        books = self._in_flight.reachable(order, up_book, trusted(md.book(m.info.token_down)))
        if books is None:
            return 0.0
        change = m.underlying_change(md, md.chainlink_price(m.info.asset))
        return await self._execute(m, order.action, Moment(*books, order.due, prob, change))

    def _cancel_order(self, m: Market, stopping: bool) -> None:
        """A market finishing with an order in flight: the order never fills; its decision gets reward 0."""
        if self._in_flight.cancel(m, stopping):
            self.strategy.record(m.info.condition_id, 0.0)

    def _drain_updates(self, now: float) -> None:
        for metrics in self.strategy.pop_updates():
            self.stats.updates += 1
            self._history.update(metrics)
            if self.logs is not None:
                self.logs.write_update(now, metrics, self.stats.pnl, self.stats.trades, self.stats.win_rate)
            if self.cfg.tensorboard is not None:
                self.cfg.tensorboard.write_update(metrics, self.stats.pnl, self.stats.trades, self.stats.win_rate)
            every = self.cfg.checkpoint_every
            if every and self.cfg.on_checkpoint is not None and self.stats.updates % every == 0:
                self.cfg.on_checkpoint()

    def _end_reached(self, now: float) -> bool:
        if self._stop or self.output_error() is not None:
            return True
        if self.cfg.max_windows is not None and self.stats.windows >= self.cfg.max_windows:
            return True
        return (
            self.cfg.duration is not None
            and self._start_time is not None
            and now - self._start_time >= self.cfg.duration
        )

    # ---- markets ----------------------------------------------------------------------------
    def _sync_markets(self, now: float) -> None:
        self._discovery_dirty = False
        changed = False
        for cid, info in self.md.markets.items():
            known = self._markets.get(cid)
            if known is not None:
                known.info = info  # later discovery lines may carry price_to_beat
                continue
            if cid in self._done or info.asset not in self.assets or info.end <= now:
                continue
            if self._tradable is not None and not self._tradable(info.start, info.end):
                continue  # a window the episode's data does not cover from start to end: never half-traded
            self._markets[cid] = m = Market(info)
            self._windows.add(m)
            changed = True
        if changed:
            self._order = sorted(self._markets.values(), key=lambda m: m.key)

    async def _try_settle(self, m: Market, now: float) -> None:
        outcome = m.outcome(self.md)
        if outcome is None and now < m.info.end + self.cfg.settle_grace_seconds:
            return  # wait for the outcome without trading this market
        record: TradeRecord | None = None
        index = self.md.chainlink_price_at(m.info.asset, m.info.end) or self.md.chainlink_price(m.info.asset)
        change = m.underlying_change(self.md, index)
        if m.position is not None:
            if outcome is None:
                self.stats.unresolved_closes += 1
                record = await self._close_at_book(m, now, change, EXIT_UNRESOLVED)
            else:
                record = settle(m.position, outcome == "Up", now, m.prob, change)
            m.position = None
            self._book_trade(m, record)
        self._finish_market(m, outcome or "unresolved", record.pnl if record is not None else 0.0)

    def _finish_market(self, m: Market, outcome: str, final_pnl: float) -> None:
        cid = m.info.condition_id
        self._cancel_order(m, stopping=outcome == "shutdown")
        if m.acted:
            self.strategy.end_market(cid, final_pnl)
        if self.logs is not None:
            self.logs.write_episode(EpisodeRecord(
                m.info.start, m.info.asset, cid, outcome, m.trades, m.pnl, m.fees, m.exposure,
            ))
        del self._markets[cid]
        self._order.remove(m)
        self._done.add(cid)
        window_pnl = self._windows.finish(m)
        if window_pnl is not None and outcome != "shutdown":
            self.stats.windows += 1
            if self.cfg.tensorboard is not None:
                self.cfg.tensorboard.write_window(window_pnl)
            if self.cfg.on_window is not None:
                self.cfg.on_window(self.snapshot())

    def _book_trade(self, m: Market, record: TradeRecord) -> None:
        self.stats.add_trade(record.asset, record.pnl, record.fee)
        m.trades += 1
        m.pnl += record.pnl
        m.fees += record.fee
        self._history.trade(record, self.stats.pnl)
        if self.logs is not None:
            self.logs.write_trade(record)

    async def _close_at_book(self, m: Market, now: float, change: float, reason: str) -> TradeRecord:
        """Close the market's position at its books as they stand (the broker writes off what nobody buys)."""
        at = Moment(self.md.book(m.info.token_up), self.md.book(m.info.token_down), now, m.prob, change)
        return await self._broker_call(self.broker.close_at_book, m.info, m.position, at, reason)

    async def _broker_call(self, method: Callable[..., Any], *args: Any) -> Any:
        if self._blocking_broker:
            return await asyncio.to_thread(method, *args)
        return method(*args)

    async def _shutdown(self) -> None:
        """End of run: close what is still open at the book and end every market the strategy knows."""
        self.broker.begin_tick()
        now = self.clock.now()
        self._drain_updates(now)
        for m in list(self._order):
            if m.position is None and not m.acted:
                continue
            record: TradeRecord | None = None
            if m.position is not None:
                self.stats.shutdown_closes += 1
                change = m.underlying_change(self.md, self.md.chainlink_price(m.info.asset))
                record = await self._close_at_book(m, now, change, EXIT_SHUTDOWN)
                m.position = None
                self._book_trade(m, record)
            self._finish_market(m, "shutdown", record.pnl if record is not None else 0.0)
        await self._broker_call(self.broker.close_all)  # live: cancel anything left resting on the venue
