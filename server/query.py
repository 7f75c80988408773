"""The runs query language (issue 14, docs/dashboard.md): parsed with ``lark`` into SQLAlchemy
expressions over ``runs`` and the summary tables of ``server/models.py`` (never into SQL text).

Fields: run fields (``name, status, project, recipe, id, created_at, started_at, ended_at,
duration, user, note``), ``params.<key>``, ``hparams.<key>``, ``metrics.<key>[.last|.min|.max]``,
``tag:<name>`` and ``tags``. Operators ``= != < <= > >= ~`` (contains, case-insensitive),
``in (a, b)``, ``and``, ``or``, ``not`` and parentheses. A bare word or string alone: the run
name contains it. :class:`QueryError` carries the 1-based column of the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from sqlalchemy import and_, bindparam, case, false, func, not_, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from server.models import Project, Run, RunMetricSummary, RunParam, RunTag, User, UTCDateTime, utcnow

GRAMMAR = r"""
?start: expr?
?expr: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> negate
         | atom
?atom: "(" expr ")"
     | NAME OP value        -> compare
     | NAME _IN "(" value ("," value)* ")" -> member
     | NAME                 -> bare
     | STRING               -> bare
     | NUMBER               -> bare
value: NAME | STRING | NUMBER
_OR.2: /or\b/i
_AND.2: /and\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
OP: "!=" | "<=" | ">=" | "=" | "<" | ">" | "~"
NAME: /[A-Za-z_][A-Za-z0-9_.:\/-]*/
NUMBER: /[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /"(\\.|[^"\\])*"/ | /'(\\.|[^'\\])*'/
%ignore /\s+/
"""

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)

RUN_FIELDS = ("name", "status", "project", "recipe", "id", "created_at", "started_at", "ended_at", "duration",
              "user", "note")
METRIC_STATS = ("last", "min", "max")
MAX_QUERY = 4000
_PLAIN = re.compile(r"[=!<>~()\"',]|\b(params|hparams|metrics)\.|\btags?\b|\btag:")
_KEYWORD = re.compile(r"\b(and|or|not|in)\b", re.I)
MAX_IN = 1000


class QueryError(ValueError):
    def __init__(self, message: str, column: int = 1, field: str = "q") -> None:
        super().__init__(message)
        self.message = message
        self.column = column
        self.field = field


@dataclass(frozen=True)
class Field:
    """A resolved query field: ``kind`` run|param|hparam|metric|tags, ``key`` (param/metric key or run field)."""

    kind: str
    key: str
    stat: str = "last"
    label: str = ""  # the name the caller wrote (a column of the runs list)

    def labelled(self, label: str) -> Field:
        return Field(self.kind, self.key, self.stat, label)

    @property
    def name(self) -> str:
        if self.kind == "run" or self.kind == "tags":
            return self.key
        if self.kind == "metric":
            return f"metrics.{self.key}.{self.stat}"
        return f"{'params' if self.kind == 'param' else 'hparams'}.{self.key}"


def parse_field(text: str, column: int = 1, field: str = "q") -> Field:
    """A field name (also for ``sort``, ``columns`` and ``group_by``)."""
    if text in RUN_FIELDS:
        return Field("run", text)
    if text == "tags":
        return Field("tags", "tags")
    for prefix, kind in (("params.", "param"), ("hparams.", "hparam"), ("hyperparameters.", "hparam")):
        if text.startswith(prefix) and len(text) > len(prefix):
            return Field(kind, text[len(prefix):])
    if text.startswith("metrics.") and len(text) > len("metrics."):
        key = text[len("metrics."):]
        head, _, stat = key.rpartition(".")
        if head and stat in METRIC_STATS:
            return Field("metric", head, stat)
        return Field("metric", key, "last")
    if text.startswith("metric:") and len(text) > len("metric:"):  # the old sort=metric:<key>
        return Field("metric", text[len("metric:"):], "last")
    raise QueryError(f"Unknown field {text!r}: use one of {', '.join(RUN_FIELDS)}, params.<key>, hparams.<key>, "
                     "metrics.<key>[.last|.min|.max], tags or tag:<name>.", column, field)


def _literal(token: Token) -> Any:
    if token.type == "NUMBER":
        number = float(token.value)
        return int(number) if number.is_integer() and "." not in token.value and "e" not in token.value.lower() \
            else number
    if token.type == "STRING":
        body = token.value[1:-1]
        return body.replace("\\" + token.value[0], token.value[0]).replace("\\\\", "\\")
    word = token.value
    lowered = word.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    return word


def _contains(column: Any, text: Any) -> ColumnElement[bool]:
    escaped = str(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")


def _compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    if value is None:
        if op == "=":
            return column.is_(None)
        if op == "!=":
            return column.is_not(None)
    if op == "~":
        return _contains(column, value)
    return {"=": column.__eq__, "!=": column.__ne__, "<": column.__lt__, "<=": column.__le__,
            ">": column.__gt__, ">=": column.__ge__}[op](value)


def duration_seconds(dialect: str) -> Any:
    """SQL for a run's duration in seconds (as ``duration_s`` of the API)."""
    now = bindparam("duration_now", utcnow(), type_=UTCDateTime())
    end = case((Run.ended_at.is_not(None), Run.ended_at), (Run.status == "running", now), else_=None)
    if dialect == "postgresql":
        return func.extract("epoch", end - Run.started_at)
    return (func.julianday(end) - func.julianday(Run.started_at)) * 86400.0


def run_column(key: str, dialect: str) -> Any:
    """The SQL expression of a run field."""
    if key == "project":
        return select(Project.name).where(Project.id == Run.project_id).scalar_subquery()
    if key == "user":
        return select(User.name).where(User.id == Run.owner_id).scalar_subquery()
    if key == "duration":
        return duration_seconds(dialect)
    return getattr(Run, key)


def _time_value(value: Any, column: int) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise QueryError(f"Not a date/time: {value!r}; write e.g. \"2026-12-01\" or \"2026-12-01T10:00\".",
                         column) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def condition(field: Field, op: str, value: Any, dialect: str, column: int = 1) -> ColumnElement[bool]:
    """``field op value`` as a WHERE condition on ``runs``."""
    if field.kind == "run":
        if field.key in ("created_at", "started_at", "ended_at") and value is not None and op != "~":
            value = _time_value(value, column)
        elif field.key in ("id", "duration") and op != "~" and value is not None \
                and not isinstance(value, int | float):
            raise QueryError(f"{field.key} compares with a number, not {value!r}.", column)
        elif field.key in ("name", "status", "project", "recipe", "user", "note") and value is not None:
            value = str(value).lower() if field.key == "status" else str(value)
        return _compare(run_column(field.key, dialect), op, value)
    if field.kind == "tags":
        if value is None:
            exists = Run.id.in_(select(RunTag.run_id))
            return not_(exists) if op == "=" else exists
        inner = _contains(RunTag.tag, value) if op == "~" else _compare(RunTag.tag, "=", str(value))
        hit = Run.id.in_(select(RunTag.run_id).where(inner))
        if op in ("=", "~"):
            return hit
        if op == "!=":
            return not_(hit)
        raise QueryError(f"tags takes = != ~ or in, not {op}.", column)
    if field.kind in ("param", "hparam"):
        kind = "p" if field.kind == "param" else "h"
        base = [RunParam.kind == kind, RunParam.key == field.key]
        if value is None:
            present = Run.id.in_(select(RunParam.run_id).where(*base))
            return not_(present) if op == "=" else present
        if op == "~":
            inner = _contains(RunParam.text, value)
        elif isinstance(value, bool):
            inner = _compare(RunParam.num, op, 1.0 if value else 0.0)
        elif isinstance(value, int | float):
            inner = _compare(RunParam.num, op, float(value))
        else:
            inner = _compare(RunParam.text, op, str(value))
        return Run.id.in_(select(RunParam.run_id).where(*base, inner))
    stat = {"last": RunMetricSummary.last_value, "min": RunMetricSummary.min_value,
            "max": RunMetricSummary.max_value}[field.stat]
    if value is None:
        present = Run.id.in_(select(RunMetricSummary.run_id).where(RunMetricSummary.key == field.key))
        return not_(present) if op == "=" else present
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise QueryError(f"{field.name} compares with a number, not {value!r}.", column)
    if op == "~":
        raise QueryError(f"{field.name} is a number; ~ (contains) is for text.", column)
    return Run.id.in_(select(RunMetricSummary.run_id).where(RunMetricSummary.key == field.key,
                                                            _compare(stat, op, float(value))))


def _col(node: Tree | Token) -> int:
    if isinstance(node, Token):
        return node.column or 1
    return getattr(node.meta, "column", 1) or 1


def _compile(node: Tree | Token, dialect: str) -> ColumnElement[bool]:
    if isinstance(node, Token):  # a lone token never reaches here (bare wraps it)
        raise QueryError("Unexpected token.", _col(node))
    if node.data == "or_expr":
        return or_(*(_compile(c, dialect) for c in node.children))
    if node.data == "and_expr":
        return and_(*(_compile(c, dialect) for c in node.children))
    if node.data == "negate":
        return not_(_compile(node.children[0], dialect))
    if node.data == "bare":
        token = node.children[0]
        assert isinstance(token, Token)
        text = token.value if token.type == "NAME" else str(_literal(token))
        if token.type == "NAME" and text.startswith("tag:"):
            tag = text[4:]
            if not tag:
                raise QueryError("tag: needs a tag name, e.g. tag:baseline.", _col(token))
            return Run.id.in_(select(RunTag.run_id).where(RunTag.tag == tag))
        return _contains(Run.name, text)
    if node.data == "compare":
        name, op, value = node.children
        assert isinstance(name, Token) and isinstance(op, Token) and isinstance(value, Tree)
        field = parse_field(name.value, _col(name))
        token = value.children[0]
        assert isinstance(token, Token)
        return condition(field, op.value, _literal(token), dialect, _col(token))
    if node.data == "member":
        name, *values = node.children
        assert isinstance(name, Token)
        field = parse_field(name.value, _col(name))
        if len(values) > MAX_IN:
            raise QueryError(f"in (...) takes at most {MAX_IN} values.", _col(name))
        parts = []
        for value in values:
            assert isinstance(value, Tree)
            token = value.children[0]
            assert isinstance(token, Token)
            parts.append(condition(field, "=", _literal(token), dialect, _col(token)))
        return or_(*parts)
    if node.data == "start":
        return true()
    raise QueryError(f"Unexpected {node.data}.", _col(node))


def _describe(exc: UnexpectedInput, text: str) -> str:
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        return "The query ends too early (a value, a field or a closing parenthesis is missing)."
    if isinstance(exc, UnexpectedCharacters):
        return f"Unexpected character {text[exc.pos_in_stream or 0]!r}."
    if isinstance(exc, UnexpectedToken):
        return f"Unexpected {exc.token.value!r}."
    return "Invalid query."


def compile_query(text: str | None, dialect: str) -> ColumnElement[bool]:
    """The WHERE condition of a query (``true()`` for an empty one)."""
    if text is None or not text.strip():
        return true()
    if len(text) > MAX_QUERY:
        raise QueryError(f"The query is longer than {MAX_QUERY} characters.", MAX_QUERY + 1)
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as exc:
        if _PLAIN.search(text) is None and _KEYWORD.search(text) is None:
            return _contains(Run.name, text.strip())  # plain text such as "my run" or "50%": the old name search
        column = getattr(exc, "column", None)
        if not isinstance(column, int) or column < 1 or isinstance(exc, UnexpectedEOF) or (
                isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
            column = len(text.rstrip()) + 1
        raise QueryError(f"Invalid query at column {column}: {_describe(exc, text)}", column) from None
    try:
        return _compile(tree, dialect)
    except QueryError as exc:
        if not exc.message.startswith("Invalid query"):
            exc.message = f"Invalid query at column {exc.column}: {exc.message}"
            exc.args = (exc.message,)
        raise


__all__ = ["Field", "QueryError", "RUN_FIELDS", "compile_query", "condition", "false", "parse_field", "run_column"]
