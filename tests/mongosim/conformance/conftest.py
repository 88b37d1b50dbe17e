"""The mongod conformance suite: every test states what mongod does and runs unchanged against a real mongod
(``MONGOD_BIN=/path/to/mongod``) or, by default, against mongosim. Clusters live on 127.12.0.0/16."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mongosim.pytest_plugin import *
from mongosim.pytest_plugin import cluster_factory
from mongosim.testing import Cluster

HERE = Path(__file__).parent
BLOCK = "127.12"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance: states mongod's replica-set behaviour; passes on a real mongod "
                            "(MONGOD_BIN) and on mongosim")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.conformance)


@pytest.fixture
def mongosim_block() -> str:
    return BLOCK


@pytest.fixture(scope="module")
def module_cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Cluster]]:
    """Like ``mongosim_cluster`` but for one module: for tests that only send refused commands (nothing changes)."""
    with cluster_factory(BLOCK, lambda k: tmp_path_factory.mktemp("shared")) as factory:
        yield factory
