"""Fixtures: replica-set clusters on loopback (127.20.0.0/16), every process stopped by PID after each test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cluster import Cluster

# Tests that drive module_utils in-process import the collection as Ansible does, from build/collections.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "build" / "collections"))


@pytest.fixture
def cluster_factory(tmp_path):
    clusters: list[Cluster] = []

    def make(size: int, start: int | None = None, extra_args: tuple = ()) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(clusters)}", size, start, extra_args)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop()
