"""What mongod_user sends to make a service's user exist with exactly the wanted roles and password."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._users import (
    CREATE,
    SET_PASSWORD,
    SET_ROLES,
    role_problems,
    user_plan,
)

API_ROLES = [{"role": "readWrite", "db": "stateserver"}, {"role": "clusterMonitor", "db": "admin"}]


@pytest.mark.parametrize(("existing", "works", "plan"), [
    (None, False, [CREATE]),
    (list(reversed(API_ROLES)), True, []),                              # order does not matter
    (API_ROLES, False, [SET_PASSWORD]),                                # the password was changed elsewhere
    ([API_ROLES[0]], True, [SET_ROLES]),                                # a role is missing
    ([*API_ROLES, {"role": "root", "db": "admin"}], True, [SET_ROLES]),  # one more than wanted is taken away
    ([], False, [SET_PASSWORD, SET_ROLES]),
])
def test_user_plan(existing, works, plan):
    assert user_plan(existing, works, API_ROLES) == plan


@pytest.mark.parametrize("roles", [[{"role": "readWrite"}], [{"role": "", "db": "x"}], ["readWrite"],
                                   [{"role": "read", "db": "x", "extra": 1}]])
def test_role_problems_name_the_entry(roles):
    problems = role_problems(roles)
    assert len(problems) == 1 and problems[0].startswith("roles[0]")


def test_good_roles_have_no_problems():
    assert role_problems(API_ROLES) == []
