"""Submissions checked against the recipes workers published (``recipes`` table).

The server never imports recipe code: a worker sends each recipe's params JSON Schema and
trainer schema when it starts (``POST /api/v1/workers``), and a submission is validated here
with ``jsonschema`` against what was published. Checks that need the recipe's own code (rules
across several parameters) run in the run's process when a worker claims it, and fail the run
with their message.
"""

from __future__ import annotations

import copy
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from server.errors import ApiError


def _field(prefix: str, error: Any) -> str:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties" and not path:
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        if extra:
            path = [extra[0]]
    if error.validator == "required" and isinstance(error.validator_value, list):
        missing = [r for r in error.validator_value if r not in (error.instance or {})]
        if missing:
            path.append(missing[0])
    return ".".join([prefix, *path]) if path else prefix


def _message(field: str, error: Any) -> str:
    if error.validator == "additionalProperties":
        return f"Invalid value for {field}: this recipe has no such parameter (extra inputs are not permitted)."
    if error.validator == "required":
        return f"Invalid value for {field}: field required."
    if error.validator in ("anyOf", "oneOf") and error.context:  # e.g. "int or null": the int's own problem
        specific = [e for e in error.context if e.validator != "type"]
        if specific:
            return f"Invalid value for {field}: {specific[0].message}."
    return f"Invalid value for {field}: {error.message}."


def _listed(prefix: str, errors: list[Any]) -> list[dict[str, Any]]:
    """Every problem, one per field (``errors`` of the 422, as request validation lists them)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for error in errors:
        field = _field(prefix, error)
        if field in seen:
            continue
        seen.add(field)
        out.append({"loc": ["body", *field.split(".")], "msg": _message(field, error), "type": str(error.validator)})
    return out


def validate_each(*groups: tuple[dict[str, Any], dict[str, Any] | None, str]) -> list[dict[str, Any]]:
    """:func:`validate` for each ``(schema, values, prefix)``; one 422 listing the problems of
    every group under ``errors`` (a form shows them all at once), named by the first."""
    out: list[dict[str, Any]] = []
    first: ApiError | None = None
    problems: list[dict[str, Any]] = []
    for schema, values, prefix in groups:
        try:
            out.append(validate(schema, values, prefix))
        except ApiError as exc:
            if exc.status_code != 422:
                raise
            first = first or exc
            problems.extend(exc.errors or [{"loc": ["body", *(exc.field or prefix).split(".")], "msg": exc.message}])
    if first is not None:
        raise ApiError(422, first.message, first.field, errors=problems)
    return out


def validate(schema: dict[str, Any], values: dict[str, Any] | None, prefix: str) -> dict[str, Any]:
    """``values`` checked against ``schema`` (422 naming the first bad field), with the
    defaults of missing top-level properties filled in when ``prefix`` is ``params``."""
    values = dict(values or {})
    try:
        validator = Draft202012Validator(schema)
    except SchemaError as exc:  # a worker published a broken schema: not the submitter's fault
        raise ApiError(503, f"The published {prefix} schema of this recipe is invalid ({exc.message}); "
                            "fix the recipe and restart its worker.") from None
    errors = sorted(validator.iter_errors(values), key=lambda e: (len(list(e.absolute_path)), str(e.path)))
    if errors:
        error = errors[0]
        field = _field(prefix, error)
        raise ApiError(422, _message(field, error), field, errors=_listed(prefix, errors))
    if prefix == "params":
        for name, prop in (schema.get("properties") or {}).items():
            if name not in values and isinstance(prop, dict) and "default" in prop:
                values[name] = copy.deepcopy(prop["default"])
    return values
