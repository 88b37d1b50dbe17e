import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

STATE_MACHINES = ("m1", "m2", "m3")


@pytest.fixture(autouse=True)
def _state_machines_only(request):
    """The per-host checks are about the state machines: the spares m4 and m5 have no mongod until a retirement or
    a repair makes them voters, and u1 is the unit host."""
    if "host" in request.fixturenames and request.getfixturevalue("host").backend.get_hostname() not in STATE_MACHINES:
        pytest.skip("a spare or the unit host: no state machine yet")
