"""The client's address choice: sticky first, a seeded random first choice, and the 50 ms dial stagger."""

import random
import threading
import time
from collections import Counter

import pytest
from stateserver_client.dial import DialError, dial_first, dial_order

ADDRS = ["127.30.1.1:17070", "127.30.1.2:17070", "127.30.1.3:17070", "127.30.1.4:17070", "127.30.1.5:17070"]


def test_sticky_address_is_always_first_and_the_rest_follow() -> None:
    rng = random.Random(7)
    for _ in range(200):
        order = dial_order(ADDRS, ADDRS[3], rng)
        assert order[0] == ADDRS[3]
        assert sorted(order) == sorted(ADDRS)


def test_a_sticky_address_no_longer_listed_is_ignored() -> None:
    order = dial_order(ADDRS[:3], "127.30.9.9:17070", random.Random(1))
    assert sorted(order) == sorted(ADDRS[:3])


def test_first_choice_without_a_sticky_address_is_uniform() -> None:
    rng = random.Random(20261128)
    runs = 5000
    firsts = Counter(dial_order(ADDRS, None, rng)[0] for _ in range(runs))
    assert set(firsts) == set(ADDRS)
    expected = runs / len(ADDRS)
    # Chi-square with 4 degrees of freedom; 18.47 is the 0.1% critical value, so a fair shuffle passes, a biased
    # one (e.g. always the configured first) does not.
    chi2 = sum((count - expected) ** 2 / expected for count in firsts.values())
    assert chi2 < 18.47, firsts


def test_same_seed_same_order_different_seed_differs() -> None:
    assert [dial_order(ADDRS, None, random.Random(5)) for _ in range(3)] == \
           [dial_order(ADDRS, None, random.Random(5)) for _ in range(3)]
    orders = {tuple(dial_order(ADDRS, None, random.Random(seed))) for seed in range(50)}
    assert len(orders) > 10


def test_duplicates_are_dialled_once() -> None:
    assert sorted(dial_order(ADDRS + ADDRS[:2], None, random.Random(3))) == sorted(ADDRS)


class Recorder:
    """A fake dialer: records when each address was dialled; dead ones hang (like a blackholed host)."""

    def __init__(self, dead: set[str], hang: float = 5.0) -> None:
        self.dead, self.hang = dead, hang
        self.started: dict[str, float] = {}
        self.lock = threading.Lock()
        self.t0 = time.monotonic()

    def __call__(self, address: str) -> str:
        with self.lock:
            self.started[address] = time.monotonic() - self.t0
        if address in self.dead:
            time.sleep(self.hang)
            raise ConnectionError("timed out")
        return address


def test_a_hanging_first_address_costs_a_stagger_not_a_timeout() -> None:
    dialer = Recorder(dead={ADDRS[0]})
    started = time.monotonic()
    winner, _ = dial_first(ADDRS[:3], dialer, stagger=0.05, timeout=10)
    elapsed = time.monotonic() - started
    assert winner == ADDRS[1]
    assert dialer.started[ADDRS[1]] >= 0.05  # the second waited its stagger...
    assert elapsed < dialer.hang / 2  # ...but nowhere near the dead address's timeout
    assert ADDRS[2] not in dialer.started or dialer.started[ADDRS[2]] >= 0.1


def test_later_addresses_are_not_dialled_once_one_answered() -> None:
    dialer = Recorder(dead=set())
    winner, _ = dial_first(ADDRS, dialer, stagger=0.5, timeout=10)
    assert winner == ADDRS[0]
    time.sleep(0.1)
    assert list(dialer.started) == [ADDRS[0]]


def test_stagger_spaces_the_starts() -> None:
    dialer = Recorder(dead=set(ADDRS), hang=0.0)
    with pytest.raises(DialError) as failure:
        dial_first(ADDRS, dialer, stagger=0.05, timeout=10)
    assert set(failure.value.errors) == set(ADDRS)
    starts = [dialer.started[a] for a in ADDRS]
    for index, start in enumerate(starts):
        assert start >= index * 0.05 - 0.005  # Event.wait may return a hair early on some clocks


def test_all_failing_reports_every_address() -> None:
    with pytest.raises(DialError, match="127.30.1.2"):
        dial_first(ADDRS[:2], Recorder(dead=set(ADDRS), hang=0.0), stagger=0.01)
