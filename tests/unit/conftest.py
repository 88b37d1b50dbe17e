"""Unit tests import the collection the way Ansible does, from build/collections (linked by `make venv`)."""

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "build" / "collections"))

# CI: a fixed, bounded search so a run is repeatable; locally `HYPOTHESIS_PROFILE=dev` searches harder.
settings.register_profile("ci", max_examples=300, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("dev", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
