"""Store functions of issue 14: the summary tables that make runs queryable at 100,000 runs
(``run_params``, ``run_metric_summaries``, ``run_tags``, ``project_keys``), listing with the query
language (``server/query.py``), groups with aggregates, keys, tags, notes, saved views and layouts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import case, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from server.models import (
    Project,
    ProjectKey,
    ProjectLayout,
    Run,
    RunMetricSummary,
    RunParam,
    RunTag,
    SavedView,
    utcnow,
)
from server.query import Field, QueryError, compile_query, parse_field, run_column

MAX_PARAM_KEYS = 500  # flattened keys per run and kind
MAX_TEXT = 500
MAX_TAGS = 50
MAX_KEYS_LISTED = 500
MAX_GROUPS = 1000
TAG_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class Invalid(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _insert(session: Session, model: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


# --------------------------------------------------------------------------- params


def flatten(value: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested mappings as dotted keys (``{"opt": {"lr": 1}}`` -> ``{"opt.lr": 1}``), at most MAX_PARAM_KEYS."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for key, item in value.items():
            if len(out) >= MAX_PARAM_KEYS:
                break
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(item, dict) and item:
                flatten(item, name, out)
            elif len(name) <= 250:
                out[name] = item
    return out


def param_row(run_id: int, kind: str, key: str, value: Any) -> dict[str, Any]:
    num: float | None = None
    text: str | None = None
    if isinstance(value, bool):
        num, text = float(value), "true" if value else "false"
    elif isinstance(value, int | float):
        number = float(value)
        num = number if math.isfinite(number) else None
        text = str(value)
    elif value is not None:
        text = value if isinstance(value, str) else __import__("json").dumps(value, default=str)
    return {"run_id": run_id, "kind": kind, "key": key, "num": num, "text": None if text is None else text[:MAX_TEXT]}


def sync_params(session: Session, run: Run, *, params: bool = True, hyperparameters: bool = True) -> None:
    """Rewrite a run's ``run_params`` rows (and its project's keys) from its JSON; no commit."""
    kinds = [k for k, on in (("p", params), ("h", hyperparameters)) if on]
    session.execute(delete(RunParam).where(RunParam.run_id == run.id, RunParam.kind.in_(kinds)))
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        source = run.params if kind == "p" else run.hyperparameters
        rows.extend(param_row(run.id, kind, k, v) for k, v in flatten(source or {}).items())
    if rows:
        session.execute(_insert(session, RunParam).values(rows))
        keys = [{"project_id": run.project_id, "kind": r["kind"], "key": r["key"]} for r in rows]
        session.execute(_insert(session, ProjectKey).values(keys).on_conflict_do_nothing())


# --------------------------------------------------------------------------- metric summaries


def update_metric_summaries(session: Session, run_id: int, keys: Sequence[str], steps: Any, values: Any,
                            ids: Any) -> None:
    """Fold a batch of just-inserted points into ``run_metric_summaries``; no commit. ``steps``,
    ``values`` (NaN for a missing value) and ``ids`` (increasing) are numpy arrays as ingest has them."""
    if not len(keys):
        return
    codes: dict[str, int] = {}
    inverse = np.fromiter((codes.setdefault(k, len(codes)) for k in keys), dtype=np.int64, count=len(keys))
    n = len(codes)
    last = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last, inverse, np.arange(len(keys), dtype=np.int64))  # the last point of each key
    low = np.full(n, np.nan)
    high = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        np.fmin.at(low, inverse, values)
        np.fmax.at(high, inverse, values)

    def number(x: float) -> float | None:
        return None if x != x else float(x)

    rows = [{"run_id": run_id, "key": key, "last_id": int(ids[last[code]]), "last_step": int(steps[last[code]]),
             "last_value": number(values[last[code]]), "min_value": number(low[code]), "max_value": number(high[code])}
            for key, code in codes.items()]
    session.execute(_summary_upsert(session), rows)
    project_id = session.scalar(select(Run.project_id).where(Run.id == run_id))
    session.execute(_insert(session, ProjectKey).on_conflict_do_nothing(),
                    [{"project_id": project_id, "kind": "m", "key": k} for k in codes])


def _summary_upsert(session: Session) -> Any:
    table = RunMetricSummary.__table__
    statement = _insert(session, RunMetricSummary)
    new = statement.excluded
    least, greatest = (func.least, func.greatest) if _dialect(session) == "postgresql" else (func.min, func.max)
    return statement.on_conflict_do_update(index_elements=["run_id", "key"], set_={
        "last_id": case((new.last_id > table.c.last_id, new.last_id), else_=table.c.last_id),
        "last_step": case((new.last_id > table.c.last_id, new.last_step), else_=table.c.last_step),
        "last_value": case((new.last_id > table.c.last_id, new.last_value), else_=table.c.last_value),
        "min_value": least(func.coalesce(table.c.min_value, new.min_value),
                           func.coalesce(new.min_value, table.c.min_value)),
        "max_value": greatest(func.coalesce(table.c.max_value, new.max_value),
                              func.coalesce(new.max_value, table.c.max_value)),
    })


def rebuild_metric_summaries(session: Session, run_id: int) -> None:
    """Recompute a run's summaries from its points (after points were deleted); no commit."""
    from server.models import MetricPoint

    session.execute(delete(RunMetricSummary).where(RunMetricSummary.run_id == run_id))
    last = (select(MetricPoint.key, func.max(MetricPoint.id).label("last_id"), func.min(MetricPoint.value).label("lo"),
                   func.max(MetricPoint.value).label("hi"))
            .where(MetricPoint.run_id == run_id).group_by(MetricPoint.key).subquery())
    rows = session.execute(select(last.c.key, last.c.last_id, MetricPoint.step, MetricPoint.value, last.c.lo,
                                  last.c.hi).join(MetricPoint, MetricPoint.id == last.c.last_id)).all()
    if rows:
        session.execute(_insert(session, RunMetricSummary).values([
            {"run_id": run_id, "key": r[0], "last_id": r[1], "last_step": r[2], "last_value": r[3],
             "min_value": r[4], "max_value": r[5]} for r in rows]))


# --------------------------------------------------------------------------- tags and notes


def check_tags(tags: Sequence[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not TAG_RE.match(tag):
            raise Invalid(f"Invalid tag {tag!r}: 1-64 characters of letters, digits and _ . : -.", "tags")
        if tag not in out:
            out.append(tag)
    return out


def tags_of(session: Session, run_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    if not run_ids:
        return out
    for run_id, tag in session.execute(select(RunTag.run_id, RunTag.tag).where(RunTag.run_id.in_(run_ids))
                                       .order_by(RunTag.run_id, RunTag.tag)):
        out.setdefault(run_id, []).append(tag)
    return out


def add_tags(session: Session, run: Run, tags: Sequence[str], commit: bool = True) -> list[str]:
    tags = check_tags(tags)
    current = tags_of(session, [run.id]).get(run.id, [])
    new = [t for t in tags if t not in current]
    if len(current) + len(new) > MAX_TAGS:
        raise Invalid(f"A run has at most {MAX_TAGS} tags; run {run.id} has {len(current)} and would have "
                      f"{len(current) + len(new)}.", "tags")
    if new:
        session.execute(_insert(session, RunTag).values([{"run_id": run.id, "tag": t} for t in new])
                        .on_conflict_do_nothing())
        session.execute(_insert(session, ProjectKey).values(
            [{"project_id": run.project_id, "kind": "t", "key": t} for t in new]).on_conflict_do_nothing())
        run.updated_at = utcnow()
    if commit:
        session.commit()
    return sorted({*current, *new})


def remove_tags(session: Session, run: Run, tags: Sequence[str], commit: bool = True) -> list[str]:
    session.execute(delete(RunTag).where(RunTag.run_id == run.id, RunTag.tag.in_(list(tags))))
    run.updated_at = utcnow()
    if commit:
        session.commit()
    return tags_of(session, [run.id]).get(run.id, [])


def render_note(note: str | None) -> str:
    """A note's markdown as HTML that is safe to insert: raw HTML is escaped, and links or images
    whose scheme is not http(s), mailto or relative are dropped (markdown-it's validateLink)."""
    if not note:
        return ""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")

    def safe_link(url: str) -> bool:
        lowered = re.sub(r"[\x00-\x20]", "", url).lower()
        scheme = re.match(r"^([a-z][a-z0-9+.-]*):", lowered)
        return scheme is None or scheme.group(1) in ("http", "https", "mailto")

    md.validateLink = safe_link  # type: ignore[method-assign]
    return md.render(note)


# --------------------------------------------------------------------------- listing


def sort_order(session: Session, query: Any, sort: str) -> Any:
    """``query`` ordered by ``[-]<field>`` (NULLs last, then newest id first)."""
    descending = sort.startswith("-")
    name = sort.lstrip("-+")
    try:
        field = parse_field(name, 1, "sort")
    except QueryError as exc:
        raise Invalid(exc.message.replace("Unknown field", "Cannot sort by"), "sort") from None
    expressions: list[Any]
    if field.kind == "run":
        expressions = [run_column(field.key, _dialect(session))]
    elif field.kind == "tags":
        raise Invalid("Cannot sort by tags; sort by a run field, a param or a metric.", "sort")
    elif field.kind == "metric":
        summary = aliased(RunMetricSummary)
        query = query.outerjoin(summary, (summary.run_id == Run.id) & (summary.key == field.key))
        expressions = [getattr(summary, f"{field.stat}_value")]
    else:
        param = aliased(RunParam)
        query = query.outerjoin(param, (param.run_id == Run.id) & (param.kind == field.kind[0])
                                & (param.key == field.key))
        expressions = [param.num, param.text]
    # NOT NULL columns without NULLS LAST, so that an index (e.g. created_at, id) gives the order
    not_null = field.kind == "run" and field.key in ("id", "name", "status", "recipe", "created_at")
    order = [(e.desc() if descending else e.asc()) if not_null else (e.desc() if descending else e.asc()).nulls_last()
             for e in expressions]
    return query.order_by(*order, Run.id.desc())


def filtered(session: Session, *, project: str | None, q: str | None, project_ids: set[int] | None,
             status: str | None = None, recipe: str | None = None) -> Any:
    """``select(Run)`` limited to the visible projects, ``project`` and the query ``q``."""
    query = select(Run)
    if project_ids is not None:
        query = query.where(Run.project_id.in_(project_ids or {-1}))
    if project:
        query = query.where(Run.project_id == select(Project.id).where(Project.name == project).scalar_subquery())
    if status:
        from server.models import RUN_STATUSES

        statuses = [s.strip() for s in status.split(",") if s.strip()]
        for name in statuses:
            if name not in RUN_STATUSES:
                raise Invalid(f"Unknown status {name!r}; use one of {', '.join(RUN_STATUSES)}.", "status")
        query = query.where(Run.status.in_(statuses))
    if recipe:
        query = query.where(Run.recipe == recipe)
    return query.where(compile_query(q, _dialect(session)))


def column_fields(columns: Sequence[str], field: str = "columns") -> list[Field]:
    """The fields of ``columns``, each named as the caller wrote it (``label``)."""
    out = []
    for name in columns:
        try:
            out.append(parse_field(name, 1, field).labelled(name))
        except QueryError as exc:
            raise Invalid(exc.message, field) from None
    return out


def column_values(session: Session, runs: Sequence[Run], fields: Sequence[Field]) -> dict[int, dict[str, Any]]:
    """``{run_id: {column: value}}`` for a page of runs."""
    ids = [r.id for r in runs]
    out: dict[int, dict[str, Any]] = {r.id: {} for r in runs}
    metric_keys = sorted({f.key for f in fields if f.kind == "metric"})
    summaries: dict[tuple[int, str], Any] = {}
    if metric_keys and ids:
        for row in session.scalars(select(RunMetricSummary).where(RunMetricSummary.run_id.in_(ids),
                                                                  RunMetricSummary.key.in_(metric_keys))):
            summaries[(row.run_id, row.key)] = row
    tags = tags_of(session, ids) if any(f.kind == "tags" for f in fields) else {}
    for run in runs:
        flat = {"param": flatten(run.params or {}), "hparam": flatten(run.hyperparameters or {})}
        for f in fields:
            value: Any
            if f.kind == "metric":
                summary = summaries.get((run.id, f.key))
                value = None if summary is None else getattr(summary, f"{f.stat}_value")
            elif f.kind in flat:
                value = flat[f.kind].get(f.key)
            elif f.kind == "tags":
                value = tags.get(run.id, [])
            elif f.key == "project":
                value = run.project.name
            elif f.key == "user":
                value = run.owner.name if run.owner else None
            elif f.key == "duration":
                value = None
                if run.started_at is not None:
                    end = run.ended_at or (utcnow() if run.status == "running" else None)
                    value = None if end is None else max(0.0, (end - run.started_at).total_seconds())
            else:
                value = getattr(run, f.key)
            out[run.id][f.label or f.name] = value
    return out


def list_runs(session: Session, *, project: str | None, q: str | None, sort: str, limit: int, offset: int,
              project_ids: set[int] | None, status: str | None = None,
              recipe: str | None = None) -> tuple[list[Run], int]:
    query = filtered(session, project=project, q=q, project_ids=project_ids, status=status, recipe=recipe)
    total = session.scalar(select(func.count()).select_from(query.with_only_columns(Run.id).subquery())) or 0
    # the page's ids first (narrow rows: the sort never carries the runs' JSON), then those runs
    ids = list(session.scalars(sort_order(session, query.with_only_columns(Run.id), sort).limit(limit)
                               .offset(offset)))
    if not ids:
        return [], total
    found = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids))).unique()}
    return [found[i] for i in ids if i in found], total


def list_keys(session: Session, *, project: str | None, project_ids: set[int] | None) -> dict[str, list[str]]:
    query = select(ProjectKey.kind, ProjectKey.key).distinct()
    if project_ids is not None:
        query = query.where(ProjectKey.project_id.in_(project_ids or {-1}))
    if project:
        query = query.where(ProjectKey.project_id == select(Project.id).where(Project.name == project)
                            .scalar_subquery())
    out: dict[str, list[str]] = {"p": [], "h": [], "m": [], "t": []}
    for kind, key in session.execute(query.order_by(ProjectKey.kind, ProjectKey.key)):
        if kind in out and len(out[kind]) < MAX_KEYS_LISTED:
            out[kind].append(key)
    from server.query import RUN_FIELDS

    return {"fields": list(RUN_FIELDS), "params": out["p"], "hparams": out["h"], "metrics": out["m"],
            "tags": out["t"]}


def _field_expression(session: Session, query: Any, field: Field) -> tuple[Any, Any]:
    """(query with the joins the field needs, SQL expression of its value per run)."""
    if field.kind == "run":
        return query, run_column(field.key, _dialect(session))
    if field.kind == "tags":
        tag = aliased(RunTag)
        return query.outerjoin(tag, tag.run_id == Run.id), tag.tag
    if field.kind == "metric":
        summary = aliased(RunMetricSummary)
        query = query.outerjoin(summary, (summary.run_id == Run.id) & (summary.key == field.key))
        return query, getattr(summary, f"{field.stat}_value")
    param = aliased(RunParam)
    query = query.outerjoin(param, (param.run_id == Run.id) & (param.kind == field.kind[0]) & (param.key == field.key))
    return query, func.coalesce(param.text, literal(None))


def groups(session: Session, *, project: str | None, q: str | None, group_by: str, columns: Sequence[str],
           project_ids: set[int] | None) -> list[dict[str, Any]]:
    try:
        by = parse_field(group_by, 1, "group_by")
    except QueryError as exc:
        raise Invalid(exc.message, "group_by") from None
    fields = column_fields(columns)
    base = filtered(session, project=project, q=q, project_ids=project_ids)
    query, key = _field_expression(session, base.with_only_columns(Run.id), by)
    selected: list[Any] = [key.label("g"), func.count(func.distinct(Run.id)).label("n")]
    numeric: list[Field] = []
    for f in fields:
        if f.kind == "run" and f.key not in ("id", "duration"):
            continue
        if f.kind == "tags":
            continue
        if f.kind in ("param", "hparam"):
            param = aliased(RunParam)
            query = query.outerjoin(param, (param.run_id == Run.id) & (param.kind == f.kind[0]) & (param.key == f.key))
            value: Any = param.num
        else:
            query, value = _field_expression(session, query, f)
        numeric.append(f)
        selected += [func.avg(value), func.min(value), func.max(value)]
    rows = session.execute(query.with_only_columns(*selected).group_by(key).order_by(key.asc().nulls_last())
                           .limit(MAX_GROUPS)).all()
    out = []
    for row in rows:
        aggregates = {}
        for i, f in enumerate(numeric):
            mean, low, high = row[2 + 3 * i: 5 + 3 * i]
            aggregates[f.label or f.name] = {"mean": None if mean is None else float(mean),
                                  "min": None if low is None else float(low),
                                  "max": None if high is None else float(high)}
        out.append({"value": row[0], "count": int(row[1]), "aggregates": aggregates})
    return out


# --------------------------------------------------------------------------- views and layouts


def list_views(session: Session, project_id: int) -> list[SavedView]:
    return list(session.scalars(select(SavedView).where(SavedView.project_id == project_id).order_by(SavedView.name,
                                                                                                   SavedView.id)))


def get_view(session: Session, view_id: int) -> SavedView | None:
    return session.get(SavedView, view_id)


def save_view(session: Session, view: SavedView | None, project_id: int, values: dict[str, Any],
              user_id: int | None) -> SavedView:
    if view is None:
        view = SavedView(project_id=project_id, created_by=user_id, created_at=utcnow())
        session.add(view)
    for key, value in values.items():
        setattr(view, key, value)
    view.updated_at = utcnow()
    session.commit()
    return view


def delete_view(session: Session, view: SavedView) -> None:
    session.delete(view)
    session.commit()


def get_layout(session: Session, project_id: int) -> dict[str, Any]:
    row = session.get(ProjectLayout, project_id)
    return dict(row.layout) if row is not None else {"panels": [], "hidden": []}


def set_layout(session: Session, project_id: int, layout: dict[str, Any]) -> dict[str, Any]:
    row = session.get(ProjectLayout, project_id)
    if row is None:
        row = ProjectLayout(project_id=project_id)
        session.add(row)
    row.layout = layout
    row.updated_at = utcnow()
    session.commit()
    return dict(row.layout)
