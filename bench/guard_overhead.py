"""What the request guards cost (issue 11): prints figures, asserts nothing.

The same app twice, in one process, on one SQLite database: with its two outer middlewares
(``server/webguard.py``: Host, Origin, Content-Type, security headers; ``server/limits.py``: the
body counted while it streams in, JSON depth/items/NUL checked on the bytes) and with them taken
out. Requests go through httpx's ASGI transport (no sockets), interleaved rounds, medians:

- ``POST /api/v1/runs/{id}/metrics`` with 10,000 points (~0.5 MB), the heaviest body the guards read;
- ``PUT /api/v1/runs/{id}/hyperparameters`` with a 1,000-key dict;
- ``GET /api/v1/runs?limit=50`` (no body: the guards only look at headers).

    .venv/bin/python bench/guard_overhead.py [--rounds 7] [--requests 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_app(home: Path, guarded: bool):
    from server.app import create_app
    from server.limits import RequestLimits
    from server.settings import Settings
    from server.webguard import WebGuard

    settings = Settings(home=home, reaper=False, allowed_hosts="bench.test")
    app = create_app(settings)
    if not guarded:
        app.user_middleware = [m for m in app.user_middleware if m.cls not in (RequestLimits, WebGuard)]
    return app


async def measure(app, requests: int) -> dict[str, float]:
    """Medians of ``requests`` calls of each case, on a fresh run (a run's cost of ingest grows with
    its points: each measure starts from the same state)."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    points = json.dumps({"points": [{"key": f"k{i % 10}", "step": i, "value": i * 0.5} for i in range(10_000)]})
    hparams = json.dumps({f"param_{i}": {"value": i, "note": "x" * 20} for i in range(1_000)})
    out: dict[str, float] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench.test") as client:
        run_id = (await client.post("/api/v1/runs", json={"recipe": "external", "name": "bench"})).json()["id"]
        cases = {
            "metrics 10k points": lambda: client.post(
                f"/api/v1/runs/{run_id}/metrics", content=points,
                headers={"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}),
            "hyperparameters 1k keys": lambda: client.put(
                f"/api/v1/runs/{run_id}/hyperparameters", content=hparams,
                headers={"Content-Type": "application/json"}),
            "runs list": lambda: client.get("/api/v1/runs", params={"limit": 50}),
        }
        for name, call in cases.items():
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                r = await call()
                times.append(time.perf_counter() - t0)
                assert r.status_code < 300, (name, r.status_code, r.text[:300])
            out[name] = statistics.median(times)
    return out


async def main(rounds: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        from server.db import upgrade_database
        from server.settings import Settings

        upgrade_database(Settings(home=home).database_url)
        apps = {"guarded": make_app(home, True), "bare": make_app(home, False)}
        results: dict[str, dict[str, list[float]]] = {k: {} for k in apps}
        for i in range(rounds):
            order = list(apps) if i % 2 == 0 else list(reversed(apps))
            for which in order:
                for case, value in (await measure(apps[which], requests)).items():
                    results[which].setdefault(case, []).append(value)
        print(f"{'request':<26} {'bare ms':>9} {'guarded ms':>11} {'ratio':>7} {'guards µs':>10}")
        for case in results["bare"]:
            bare = statistics.median(results["bare"][case])
            guarded = statistics.median(results["guarded"][case])
            print(f"{case:<26} {bare * 1000:9.2f} {guarded * 1000:11.2f} {guarded / bare:7.3f}x "
                  f"{(guarded - bare) * 1e6:10.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests))
