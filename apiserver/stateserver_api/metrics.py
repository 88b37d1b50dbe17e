"""/metrics: the replica set as this API server reads it at scrape time, and the API's own requests.

The set's metrics come from one reading (records, config, status) taken when Prometheus scrapes, through the same
join as /v1/ha-status and ha_status_info, so a dashboard and the status table never disagree. Every API server
serves the same set-level series (from the primary's view when there is one); alerts aggregate over instances.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match

from .collection._model import PRIMARY, SECONDARY, ReplSetView, status_now, statuses_of
from .collection._peergroup import convergence_report
from .collection._records import parse_record_docs
from .collection._status import member_states, status_rows
from .errors import NoPrimary
from .status import SetReading, recorded_api_addresses
from .tls import ServedCertificate

MEMBER_LABELS = ("machine", "host", "member_id")
# Request latencies: a status read or a majority write takes milliseconds; a lost primary costs seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _utc(value: datetime.datetime) -> datetime.datetime:
    # pymongo returns naive datetimes in UTC.
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def _date(value: Any) -> datetime.datetime | None:
    # mongod reports the epoch for "never" (a member it has not heard from, a down member's optime).
    return _utc(value) if isinstance(value, datetime.datetime) and value.year > 1970 else None


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def set_families(reading: SetReading | None, api_answers: dict[str, bool],
                 now: datetime.datetime | None = None) -> list[Metric]:
    """The set's metric families from one reading (None: the set could not be read at all).

    api_answers: {api_address: answered} for the recorded machines' API servers.
    """
    read = _gauge("stateserver_status_read_success",
                  "1 when this API server read the records, config and status of the replica set at this scrape")
    from_primary = _gauge("stateserver_status_from_primary",
                          "1 when the reading came from the primary; 0 from another member (its view may be stale)")
    has_primary = _gauge("stateserver_primary_present", "1 when the status shows exactly one PRIMARY")
    if reading is None:
        read.add_metric([], 0)
        has_primary.add_metric([], 0)
        return [read, has_primary]
    read.add_metric([], 1)
    from_primary.add_metric([], 1 if reading.from_primary else 0)
    config, status = reading.config, reading.status
    view = ReplSetView(config, status, now or datetime.datetime.now(datetime.UTC))
    clock = _utc(status_now(view))
    records, problems = parse_record_docs(reading.machines)
    members = member_states(config, status)
    # The machine a member belongs to, by the same join as the status table (tag, else the record's address).
    machine_of = {row.address: row.machine for row in status_rows(records, config, status) if row.has_vote is not None}
    entries = {e.get("name"): e for e in (status or {}).get("members", [])}
    heartbeats = {s.name: s.last_heartbeat_recv for s in statuses_of(status)}
    primaries = [e for e in entries.values() if e.get("state") == PRIMARY and e.get("health", 1) == 1]
    primary = primaries[0] if len(primaries) == 1 else None
    has_primary.add_metric([], 1 if primary else 0)

    state = _gauge("stateserver_member_state", "1 for the member's current state (label state, as mongod names it)",
                   MEMBER_LABELS + ("state",))
    health = _gauge("stateserver_member_health", "1 when the member is reachable from the member read, else 0",
                    MEMBER_LABELS)
    votes = _gauge("stateserver_member_votes", "The member's votes in the replica-set config (0 or 1)", MEMBER_LABELS)
    is_primary = _gauge("stateserver_member_is_primary", "1 when the member is the PRIMARY", MEMBER_LABELS)
    lag = _gauge("stateserver_member_replication_lag_seconds",
                 "How far the member's last applied operation is behind the primary's (reachable members, while "
                 "there is a primary)", MEMBER_LABELS)
    heartbeat = _gauge("stateserver_member_last_heartbeat_seconds",
                       "Seconds since the member read last heard a heartbeat from this member (not for the member "
                       "read itself, nor for one never heard)", MEMBER_LABELS)
    primary_optime = _date((primary or {}).get("optimeDate"))
    for member in members:
        labels = [machine_of.get(member.host) or member.machine or "", member.host, str(member.member_id)]
        entry = entries.get(member.host) or {}
        state.add_metric(labels + [member.state], 1)
        health.add_metric(labels, member.health)
        votes.add_metric(labels, member.votes)
        is_primary.add_metric(labels, 1 if member.primary else 0)
        optime = _date(entry.get("optimeDate"))
        if primary_optime and optime and member.health == 1:
            lag.add_metric(labels, max(0.0, (primary_optime - optime).total_seconds()))
        heard = heartbeats.get(member.host)
        if heard is not None:
            heartbeat.add_metric(labels, max(0.0, (clock - _utc(heard)).total_seconds()))

    wanted = _gauge("stateserver_voters_wanted", "Machine records that want a vote")
    wanted.add_metric([], sum(1 for r in records if r.wants_vote))
    voting = _gauge("stateserver_voters", "Members with a vote in the replica-set config")
    voting.add_metric([], sum(1 for m in members if m.votes > 0))
    healthy = _gauge("stateserver_voters_healthy", "Voting members that are reachable and PRIMARY or SECONDARY")
    healthy.add_metric([], sum(1 for m in members if m.votes > 0 and m.health == 1
                               and (entries.get(m.host) or {}).get("state") in (PRIMARY, SECONDARY)))
    bad_records = _gauge("stateserver_record_problems",
                         "Problems in the machine records (an invalid record is ignored by every tool until repaired)")
    bad_records.add_metric([], len(problems))
    converged = _gauge("stateserver_converged",
                       "1 when the replica set is what peergroup would make of the records (nothing to do)")
    converged.add_metric([], 0 if problems else int(convergence_report(view, records)[0]))
    families = [read, from_primary, has_primary, state, health, votes, is_primary, lag, heartbeat, wanted, voting,
                healthy, bad_records, converged]
    if config is not None:
        version = _gauge("stateserver_config_version", "The replica-set config's version")
        version.add_metric([], config.get("version", 0))
        term = _gauge("stateserver_config_term", "The replica-set config's term")
        term.add_metric([], config.get("term", 0))
        families += [version, term]
    elected = _date((primary or {}).get("electionDate"))
    if elected is not None:
        election = _gauge("stateserver_last_election_seconds", "Seconds since the current primary was elected")
        election.add_metric([], max(0.0, (clock - elected).total_seconds()))
        families.append(election)
    api_up = _gauge("stateserver_machine_api_up",
                    "1 when the machine's API server answered GET /v1/live from this API server at this scrape",
                    ("machine", "address"))
    for record in records:
        api_up.add_metric([record.name, record.api_address], 1 if api_answers.get(record.api_address) else 0)
    families.append(api_up)
    return families


class SetCollector(Collector):
    """Reads the set once per scrape; a set that cannot be read is a metric (read success 0), not a failed scrape."""

    def __init__(self, read: Callable[[], SetReading], probe: Callable[[list[str]], dict[str, bool]]) -> None:
        self.read = read
        self.probe = probe

    def collect(self) -> Iterable[Metric]:
        try:
            reading = self.read()
        except NoPrimary:
            return set_families(None, {})
        return set_families(reading, self.probe(recorded_api_addresses(reading)))


class CertificateCollector(Collector):
    """When the certificate served to new connections expires (it changes on a reload)."""

    def __init__(self, certificate: ServedCertificate) -> None:
        self.certificate = certificate

    def collect(self) -> Iterable[Metric]:
        expiry = _gauge("stateserver_api_certificate_expiry_timestamp_seconds",
                        "notAfter of the TLS certificate this API server presents, in seconds since the epoch")
        expiry.add_metric([], self.certificate.info.not_after.timestamp())
        return [expiry]


class RequestMetrics:
    """Request counts and latencies by method, route template (not the raw path: keys and names would make a
    series each) and status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter("stateserver_api_requests", "HTTP requests answered", labels, registry=registry)
        self.latency = Histogram("stateserver_api_request_duration_seconds", "Time to answer an HTTP request",
                                 labels, buckets=LATENCY_BUCKETS, registry=registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)


def route_of(routes: Iterable[Any], scope: dict) -> str:
    """The template of the route a request addresses ("/v1/kv/{key}"), also for a wrong method; "other" when
    none does (so scanners probing random paths add one series, not one each)."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route.path
        if match == Match.PARTIAL and partial is None:
            partial = route.path
    return partial or "other"
