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
