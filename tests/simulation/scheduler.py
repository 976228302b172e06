"""A deterministic scheduler: cooperative actors on a virtual clock, crashes on demand.

Every function instance, heartbeat, watchdog run and user command of a simulated
deployment is an *actor* (a greenlet) belonging to a *process*. Exactly one actor runs
at a time; it runs until it reaches an I/O call of a simulated service, which is a
*yield point*: there the scheduler may kill its process (a crash), and otherwise picks,
with the seeded random generator, which actor goes next. Time only moves when no actor
can run: the clock jumps to the next timer. The same seed therefore replays the same
schedule exactly, interleavings and crashes included.

A killed process's actors never perform another I/O call: each is resumed with
:class:`Crashed` raised inside it (so that it unwinds), and any yield point it reaches
while unwinding raises :class:`Crashed` again at once, as a SIGKILLed process does
nothing more.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import greenlet

START = 1_800_000_000.0  # virtual epoch seconds at the start of every schedule


class Crashed(BaseException):
    """Raised inside an actor whose process was killed (BaseException: nothing catches it)."""


class InjectedFault(Exception):
    """A transient failure a simulated service was told to raise (a 503, a lost answer)."""


@dataclass(eq=False)
class Process:
    name: str
    crashable: bool = True
    alive: bool = True
    actors: list[Actor] = field(default_factory=list)
    paused_until: float = 0.0  # frozen (a long GC pause, a stalled VM) until then


@dataclass(eq=False)
class Actor:
    name: str
    process: Process
    glet: Any = None
    done: bool = False
    token: int = 0  # bumped on every wake-up, so that stale timers are ignored
    joiners: list[Actor] = field(default_factory=list)


class Sim:
    """The scheduler of one schedule (one seed)."""

    def __init__(self, seed: int, *, crash_rate: float = 0.0, pause_rate: float = 0.0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = START
        self.crash_rate = crash_rate
        self.pause_rate = pause_rate
        self.pause_seconds = 200.0
        self.crashes: list[tuple[float, str, str]] = []  # (time, process, where)
        self.errors: list[tuple[str, BaseException]] = []  # unexpected exceptions in actors
        self._ready: list[Actor] = []
        self._actors: list[Actor] = []
        self._timers: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._hub: Any = None
        self.current: Actor | None = None
        self.where = ""  # what the current actor is doing (for crash records)

    # -- actors -----------------------------------------------------------------------------

    def spawn(self, function: Callable[[], Any], *, process: Process, name: str) -> Actor:
        actor = Actor(name, process)
        process.actors.append(actor)
        self._actors.append(actor)

        def body() -> None:
            try:
                if process.alive:
                    function()
            except Crashed:
                pass
            except Exception as exc:  # the code under test raised where it should not
                self.errors.append((name, exc))
            finally:
                actor.done = True
                for joiner in actor.joiners:
                    self._wake(joiner)

        actor.glet = greenlet.greenlet(body, parent=self._hub)
        self._ready.append(actor)
        return actor

    def at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the scheduler at virtual time ``when`` (it may spawn actors)."""
        heapq.heappush(self._timers, (max(when, self.now), next(self._seq), callback))

    def kill(self, process: Process, where: str) -> None:
        """Kill ``process`` if it still runs (a finished one has nothing left to kill)."""
        if process.alive and any(not actor.done for actor in process.actors):
            process.alive = False
            self.crashes.append((self.now, process.name, where))

    # -- called from inside actors -------------------------------------------------------------

    def _me(self) -> Actor:
        actor = self.current
        assert actor is not None, "a yield point outside any actor"
        return actor

    def _check(self, actor: Actor) -> None:
        if not actor.process.alive:
            raise Crashed

    def yield_point(self, where: str, *, pause_rate: float = 0.0) -> None:
        """An I/O call: maybe crash here, then let another actor run. ``pause_rate``
        raises the chance of a pause at this call above the schedule's."""
        actor = self._me()
        self._check(actor)
        process = actor.process
        if process.crashable and self.crash_rate and self.rng.random() < self.crash_rate:
            self.kill(process, where)
            raise Crashed
        rate = max(self.pause_rate, pause_rate)
        if process.crashable and rate and self.rng.random() < rate:
            # The whole process freezes, its heartbeat too: it comes back to a world that
            # went on without it (the stale worker that fencing exists for).
            process.paused_until = self.now + self.pause_seconds * (0.5 + self.rng.random())
            self.crashes.append((self.now, process.name, f"paused at {where}"))
        self.where = where
        self._ready.append(actor)
        self._park(actor)

    def sleep(self, seconds: float) -> None:
        actor = self._me()
        self._check(actor)
        actor.token += 1
        heapq.heappush(
            self._timers, (self.now + max(seconds, 0.0), next(self._seq), (actor, actor.token))
        )
        self._park(actor)

    def join(self, target: Actor) -> None:
        """Wait until ``target`` has finished."""
        actor = self._me()
        self._check(actor)
        if target.done:
            return
        target.joiners.append(actor)
        self._park(actor)

    def wake(self, target: Actor) -> None:
        """Cut ``target``'s sleep short (it runs again as soon as it is picked)."""
        self._wake(target)

    def _wake(self, actor: Actor) -> None:
        if not actor.done and actor not in self._ready:
            actor.token += 1
            self._ready.append(actor)

    def _park(self, actor: Actor) -> None:
        self._hub.switch()
        self._check(actor)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, *, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Run actors and timers until nothing is left, ``stop()`` says so (checked when the
        clock moves), or the clock would pass ``until``."""
        self._hub = greenlet.getcurrent()
        for actor in self._ready:  # spawned before the loop started
            actor.glet.parent = self._hub
        while True:
            if self._ready:
                actor = self._ready.pop(self.rng.randrange(len(self._ready)))
                if actor.process.paused_until > self.now and actor.process.alive:
                    actor.token += 1
                    heapq.heappush(
                        self._timers,
                        (actor.process.paused_until, next(self._seq), (actor, actor.token)),
                    )
                    continue
                self._resume(actor)
                continue
            if not self._timers or stop():
                return
            when, _seq, item = heapq.heappop(self._timers)
            if when > until:
                heapq.heappush(self._timers, (when, _seq, item))
                return
            self.now = max(self.now, when)
            if isinstance(item, tuple):
                actor, token = item
                if token == actor.token and not actor.done:
                    self._ready.append(actor)
            else:
                item()

    def shutdown(self) -> None:
        """Kill whatever still runs, and let each actor unwind inside the scheduler."""
        self._hub = greenlet.getcurrent()
        for actor in self._actors:
            if not actor.done:
                actor.process.alive = False  # not a crash the schedule injected
                self._resume(actor)
        self._ready.clear()
        self._timers.clear()

    def _resume(self, actor: Actor) -> None:
        self.current = actor
        try:
            if actor.glet.parent is not self._hub:
                actor.glet.parent = self._hub
            if not actor.process.alive and actor.glet:  # started: unwind it
                actor.glet.throw(Crashed)
            else:
                actor.glet.switch()
        finally:
            self.current = None

    @property
    def idle(self) -> bool:
        return not self._ready


class SimRuntime:
    """``resumable.serverless._runtime.Runtime`` on the simulation's clock and actors."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def now(self) -> float:
        return self.sim.now

    def sleep(self, seconds: float) -> None:
        self.sim.sleep(seconds)

    def every(self, interval: float, tick: Callable[[], bool], name: str) -> _SimPeriodic:
        return _SimPeriodic(self.sim, interval, tick, name)


class _SimPeriodic:
    def __init__(self, sim: Sim, interval: float, tick: Callable[[], bool], name: str) -> None:
        self.sim = sim
        self.stopped = False
        owner = sim._me()

        def loop() -> None:
            while not self.stopped:
                sim.sleep(interval)
                if self.stopped or not tick():
                    return

        self.actor = sim.spawn(loop, process=owner.process, name=f"{owner.name}/{name}")

    def stop(self) -> None:
        self.stopped = True
        self.sim.wake(self.actor)
        if self.sim.current is not self.actor:
            self.sim.join(self.actor)
