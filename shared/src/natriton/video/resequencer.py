"""Per-camera results in frame-number order, each frame once, from arrivals in any order and possibly repeated.

Results come back from the mesh out of order, and a frame redelivered by JetStream (at-least-once) can be answered
twice: :class:`Resequencer` buffers results until every smaller frame number has been released or given up, and
drops repeats (counted). Reliable mode waits for a missing frame as long as it takes (``lag`` and ``missing`` say
what it waits for); real-time mode gives up frames that will never come, when told (``skip`` a number, or
``expect_at_least`` a watermark). Either way memory is bounded: with more than ``max_buffered`` entries waiting,
the oldest gap is given up (counted in ``overflowed``), so a lost frame never blocks a camera forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Released", "Resequencer"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Released(Generic[T]):
    """One frame's result, released in order."""

    frame_number: int
    item: T


class Resequencer(Generic[T]):
    """Releases items in frame-number order from ``start`` on; every method returns what it made releasable."""

    def __init__(self, *, start: int = 0, max_buffered: int = 1024) -> None:
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be at least 1, got {max_buffered}")
        self.next_expected = start
        """The frame number released next: everything below it was released or given up."""
        self.max_buffered = max_buffered
        self._items: dict[int, T] = {}
        """Results above ``next_expected``, waiting for the gap below them."""
        self._skips: set[int] = set()
        """Frame numbers above ``next_expected`` that will never come."""
        self._newest = start - 1
        """The largest frame number that arrived."""
        self._given_up: list[tuple[int, int]] = []
        """Recent given-up ranges [lo, hi), newest last (bounded), to tell a late arrival from a duplicate."""
        self.released = 0
        self.duplicates = 0
        """Arrivals of a frame number already released or already waiting (redeliveries)."""
        self.late = 0
        """Arrivals of a frame number already given up (skipped, passed by a watermark, or overflowed)."""
        self.skipped = 0
        """Frame numbers given up because the caller said they will never come."""
        self.overflowed = 0
        """Frame numbers given up because more than ``max_buffered`` later entries were waiting for them."""

    def push(self, frame_number: int, item: T) -> list[Released[T]]:
        """A result arrived; returns the results now releasable, in order (none when it fills no gap)."""
        if frame_number < self.next_expected:
            if self._was_given_up(frame_number):
                self.late += 1
            else:
                self.duplicates += 1
            return []
        if frame_number in self._items:
            self.duplicates += 1
            return []
        self._skips.discard(frame_number)  # said to be dropped, yet here: a real result wins
        self._items[frame_number] = item
        self._newest = max(self._newest, frame_number)
        return self._drain()

    def skip(self, frame_number: int) -> list[Released[T]]:
        """``frame_number`` will never come (dropped upstream); returns the results this releases."""
        if frame_number < self.next_expected or frame_number in self._items:
            return []  # passed already, or its result is here
        self._skips.add(frame_number)
        return self._drain()

    def expect_at_least(self, frame_number: int) -> list[Released[T]]:
        """Nothing below ``frame_number`` is still to come: give up its missing frames, release what waited."""
        out = self._drain()
        while self.next_expected < frame_number:
            self.skipped += self._give_up(min((n for n in self._items if n < frame_number), default=frame_number))
            out.extend(self._drain())
        return out

    @property
    def buffered(self) -> int:
        """Results and skip marks waiting for a smaller frame number."""
        return len(self._items) + len(self._skips)

    @property
    def lag(self) -> int:
        """Frames from the one waited for to the newest arrival (0 when nothing waits)."""
        return max(0, self._newest - self.next_expected + 1)

    def missing(self, limit: int = 16) -> list[int]:
        """The first ``limit`` frame numbers waited for (below the newest arrival), for reports."""
        out: list[int] = []
        number = self.next_expected
        while number < self._newest and len(out) < limit:
            if number not in self._items and number not in self._skips:
                out.append(number)
            number += 1
        return out

    def _drain(self) -> list[Released[T]]:
        out: list[Released[T]] = []
        while True:
            while True:
                number = self.next_expected
                if number in self._items:
                    out.append(Released(number, self._items.pop(number)))
                    self.released += 1
                elif number in self._skips:
                    self._skips.remove(number)
                    self._record_given_up(number, number + 1)
                    self.skipped += 1
                else:
                    break
                self.next_expected = number + 1
            if self.buffered <= self.max_buffered:
                return out
            self.overflowed += self._give_up(min(self._items.keys() | self._skips))  # the oldest gap

    def _give_up(self, upto: int) -> int:
        """Give up every frame from ``next_expected`` to ``upto`` (exclusive) that has no result; how many."""
        count = upto - self.next_expected
        if count <= 0:
            return 0
        self._record_given_up(self.next_expected, upto)
        self._skips = {n for n in self._skips if n >= upto}
        self.next_expected = upto
        return count

    def _record_given_up(self, lo: int, hi: int) -> None:
        ranges = self._given_up
        if ranges and ranges[-1][1] == lo:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))
        if len(ranges) > 64:
            del ranges[0]

    def _was_given_up(self, frame_number: int) -> bool:
        return any(lo <= frame_number < hi for lo, hi in self._given_up)
