"""The example alert rules shipped in files/prometheus: well formed, and every series and label they use is one the
API servers serve. promtool, when there (build/tools/promtool from scripts/fetch-promtool, else on PATH), also checks
them and runs their unit tests (the .test.yml beside)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from fakes import MemoryBackend
from fastapi.testclient import TestClient
from mongosim.certs import make_ca
from scrape import parse
from stateserver_api.app import create_app
from stateserver_api.metrics import set_families
from stateserver_api.status import SetReading
from stateserver_api.tls import ServedCertificate
from test_metrics import CONFIG, NOW, RECORDS, healthy_status

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "files" / "prometheus"
RULES = PROMETHEUS / "stateserver-alerts.yml"
RULE_TESTS = PROMETHEUS / "stateserver-alerts.test.yml"
# Labels Prometheus attaches to every scraped series; `up` is its own series per target.
TARGET_LABELS = {"instance", "job"}
KEYWORDS = {"and", "or", "unless", "by", "on", "without", "ignoring", "group_left", "group_right", "bool", "offset"}
LISTS = re.compile(r"\b(by|on|without|ignoring)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\{([^}]*)\}")
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*(?:\s*\()?")
# scripts/fetch-promtool unpacks it here (make test calls it); one on PATH serves too.
PROMTOOL = shutil.which("promtool", path=str(REPO / "build" / "tools")) or shutil.which("promtool")


def served() -> dict[str, set[str]]:
    """{series name: its label names} over everything /metrics serves (the set's families from a reading with every
    field, and the request metrics of a live app), plus Prometheus's own `up`."""
    names: dict[str, set[str]] = {"up": set()}
    for family in set_families(SetReading(RECORDS, CONFIG, healthy_status(), from_primary=True), {}, NOW):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    token = "t0123456789abcdef"
    with tempfile.TemporaryDirectory() as directory:
        pem = make_ca(directory).issue("api", ["127.0.0.1"])
        certificate = ServedCertificate(pem, pem)
    client = TestClient(create_app(MemoryBackend(), token, probe=dict.fromkeys, certificate=certificate))
    client.get("/v1/ready", headers={"Authorization": f"Bearer {token}"})
    for name, samples in parse(client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).text).items():
        for labels, _ in samples:
            names.setdefault(name, set()).update(labels)
    return names


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def series_and_labels(expr: str) -> tuple[set[str], set[str], bool]:
    """(series names, label names, aggregates) used by a PromQL expression."""
    text = re.sub(r'"[^"]*"', '""', expr)
    labels = {label.strip() for _, group in LISTS.findall(text) for label in group.split(",") if label.strip()}
    aggregates = bool(LISTS.search(text)) or bool(re.search(r"\b(max|min|sum|avg|count)\s*\(", text))
    text = LISTS.sub(" ", text)
    for selector in SELECTOR.findall(text):
        labels |= {m.split("=")[0].strip("!~ ") for m in selector.split(",") if m.strip()}
    text = SELECTOR.sub(" ", text)
    series = {token for token in IDENTIFIER.findall(text) if not token.endswith("(") and token not in KEYWORDS}
    return series, labels, aggregates


def test_rules_are_well_formed() -> None:
    found = rules()
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in found:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]


def test_rules_use_only_served_series_and_their_labels() -> None:
    available = served()
    for rule in rules():
        series, labels, aggregates = series_and_labels(rule["expr"])
        assert series, rule["alert"]
        unknown = series - set(available)
        assert not unknown, f"{rule['alert']} uses series /metrics does not serve: {sorted(unknown)}"
        offered = set().union(*(available[s] for s in series)) | TARGET_LABELS
        assert labels <= offered, f"{rule['alert']} uses labels its series lack: {sorted(labels - offered)}"
        # An annotation can only name a label the alert keeps: an aggregation keeps only its by/on labels.
        kept = labels if aggregates else offered
        for used in re.findall(r"\$labels\.([A-Za-z_]+)", str(rule["annotations"])):
            assert used in kept, f"{rule['alert']}: annotations use $labels.{used}, which the alert does not carry"


def test_every_alert_has_a_unit_test() -> None:
    document = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert document["rule_files"] == [RULES.name]
    tested = {case["alertname"] for test in document["tests"] for case in test["alert_rule_test"]
              if case.get("exp_alerts")}
    assert tested == {rule["alert"] for rule in rules()}


def test_the_issues_alerts_are_there() -> None:
    names = {rule["alert"] for rule in rules()}
    assert {"StateserverVoterDown", "StateserverNoPrimary", "StateserverReplicationLag",
            "StateserverApiDown"} <= names


@pytest.mark.skipif(PROMTOOL is None, reason="no promtool: run scripts/fetch-promtool (Debian's prometheus package)")
def test_promtool_checks_the_rules_and_runs_their_tests() -> None:
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
