"""pytest plugin: ``pytest_plugins = ["mongosim.pytest_plugin"]``.

Fixtures:
* ``mongosim_block`` – the loopback /16 to use (default ``"127.10"``); override it in your conftest.
* ``mongosim_cluster`` – a factory ``(n=3, *, initiate=True, **Cluster kwargs) -> Cluster``; every cluster it made
  is stopped at teardown.
Marker ``simulator_only``: skipped when ``$MONGOD_BIN`` points at a real mongod.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .testing import Cluster, using_real_mongod


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "simulator_only: needs mongosim-only features (failpoints); skipped with "
                            "MONGOD_BIN")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not using_real_mongod():
        return
    skip = pytest.mark.skip(reason="simulator-only feature; MONGOD_BIN is set")
    for item in items:
        if "simulator_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def mongosim_block() -> str:
    return "127.10"


@contextmanager
def cluster_factory(block: str, workdir: Callable[[int], Path]) -> Iterator[Callable[..., Cluster]]:
    """A factory ``(n=3, *, initiate=True, **Cluster kwargs) -> Cluster`` on ``block``, the k-th cluster in
    ``workdir(k)``; every cluster it made is stopped on exit. The fixtures below (and suites that want another
    scope) are built on it."""
    made: list[Cluster] = []

    def factory(n: int = 3, *, initiate: bool = True, **kwargs: Any) -> Cluster:
        kwargs.setdefault("block", block)
        kwargs.setdefault("workdir", workdir(len(made)))
        c = Cluster(n, **kwargs)
        made.append(c)
        c.start()
        if initiate:
            c.initiate()
        return c

    try:
        yield factory
    finally:
        for c in made:
            c.stop()


@pytest.fixture
def mongosim_cluster(tmp_path: Path, mongosim_block: str) -> Iterator[Callable[..., Cluster]]:
    with cluster_factory(mongosim_block, lambda k: tmp_path / f"cluster{k}") as factory:
        yield factory
