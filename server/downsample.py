"""Metric rollups and server-side downsampling.

Every ingest batch updates ``metric_blocks``: one row per (run, key, block of BLOCK_STEPS
steps) holding the block's first/last point (by step) and min/max point (by value, NaN
ignored). A read of ``max_points`` from a long series splits the step range into at most
``(max_points - 2) // 2`` buckets whose width is a multiple of BLOCK_STEPS, so each block lies
in exactly one bucket and each bucket's min and max are exact; blocks cut by min_step/max_step
are read point by point. Short ranges are read point by point and bucketed with numpy.
The series' first and last points are always kept.

Whoever deletes points (the store, a worker, SQL by hand), a database trigger records the
touched blocks in ``metric_blocks_dirty`` and the next read of that key recomputes them.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.models import BLOCK_STEPS, MetricBlock, MetricBlockDirty, MetricPoint

B = BLOCK_STEPS

BLOCK_COLUMNS = ("run_id", "key", "block", "n", "first_step", "first_value", "first_id", "last_step",
                 "last_value", "last_id", "min_step", "min_value", "min_id", "max_step", "max_value", "max_id")

_T = "metric_blocks"
UPSERT_BLOCKS = (
    f"INSERT INTO {_T} ({', '.join(BLOCK_COLUMNS)}) VALUES ({', '.join(':' + c for c in BLOCK_COLUMNS)}) "
    "ON CONFLICT (run_id, key, block) DO UPDATE SET "
    f"n = {_T}.n + excluded.n, "
    + ", ".join(
        f"{side}_{col} = CASE WHEN {cond} THEN excluded.{side}_{col} ELSE {_T}.{side}_{col} END"
        for side, cond in (
            ("first", f"excluded.first_step < {_T}.first_step"),
            ("last", f"excluded.last_step >= {_T}.last_step"),
            ("min", f"excluded.min_value IS NOT NULL AND ({_T}.min_value IS NULL OR excluded.min_value < {_T}.min_value)"),
            ("max", f"excluded.max_value IS NOT NULL AND ({_T}.max_value IS NULL OR excluded.max_value > {_T}.max_value)"),
        )
        for col in ("step", "value", "id")
    )
)


def _opt(x: Any) -> Any:
    if x is None:
        return None
    f = float(x)
    return None if f != f else f


def block_rollups(run_id: int, keys: list[str], steps: np.ndarray, values: np.ndarray,
                  ids: np.ndarray) -> list[dict[str, Any]]:
    """Aggregate points into one dict per (key, block). ``values`` has NaN for NaN/NULL."""
    if len(steps) == 0:
        return []
    key_names, codes = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    blocks = steps // B
    order = np.lexsort((ids, steps, blocks, codes))
    codes, blocks, steps, values, ids = codes[order], blocks[order], steps[order], values[order], ids[order]
    change = np.flatnonzero((np.diff(codes) != 0) | (np.diff(blocks) != 0)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(steps)])) - 1
    group = np.repeat(np.arange(len(starts)), np.diff(np.concatenate((starts, [len(steps)]))))
    nan = np.isnan(values)
    imin = _group_first(group, np.lexsort((nan, np.where(nan, np.inf, values), group)))
    imax = _group_first(group, np.lexsort((nan, -np.where(nan, -np.inf, values), group)))
    rows = []
    for g in range(len(starts)):
        s, e, lo, hi = starts[g], ends[g], imin[g], imax[g]
        rows.append({
            "run_id": run_id, "key": key_names[codes[s]], "block": int(blocks[s]), "n": int(e - s + 1),
            "first_step": int(steps[s]), "first_value": _opt(values[s]), "first_id": int(ids[s]),
            "last_step": int(steps[e]), "last_value": _opt(values[e]), "last_id": int(ids[e]),
            "min_step": None if nan[lo] else int(steps[lo]), "min_value": _opt(values[lo]),
            "min_id": None if nan[lo] else int(ids[lo]),
            "max_step": None if nan[hi] else int(steps[hi]), "max_value": _opt(values[hi]),
            "max_id": None if nan[hi] else int(ids[hi]),
        })
    return rows


def _group_first(group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Index of the first element of each group in ``order`` (order sorted by group first)."""
    sorted_groups = group[order]
    firsts = np.flatnonzero(np.concatenate(([True], sorted_groups[1:] != sorted_groups[:-1])))
    return order[firsts]


def upsert_blocks(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        from sqlalchemy import text

        session.execute(text(UPSERT_BLOCKS), rows)


def rebuild_blocks(session: Session, run_id: int, min_block: int | None = None) -> None:
    """Recompute the run's rollups (from ``min_block`` on) from its points."""
    condition = [MetricBlock.run_id == run_id]
    dirty_condition = [MetricBlockDirty.run_id == run_id]
    point_condition = [MetricPoint.run_id == run_id]
    if min_block is not None:
        condition.append(MetricBlock.block >= min_block)
        dirty_condition.append(MetricBlockDirty.block >= min_block)
        point_condition.append(MetricPoint.step >= min_block * B)
    session.execute(delete(MetricBlock).where(*condition))
    session.execute(delete(MetricBlockDirty).where(*dirty_condition))
    rows = session.execute(
        select(MetricPoint.id, MetricPoint.key, MetricPoint.step, MetricPoint.value).where(*point_condition)
    ).all()
    if rows:
        ids, keys, steps, values = zip(*rows, strict=True)
        upsert_blocks(session, block_rollups(
            run_id, list(keys), np.array(steps, dtype=np.int64),
            np.array([np.nan if v is None else v for v in values], dtype=np.float64), np.array(ids, dtype=np.int64),
        ))


def heal_blocks(session: Session, run_id: int, key: str) -> None:
    """Recompute the blocks of ``key`` that a deletion marked dirty (see migration 0002)."""
    dirty = sorted(session.scalars(select(MetricBlockDirty.block).where(
        MetricBlockDirty.run_id == run_id, MetricBlockDirty.key == key)))
    if not dirty:
        return
    # contiguous ranges of blocks -> one point query each
    ranges: list[list[int]] = []
    for block in dirty:
        if ranges and block == ranges[-1][1] + 1:
            ranges[-1][1] = block
        else:
            ranges.append([block, block])
    rows: list[Any] = []
    for first, last in ranges:
        session.execute(delete(MetricBlock).where(MetricBlock.run_id == run_id, MetricBlock.key == key,
                                                  MetricBlock.block.between(first, last)))
        rows += session.execute(select(MetricPoint.id, MetricPoint.step, MetricPoint.value).where(
            MetricPoint.run_id == run_id, MetricPoint.key == key,
            MetricPoint.step >= first * B, MetricPoint.step < (last + 1) * B)).all()
    if rows:
        ids, steps, values = zip(*rows, strict=True)
        upsert_blocks(session, block_rollups(
            run_id, [key] * len(rows), np.array(steps, dtype=np.int64),
            np.array([np.nan if v is None else v for v in values], dtype=np.float64), np.array(ids, dtype=np.int64)))
    session.execute(delete(MetricBlockDirty).where(MetricBlockDirty.run_id == run_id, MetricBlockDirty.key == key,
                                                   MetricBlockDirty.block.in_(dirty)))
    session.commit()


# --------------------------------------------------------------------------- reading
# Reads go straight to the DBAPI cursor: a 1,000,000-point series means ~8,000 block rows
# and up to ~250,000 raw rows for short ranges, where SQLAlchemy's row objects cost more
# than the query.


def _fetch(session: Session, sql: str, params: list[Any]) -> list[tuple]:
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        sql = sql.replace("?", "%s")
    cursor = cast(Any, connection.connection.driver_connection).cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _range_sql(lo: int | None, hi: int | None, params: list[Any], column: str = "step") -> str:
    sql = ""
    if lo is not None:
        sql += f" AND {column} >= ?"
        params.append(lo)
    if hi is not None:
        sql += f" AND {column} <= ?"
        params.append(hi)
    return sql


def _empty(total: int = 0) -> dict[str, Any]:
    return {"steps": [], "values": [], "epochs": [], "wall_times": [], "total_points": total, "downsampled": False}


POINT_COLUMNS = "id, step, value, epoch, wall_time"


def _raw_points(session: Session, run_id: int, key: str, lo: int | None, hi: int | None,
                columns: str = POINT_COLUMNS) -> list[tuple]:
    params: list[Any] = [run_id, key]
    sql = f"SELECT {columns} FROM metric_points WHERE run_id = ? AND key = ?" + _range_sql(lo, hi, params)
    return _fetch(session, sql + " ORDER BY step, id", params)


def _points_by_id(session: Session, ids: list[int]) -> list[tuple]:
    rows: list[tuple] = []
    for i in range(0, len(ids), 900):  # SQLite's default bound-parameter limit is 999
        chunk = ids[i:i + 900]
        rows += _fetch(session, f"SELECT {POINT_COLUMNS} FROM metric_points WHERE id IN "
                                f"({', '.join('?' * len(chunk))})", chunk)
    rows.sort(key=lambda r: (r[1], r[0]))
    return rows


def _series(rows: list[tuple], total: int, downsampled: bool) -> dict[str, Any]:
    return {
        "steps": [r[1] for r in rows],
        "values": [math.nan if r[2] is None else r[2] for r in rows],
        "epochs": [r[3] for r in rows],
        "wall_times": [r[4] for r in rows],
        "total_points": total,
        "downsampled": downsampled,
    }


def _bucket_extremes(bucket: np.ndarray, values: np.ndarray, ids: np.ndarray) -> set[int]:
    """Ids of each bucket's min and max point (NaN ignored)."""
    keep = ~np.isnan(values)
    bucket, values, ids = bucket[keep], values[keep], ids[keep]
    if len(ids) == 0:
        return set()
    lo = _group_first(bucket, np.lexsort((values, bucket)))
    hi = _group_first(bucket, np.lexsort((-values, bucket)))
    return set(ids[lo].tolist()) | set(ids[hi].tolist())


def read_series(session: Session, run_id: int, key: str, lo: int | None, hi: int | None,
                max_points: int) -> dict[str, Any]:
    heal_blocks(session, run_id, key)
    k = max(1, (max_points - 2) // 2)
    params: list[Any] = [run_id, key]
    blocks = _fetch(
        session,
        "SELECT block, n, first_step, first_id, last_step, last_id, min_value, min_id, max_value, max_id "
        "FROM metric_blocks WHERE run_id = ? AND key = ?"
        + _range_sql(None if lo is None else lo // B, None if hi is None else hi // B, params, "block")
        + " ORDER BY block",
        params,
    )
    if not blocks:
        return _empty()
    if sum(b[1] for b in blocks) <= max_points:
        rows = _raw_points(session, run_id, key, lo, hi)
        return _series(rows, len(rows), False)

    start = max(blocks[0][2], lo) if lo is not None else blocks[0][2]
    end = min(blocks[-1][4], hi) if hi is not None else blocks[-1][4]
    span = end - start + 1

    if span / k < B:  # short range: read the points and bucket them exactly
        rows = _raw_points(session, run_id, key, lo, hi, "id, step, value")
        if len(rows) <= max_points:
            return _series(_points_by_id(session, [r[0] for r in rows]), len(rows), False)
        arr = np.array([(r[0], r[1], np.nan if r[2] is None else r[2]) for r in rows], dtype=np.float64)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        steps = np.array([r[1] for r in rows], dtype=np.int64)
        width = math.ceil(span / k)
        chosen = _bucket_extremes((steps - start) // width, arr[:, 2], ids) | {rows[0][0], rows[-1][0]}
        return _series(_points_by_id(session, sorted(chosen)), len(rows), True)

    origin = (start // B) * B
    width = math.ceil(span / k / B) * B
    while math.ceil((end - origin + 1) / width) > k:
        width += B
    edge_blocks = set()
    if lo is not None and blocks[0][0] * B < lo:
        edge_blocks.add(blocks[0][0])
    if hi is not None and blocks[-1][0] * B + B - 1 > hi:
        edge_blocks.add(blocks[-1][0])
    full = [b for b in blocks if b[0] not in edge_blocks] if edge_blocks else blocks
    edge_points: list[tuple] = []
    for block in sorted(edge_blocks):
        b_lo, b_hi = block * B, block * B + B - 1
        edge_points += _raw_points(session, run_id, key, max(b_lo, lo if lo is not None else b_lo),
                                   min(b_hi, hi if hi is not None else b_hi), "id, step, value")

    total = sum(b[1] for b in full) + len(edge_points)
    if not full and not edge_points:
        return _empty(total)
    nan = float("nan")
    fb = np.array([(b[0], b[2], b[3], b[4], b[5],
                    nan if b[6] is None else b[6], -1 if b[7] is None else b[7],
                    nan if b[8] is None else b[8], -1 if b[9] is None else b[9]) for b in full],
                  dtype=np.float64).reshape(-1, 9)
    ep = np.array([(p[0], p[1], nan if p[2] is None else p[2]) for p in edge_points],
                  dtype=np.float64).reshape(-1, 3)
    block_bucket = ((fb[:, 0].astype(np.int64) * B) - origin) // width
    edge_bucket = (ep[:, 1].astype(np.int64) - origin) // width
    bucket = np.concatenate((block_bucket, edge_bucket))
    ids_min = np.concatenate((fb[:, 6], ep[:, 0])).astype(np.int64)
    ids_max = np.concatenate((fb[:, 8], ep[:, 0])).astype(np.int64)
    chosen = set[int]()
    for values, ids in ((np.concatenate((fb[:, 5], ep[:, 2])), ids_min),
                        (np.concatenate((fb[:, 7], ep[:, 2])), ids_max)):
        if len(ids):
            keep = ~np.isnan(values)
            b_, v_, i_ = bucket[keep], values[keep], ids[keep]
            if len(i_):
                order = np.lexsort((v_, b_)) if ids is ids_min else np.lexsort((-v_, b_))
                chosen |= set(i_[_group_first(b_, order)].tolist())
    # series first and last: smallest (step, id) and largest
    ends_step = np.concatenate((fb[:, 1], fb[:, 3], ep[:, 1])).astype(np.int64)
    ends_id = np.concatenate((fb[:, 2], fb[:, 4], ep[:, 0])).astype(np.int64)
    order = np.lexsort((ends_id, ends_step))
    chosen.add(int(ends_id[order[0]]))
    chosen.add(int(ends_id[order[-1]]))
    return _series(_points_by_id(session, sorted(chosen)), total, True)
