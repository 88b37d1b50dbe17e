"""scale: --check and status.yml change nothing; 3 -> 5 -> 7; then n=3 changes nothing; n=4 and n=9 fail clearly
and change nothing.

The tests run in file order and build on each other (one set, grown step by step).
"""

import hatest
import pytest

MACHINES = [f"m{i}" for i in range(1, 8)]


def converge(n):
    proc = hatest.run_playbook("ensure-ha.yml", "-e", f"n={n}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


def snapshot():
    """What must not change: the config version, the voters and the machine records."""
    config = hatest.replset_config()
    with hatest.client() as c:
        records = sorted((r["_id"], r["wants_vote"]) for r in c.stateserver.machines.find())
    return config["version"], hatest.voters(config), records


def test_converge_made_three_voters():
    hatest.healthy_voters(3)
    assert hatest.voters(hatest.replset_config()) == MACHINES[:3]


def test_check_mode_prints_the_plan_and_touches_nothing():
    before = snapshot()
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=5", "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "adding machines: m4, m5" in proc.stdout
    assert snapshot() == before
    for name in ("m4", "m5"):  # nothing was installed or configured on the machines the plan would add
        assert hatest.ssh_run(name, "test -e /etc/mongod.conf || systemctl cat mongod").returncode != 0


def test_status_playbook_reads_and_changes_nothing():
    before = snapshot()
    proc = hatest.run_playbook("status.yml")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert snapshot() == before


def test_grow_to_five():
    converge(5)
    hatest.healthy_voters(5)
    assert hatest.voters(hatest.replset_config()) == MACHINES[:5]


def test_grow_to_seven():
    converge(7)
    status = hatest.healthy_voters(7)
    assert hatest.voters(hatest.replset_config()) == MACHINES
    assert len(hatest.primaries(status)) == 1


def test_asking_for_three_never_shrinks():
    before = snapshot()
    converge(3)
    assert snapshot() == before


@pytest.mark.parametrize("n", [4, 9], ids=["even", "above-seven"])
def test_invalid_n_fails_clearly_and_changes_nothing(n):
    before = snapshot()
    proc = hatest.run_playbook("ensure-ha.yml", "-e", f"n={n}")
    assert proc.returncode != 0
    assert "n must be 3, 5 or 7" in proc.stdout + proc.stderr
    assert snapshot() == before
