"""Fixtures for the worker tests: real server and Celery worker processes on SQLite (embedded
broker) and on PostgreSQL + Redis."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_service, port_open
from tests.helpers.mnist import write_mnist
from tests.worker.stack import Stack, stack_env

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=256, n_test=64)


@pytest.fixture(scope="session")
def _sqlite_stack_for_session(tmp_path_factory: pytest.TempPathFactory, small_mnist: Path) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("runyard")
    stack = Stack(stack_env(home, small_mnist), home / "logs")
    try:
        stack.start_server()
        yield stack
    finally:
        stack.close()


@pytest.fixture
def sqlite_stack(_sqlite_stack_for_session: Stack) -> Stack:
    """One server for the session; a live worker for each test (tests may kill theirs)."""
    _sqlite_stack_for_session.ensure_worker()
    return _sqlite_stack_for_session


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    available = port_open("127.0.0.1", 5432)
    need_service("PostgreSQL", available, "127.0.0.1:5432")
    import psycopg

    name = f"runyard_worker_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        from server.db import dispose_engine

        dispose_engine(f"postgresql://postgres@127.0.0.1:5432/{name}")
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    need_service("Redis", port_open("127.0.0.1", 6379), "127.0.0.1:6379")
    import redis

    # db 0 is the default and 15 belongs to the server tests: pick an empty one in between
    # and mark it, so two sessions on this machine never share a queue.
    dbs = list(range(1, 15))
    random.shuffle(dbs)
    for db in dbs:
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if client.dbsize() == 0 and client.set("runyard-worker-tests", "1", nx=True):
            break
        client.close()
    else:
        pytest.fail("no empty Redis database among 1..15")
    try:
        yield f"redis://127.0.0.1:6379/{db}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def _pg_redis_stack_for_session(tmp_path_factory: pytest.TempPathFactory, small_mnist: Path, postgres_url: str,
                                redis_url: str) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("runyard-pg")
    stack = Stack(stack_env(home, small_mnist, database_url=postgres_url, broker_url=redis_url), home / "logs")
    try:
        stack.start_server()
        yield stack
    finally:
        stack.close()


@pytest.fixture
def pg_redis_stack(_pg_redis_stack_for_session: Stack) -> Stack:
    _pg_redis_stack_for_session.ensure_worker()
    return _pg_redis_stack_for_session
