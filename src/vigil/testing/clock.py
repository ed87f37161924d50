"""A manual clock for tests: time moves only when the test says so (bytewax's ``TimeTestingGetter``).

Every part of Vigil that reads time takes a clock (or a sleep) as an argument; tests pass a :class:`ManualClock`
so that nothing depends on the machine's speed or load.

Examples:
    >>> clock = ManualClock(100.0)
    >>> clock(), clock.ms()
    (100.0, 100000)
    >>> clock.advance(2.5); clock()
    102.5
    >>> clock.sleep(1.0); clock(), clock.slept     # sleeping advances the clock at once
    (103.5, [1.0])
    >>> clock.set(200); clock.ns()
    200000000000
"""

from __future__ import annotations


class ManualClock:
    """Seconds (float) that advance only through :meth:`advance`, :meth:`set` or :meth:`sleep`.

    Call it for seconds; :meth:`ms` and :meth:`ns` give the same instant in integer milliseconds and nanoseconds
    (the units Vigil's event-time and latency code use).

    Args:
        start_s: the initial time in seconds.
    """

    def __init__(self, start_s: float = 0) -> None:
        self.t = start_s
        self.slept: list[float] = []

    def __call__(self) -> float:
        """The time in seconds."""
        return self.t

    def ms(self) -> int:
        """The time in integer milliseconds."""
        return int(round(self.t * 1000))

    def ns(self) -> int:
        """The time in integer nanoseconds."""
        return int(round(self.t * 1e9))

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        if seconds < 0:
            raise ValueError(f"time only moves forward; got {seconds!r}")
        self.t += seconds

    def set(self, seconds: float) -> None:
        """Jump to an absolute time (forward only)."""
        self.advance(seconds - self.t)

    def sleep(self, seconds: float) -> None:
        """A sleep that returns at once, having moved the clock (and noted how long)."""
        self.slept.append(seconds)
        self.advance(max(seconds, 0.0))
