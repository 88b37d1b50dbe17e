import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

SPARE = "m4"


@pytest.fixture(autouse=True)
def _state_machines_only(request):
    """The per-host checks are about the state machines; the spare m4 has no mongod until m1 is retired."""
    if "host" in request.fixturenames and request.getfixturevalue("host").backend.get_hostname() == SPARE:
        pytest.skip("m4 is the spare until the retirement test")
