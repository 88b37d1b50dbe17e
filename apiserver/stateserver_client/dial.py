"""Which API address to try first, and dialling the rest in parallel with a stagger (Juju's 50 ms).

Pure ordering (`dial_order`) and the staggered race (`dial_first`) are separate so each is tested directly.
"""

from __future__ import annotations

import ipaddress
import random
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

DIAL_STAGGER = 0.05
# host:port with a DNS name or IPv4 address, or [IPv6]:port; nothing that could change a URL's meaning.
_ADDRESS = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):(?P<port>[0-9]{1,5})")


def is_address(value: object) -> bool:
    """Whether value is a host:port the client may dial (from its config, its cache or a published list)."""
    match = _ADDRESS.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match["port"]) <= 65535:
        return False
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"])
        except ValueError:
            return False
    return True


def dedupe(addresses: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for address in addresses:
        if address and address not in seen:
            seen[address] = None
    return list(seen)


def dial_order(addresses: Iterable[str], sticky: str | None, rng: random.Random) -> list[str]:
    """The address that worked last time first (when it is still listed); otherwise a random first choice.
    The remaining addresses follow in random order, so load spreads over the API servers."""
    order = dedupe(addresses)
    rng.shuffle(order)
    if sticky in order:
        order.remove(sticky)
        order.insert(0, sticky)
    return order


class DialError(Exception):
    """Every address failed; `errors` maps each address to why."""

    def __init__(self, errors: dict[str, str]) -> None:
        detail = "; ".join(f"{a}: {e}" for a, e in errors.items()) or "no addresses to dial"
        super().__init__(f"no API server answered: {detail}")
        self.errors = errors


@dataclass
class _Race(Generic[T]):
    size: int
    cond: threading.Condition = field(default_factory=threading.Condition)
    won: threading.Event = field(default_factory=threading.Event)
    winner: tuple[str, T] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    finished: int = 0

    def settled(self) -> bool:
        return self.winner is not None or self.finished == self.size

    def finish(self, address: str, result: T | None = None, error: str | None = None) -> None:
        with self.cond:
            self.finished += 1
            if error is not None:
                self.errors[address] = error
            elif self.winner is None and result is not None:
                self.winner = (address, result)
                self.won.set()
            self.cond.notify_all()


def dial_first(order: list[str], dial: Callable[[str], T], stagger: float = DIAL_STAGGER,
               timeout: float = 10.0) -> tuple[str, T]:
    """Start dial(order[0]) now, dial(order[i]) after i*stagger unless one has already succeeded; return the first
    success as (address, result). A dead address therefore delays the next by `stagger`, not by its own timeout.
    Dials still running when a winner is found finish in the background; their results are dropped.
    `dial` must return a non-None result on success and raise on failure."""
    if not order:
        raise DialError({})
    race: _Race[T] = _Race(size=len(order))

    def attempt(index: int, address: str) -> None:
        # Waiting on the event (not sleeping) means a later dial is never started once someone has won.
        if index and race.won.wait(index * stagger):
            race.finish(address, error="not needed")
            return
        try:
            result = dial(address)
        except Exception as exc:  # noqa: BLE001 - any failure just loses the race for this address
            race.finish(address, error=f"{type(exc).__name__}: {exc}"[:300])
        else:
            race.finish(address, result=result)

    for index, address in enumerate(order):
        threading.Thread(target=attempt, args=(index, address), daemon=True, name=f"dial-{address}").start()
    with race.cond:
        race.cond.wait_for(race.settled, timeout=timeout)
        if race.winner is not None:
            return race.winner
        errors = dict(race.errors)
    for address in order:
        errors.setdefault(address, "timed out")
    raise DialError(errors)
