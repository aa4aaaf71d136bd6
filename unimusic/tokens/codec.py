"""Typed events <-> integer ids through ordered ranges (the mt3 event-codec idea).

A codec knows nothing about specials (PAD, EOS...) or tasks: those belong to the
unified vocabulary, which places each codec's ids at an offset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Sequence

from unimusic.errors import InputError


@dataclasses.dataclass(frozen=True)
class EventRange:
    """Events of one ``type`` whose integer values run from ``min_value`` to ``max_value``."""

    type: str
    min_value: int
    max_value: int

    def __post_init__(self):
        if self.max_value < self.min_value:
            raise ValueError(f"event range {self.type!r}: max_value < min_value")

    @property
    def size(self) -> int:
        return self.max_value - self.min_value + 1


@dataclasses.dataclass(frozen=True)
class Event:
    type: str
    value: int


class EventCodec:
    """Maps :class:`Event` to ids laid out range after range, in the given order."""

    def __init__(self, ranges: Sequence[EventRange]):
        types = [r.type for r in ranges]
        if len(set(types)) != len(types):
            raise ValueError(f"duplicate event types in {types}")
        self.ranges: tuple[EventRange, ...] = tuple(ranges)
        self._offsets: dict[str, int] = {}
        offset = 0
        for r in self.ranges:
            self._offsets[r.type] = offset
            offset += r.size
        self.num_classes = offset
        self._by_type = {r.type: r for r in self.ranges}

    # -- strict direction ------------------------------------------------------
    def encode_event(self, event: Event) -> int:
        r = self._by_type.get(event.type)
        if r is None:
            raise InputError(f"event {event}", f"unknown event type {event.type!r}")
        if not r.min_value <= event.value <= r.max_value:
            raise InputError(
                f"event {event}",
                f"value {event.value} outside [{r.min_value}, {r.max_value}] for {event.type!r}",
            )
        return self._offsets[event.type] + event.value - r.min_value

    def event_range(self, event_type: str) -> tuple[int, int]:
        """First and last id (inclusive) of ``event_type``."""
        r = self._by_type[event_type]
        start = self._offsets[event_type]
        return start, start + r.size - 1

    # -- tolerant direction ----------------------------------------------------
    def decode_event_index(self, index: int) -> Event | None:
        """The event of ``index``, or ``None`` if the id is outside every range."""
        if not isinstance(index, (int,)) or isinstance(index, bool):
            try:
                index = int(index)
            except (TypeError, ValueError):
                return None
        if index < 0 or index >= self.num_classes:
            return None
        for r in self.ranges:
            start = self._offsets[r.type]
            if index < start + r.size:
                return Event(r.type, r.min_value + index - start)
        return None  # pragma: no cover - unreachable by construction

    def describe(self) -> list[dict]:
        return [dataclasses.asdict(r) for r in self.ranges]


def content_hash(obj) -> str:
    """A short stable hash of a JSON-serialisable description."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(payload).hexdigest()[:16]

