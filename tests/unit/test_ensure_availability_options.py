"""ensure_availability's option checks beyond Ansible's types: the spelling of n, the names to retire."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.modules.ensure_availability import n_spelling_problem, names_problem


@pytest.mark.parametrize("raw", [3, 5, 7, "3", "5", "7"])
def test_plain_spellings_of_n_are_accepted(raw):
    assert n_spelling_problem(raw) is None


@pytest.mark.parametrize("raw", [" 5", "5 ", "+5", "05", "٥", "５", 5.0, "5.0", True, None, "five"])
def test_other_spellings_are_refused_as_the_playbook_refuses_them(raw):
    """ensure-ha.yml asserts `n | string in ['3', '5', '7']`: exactly these values fail both checks."""
    problem = n_spelling_problem(raw)
    assert problem and "3, 5 or 7" in problem and repr(raw) in problem
    assert str(raw) not in ("3", "5", "7")  # the playbook's own test, for the same value


@pytest.mark.parametrize(("retire", "replace_with"), [([""], None), (["sm2 "], None), (["sm2"], " "), ([" sm2"], None)])
def test_retire_names_that_cannot_be_machines_are_refused(retire, replace_with):
    problem = names_problem(retire, replace_with)
    assert problem and "must name machines" in problem and "nothing was changed" in problem


def test_retire_names_are_accepted():
    assert names_problem(["sm2", "sm3"], "sm6") is None and names_problem([], None) is None
