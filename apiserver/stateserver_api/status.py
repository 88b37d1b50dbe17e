"""What /v1/ha-status and /metrics report, from one reading of the set. Pure functions, no I/O.

The join of records and members is the collection's own (collection/_status.py, via _records.py), so the API, the
ha_status_info module and the status table the playbooks print can never disagree about a machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .collection._model import primary_of
from .collection._records import parse_record_docs
from .collection._status import status_rows, status_table


@dataclass(frozen=True)
class SetReading:
    """The machine records, replSetGetConfig's config and replSetGetStatus, read at one moment from one member."""

    machines: list[dict]
    config: dict | None
    status: dict | None
    from_primary: bool


def build_ha_status(reading: SetReading, api_answers: dict[str, bool] | None = None) -> dict[str, Any]:
    """One row per machine (then members no machine claims) as ha_status_info returns them, plus the record's API
    address and whether that API server answered (None when it was not asked); records that are not valid are left
    out of the join and named in record_problems, as the modules refuse them."""
    records, problems = parse_record_docs(reading.machines)
    apis = {r.name: r.api_address for r in records}
    rows = status_rows(records, reading.config, reading.status)
    machines = []
    for row in rows:
        # Rows of recorded machines carry wants_vote; strays (members no record claims) carry None.
        api = apis.get(row.machine) if row.wants_vote is not None else None
        machines.append({**row.as_dict(), "api_address": api,
                         "api_answers": (api_answers or {}).get(api) if api else None})
    primary = primary_of(reading.status)
    config = reading.config or {}
    return {
        "replica_set": config.get("_id") or (reading.status or {}).get("set"),
        "config_version": config.get("version"),
        "config_term": config.get("term"),
        "primary": primary.name if primary else None,
        "machines": machines,
        "table": status_table(rows),
        "record_problems": problems,
        "read_from": "primary" if reading.from_primary else "a member that is not primary (may be stale)",
    }


def recorded_api_addresses(reading: SetReading) -> list[str]:
    """The API addresses of the valid records (the machines an API server is expected on)."""
    return sorted({r.api_address for r in parse_record_docs(reading.machines)[0]})
