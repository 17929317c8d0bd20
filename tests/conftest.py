"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresCluster, PostgresServer
from tests.support.server import ServerProcess


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL 15 cluster for the whole session, started on first use."""
    with PostgresCluster() as cluster:
        yield cluster.server


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A cluster of its own, for tests that stop and restart the database."""
    with PostgresCluster() as cluster:
        yield cluster


_counter = iter(range(1_000_000))


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session cluster."""
    name = f"pm_test_{next(_counter)}"
    yield postgres.create_database(name)
    postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def provider(request: pytest.FixtureRequest) -> str:
    """Runs a test once on each database."""
    return str(request.param)


@pytest.fixture
def make_server(request: pytest.FixtureRequest) -> Iterator[type[ServerProcess]]:
    """Builds ServerProcess objects that are killed and removed after the test."""
    made: list[ServerProcess] = []

    class Tracked(ServerProcess):
        def __post_init__(self) -> None:
            super().__post_init__()
            made.append(self)

    yield Tracked
    for server in made:
        server.cleanup()


@pytest.fixture
def server(make_server: type[ServerProcess], provider: str,
           request: pytest.FixtureRequest) -> ServerProcess:
    """A running server on each database (SQLite, then PostgreSQL)."""
    if provider == "postgres":
        url = request.getfixturevalue("pg_url")
        return make_server(provider="postgres", postgres_url=url).start()
    return make_server().start()
