"""SQLite with several writer processes (a server and workers) never says "database is locked"."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from server import store
from server.db import get_engine, session_scope, upgrade_database

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent('''
    import sys
    from server import store
    from server.db import get_engine, session_scope
    url, run_id, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    engine = get_engine(url)
    for i in range(150):
        with session_scope(engine) as s:
            store.add_metric_points(s, run_id, [(tag, i * 10 + j, float(j), 0, 0.0) for j in range(10)])
            store.add_log_lines(s, run_id, [("stdout", f"{tag} {i}")])
            store.heartbeat_run(s, run_id)
    print("done")
''')


def test_writer_processes_and_wal(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade_database(url)
    with session_scope(get_engine(url)) as s:
        assert s.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert s.connection().exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert s.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        run = store.create_run(s, recipe="external", status="running")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(run.id), f"w{k}"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(3)]
    with session_scope(get_engine(url)) as s:  # this process writes and reads meanwhile
        for i in range(100):
            store.add_metric_points(s, run.id, [("main", i, 1.0, 0, 0.0)])
            store.read_metrics(s, run.id, ["main"], max_points=100)
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "done" in out, err[-2000:]
    with session_scope(get_engine(url)) as s:
        keys = {k["key"]: k["count"] for k in store.metric_keys(s, run.id)}
        assert keys == {"main": 100, "w0": 1500, "w1": 1500, "w2": 1500}
        assert len(store.get_log_lines(s, run.id, tail=1000)[0]) == 450


BROKER_OPENER = textwrap.dedent('''
    import sys, time
    from server.queue import make_celery
    from server.settings import Settings
    app = make_celery(Settings(broker_url="sqla+sqlite:///" + sys.argv[1]))
    start_at = float(sys.argv[2])
    while time.time() < start_at:  # every process opens the fresh file at the same moment
        pass
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_declare("runyard")
        channel.basic_publish(channel.prepare_message("hello"), exchange="", routing_key="runyard")
    print("done")
''')


def test_processes_opening_a_fresh_broker_at_once_all_succeed(tmp_path):
    # `runyard up` starts the server and two workers together on a new RUNYARD_HOME: kombu's own
    # create_all raced ("table kombu_queue already exists") and a worker lost its connection.
    import time

    broker = tmp_path / "broker.db"
    start_at = f"{time.time() + 3.0}"
    procs = [subprocess.Popen([sys.executable, "-c", BROKER_OPENER, str(broker), start_at], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0 and out.strip() == "done", err[-3000:]
    import sqlite3

    with sqlite3.connect(broker) as conn:
        assert conn.execute("SELECT count(*) FROM kombu_queue WHERE name = 'runyard'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 4
