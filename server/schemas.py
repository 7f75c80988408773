"""Pydantic schemas of the REST API (apart from the ORM models in server/models.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.models import Checkpoint, CodeSnapshot, Run
from server.store import encode_float, json_safe

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
QUEUE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
FloatOut = float | str | None  # non-finite floats travel as "NaN", "Infinity", "-Infinity"


class CodeSpec(BaseModel):
    """What a code run runs: a snapshot of the run's project and an entry point in it."""

    model_config = ConfigDict(extra="forbid")

    snapshot_id: int = Field(..., ge=1, le=2**31 - 1, description="A snapshot of the run's project.")  # id columns: 32-bit
    entry: dict[str, Any] = Field(..., description='{"kind": "module", "model": "pkg/models.py:Lit", "data": '
                                  '"pkg/data.py:Data" | null}, {"kind": "cli", "script": "train.py", '
                                  '"subcommand": "fit"} or {"kind": "command", "command": ["python", "train.py"]}.')


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"recipe": "external", "name": "my-script", "project": "default", "hyperparameters": {"lr": 0.001}}]})

    recipe: str = Field(..., min_length=1, max_length=200, description='A registered recipe, or "external" for a script that trains elsewhere.')
    name: str | None = Field(None, max_length=200)
    project: str = Field("default", min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    trainer: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    queue: str = Field("runyard", pattern=QUEUE_PATTERN, description="The Celery queue to run on (ignored for external runs).")
    client_key: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                   description="A client's own id for the run: creating again with it returns the same run.")
    code: CodeSpec | None = Field(None, description='With recipe "code": the snapshot and entry point to run.')
    tags: list[str] = Field(default_factory=list, max_length=50, description="Tags to set at creation: each 1-64 "
                            "characters of [A-Za-z0-9_.:-].")


class RunPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status | None = None
    hyperparameters: dict[str, Any] | None = None
    error: str | None = Field(None, max_length=1_000_000)
    name: str | None = Field(None, min_length=1, max_length=200)


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_id: int | None = Field(None, ge=1, le=2**31 - 1)  # id columns are 32-bit
    queue: str | None = Field(None, pattern=QUEUE_PATTERN, description="Default: the resumed run's queue.")


class RunOut(BaseModel):
    id: int
    name: str
    project: str
    recipe: str
    params: dict[str, Any]
    trainer: dict[str, Any]
    hyperparameters: dict[str, Any]
    status: Status
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    error: str | None
    worker_host: str | None
    device: str | None
    attempt: int
    max_attempts: int
    resumed_from_id: int | None
    resume_checkpoint_id: int | None
    cancel_requested: bool
    queue: str
    owner: str | None = None
    url: str
    last_metrics: dict[str, FloatOut] | None = None
    warnings: list[str] = Field(default_factory=list)
    code: dict[str, Any] | None = Field(None, description='A code run: {"snapshot_id", "sha256", "entry", "git": '
                                        '{"commit", "branch", "remote", "dirty"} | null}.')
    truncated: list[str] = Field(default_factory=list, description="In lists: the fields shown cut because they "
                                 "are larger than RUNYARD_MAX_VALUE_BYTES (marked '… [cut: N bytes]'); GET "
                                 "/api/v1/runs/{id} (and /hyperparameters) returns them whole.")
    tags: list[str] = Field(default_factory=list)
    note: str | None = Field(None, description="GET /api/v1/runs/{id}: the run's markdown note.")
    note_html: str | None = Field(None, description="GET /api/v1/runs/{id}: the note rendered (safe to insert).")
    values: dict[str, Any] | None = Field(None, description="Lists with columns=: each column's value.")


class RunList(BaseModel):
    items: list[RunOut]
    total: int
    limit: int
    offset: int


class CheckpointMeta(BaseModel):
    """What a checkpoint is registered with, whichever way it arrives (register or upload)."""

    model_config = ConfigDict(extra="forbid")

    epoch: int | None = Field(None, ge=0, le=2**31 - 1)
    step: int | None = Field(None, ge=0, le=2**63 - 1)
    monitor: str | None = Field(None, max_length=250)
    score: float | None = None
    is_best: bool = False
    is_last: bool = False
    resumable: bool = Field(False, description="A resume checkpoint (saved at a batch start).")


class CheckpointRegister(CheckpointMeta):
    path: str = Field(..., min_length=1, max_length=1000, description="Relative to the artifact root.")


class CheckpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    is_best: bool | None = Field(None, description="true: this is the run's best (the flag leaves the others).")
    is_last: bool | None = Field(None, description="true: this is the run's last (the flag leaves the others).")


class UploadCreate(CheckpointMeta):
    filename: str = Field(..., min_length=1, max_length=200, description="File name (no folders), e.g. epoch=3-step=120.ckpt.")
    size: int = Field(..., ge=0, le=2**63 - 1, description="The file's size in bytes.")
    sha256: str = Field(..., pattern=r"^[0-9a-fA-F]{64}$", description="The file's sha256 (hex); verified at the end.")


class UploadCreated(BaseModel):
    upload_id: str
    offset: int
    size: int


class CheckpointOut(BaseModel):
    id: int
    run_id: int
    path: str
    epoch: int | None
    step: int | None
    monitor: str | None
    score: FloatOut
    size: int | None
    sha256: str | None
    is_best: bool
    is_last: bool
    created_at: datetime
    download_url: str
    filename: str
    resumable: bool
    attempt: int | None


class UploadProgress(BaseModel):
    offset: int
    size: int
    checkpoint: CheckpointOut | None = Field(None, description="Set when the upload completed (offset == size).")


class UploadStatus(BaseModel):
    offset: int
    size: int
    done: bool
    checkpoint: CheckpointOut | None = None


class LogLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str = Field("stdout", max_length=16)
    text: str = Field(..., description="Stored cut to RUNYARD_MAX_LOG_LINE_BYTES (marked '… [cut: N bytes]').")
    time: datetime | None = None

    @field_validator("text")
    @classmethod
    def _valid_unicode(cls, value: str) -> str:
        from server.store import is_valid_text

        if not is_valid_text(value):  # a lone surrogate ("\ud800"): UTF-8 cannot hold it
            raise ValueError("the text holds a lone surrogate, which is not valid Unicode")
        return value

    @field_validator("time")
    @classmethod
    def _in_utc_range(cls, value: datetime | None) -> datetime | None:
        # stored as naive UTC: 9999-12-31T23:59-14:00 would overflow the conversion
        if value is not None and value.tzinfo is not None:
            try:
                value = value.astimezone(UTC)
            except OverflowError:
                raise ValueError("the time falls outside the years 1 to 9999 in UTC") from None
        return value


class LogLinesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[LogLineIn] = Field(..., max_length=10_000)


class LogLineOut(BaseModel):
    id: int
    stream: str
    time: datetime
    text: str


class LogLinesOut(BaseModel):
    lines: list[LogLineOut]
    cursor: int


class MetricKey(BaseModel):
    key: str
    last_value: FloatOut
    last_step: int
    count: int


class ProjectOut(BaseModel):
    id: int
    name: str
    run_count: int
    role: str | None = Field(None, description="The caller's role here (admin for a server admin).")


class RecipeOut(BaseModel):
    name: str
    description: str
    params_schema: dict[str, Any]
    trainer_schema: dict[str, Any]
    available: bool = Field(True, description="A live worker serves it.")
    queues: list[str] = Field(default_factory=list, description="Queues its live workers take runs from.")


class RecipeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = Field("", max_length=10_000)
    params_schema: dict[str, Any] = Field(default_factory=dict)
    trainer_schema: dict[str, Any] = Field(default_factory=dict)


class WorkerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=255)
    queues: list[str] = Field(default_factory=lambda: ["runyard"], max_length=100)
    recipes: list[RecipeIn] = Field(default_factory=list, max_length=1000)
    gpus: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=1024,
        description="The GPU ids of the worker's host it may reserve for a run (CUDA_VISIBLE_DEVICES values).")

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: list[str]) -> list[str]:
        import re

        for q in value:
            if not re.fullmatch(QUEUE_PATTERN, q):
                raise ValueError(f"queue {q!r} must be 1-64 letters, digits, '_', '.' or '-'")
        return value


class WorkerHeartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: int | None = Field(None, ge=1, le=2**31 - 1)  # id columns are 32-bit


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker: str = Field(..., min_length=1, max_length=255)
    device: str = Field("cpu", max_length=100)


class FinishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["succeeded", "failed", "cancelled"]
    error: str | None = Field(None, max_length=1_000_000)
    attempt: int | None = Field(None, ge=1, le=2**31 - 1, description="With a worker token: the attempt it ran.")


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempt: int | None = Field(None, ge=1, le=2**31 - 1, description="With a worker token: the attempt it runs.")


class RequeueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempt: int = Field(..., ge=1, le=2**31 - 1)
    error: str | None = Field(None, min_length=1, max_length=20000, description=(
        "The attempt crashed (a rank of a multi-process run died): counted, retried from the last checkpoint, "
        "failed with this error after max_attempts. Without it: a warm shutdown, not counted."))


class Accepted(BaseModel):
    accepted: int
    duplicate: bool = Field(False, description="This Idempotency-Key was stored before: nothing stored again.")


class SnapshotOut(BaseModel):
    id: int
    project: str
    sha256: str
    size: int = Field(..., description="Bytes of the tar.gz.")
    unpacked_bytes: int
    file_count: int
    git: dict[str, Any] | None = Field(None, description="The git record of the folder (commit, branch, "
                                       "remote, dirty, diff_bytes, diff_truncated, root), when it was in a repo.")
    created_at: datetime
    created_by: str | None
    download_url: str
    files: list[dict[str, Any]] | None = Field(None, description="[{path, size}] (GET of one snapshot only).")


class SnapshotList(BaseModel):
    items: list[SnapshotOut]


class SnapshotFile(BaseModel):
    path: str
    size: int
    text: str | None = Field(None, description="The file's text (its first 1 MiB); absent for a binary file.")
    binary: bool = False
    truncated: bool = Field(False, description="The text is the file's first 1 MiB only.")


class CodeSchemaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params_schema: dict[str, Any]
    trainer_schema: dict[str, Any] | None = None


class CodeSchemaOut(BaseModel):
    params_schema: dict[str, Any]
    trainer_schema: dict[str, Any] | None


class EnvironmentOut(BaseModel):
    record: dict[str, Any]
    updated_at: datetime


def snapshot_out(snapshot: CodeSnapshot, files: list[dict[str, Any]] | None = None) -> SnapshotOut:
    return SnapshotOut(
        id=snapshot.id, project=snapshot.project.name, sha256=snapshot.sha256, size=snapshot.size,
        unpacked_bytes=snapshot.unpacked_bytes, file_count=snapshot.file_count,
        git=json_safe(snapshot.git) if snapshot.git is not None else None, created_at=snapshot.created_at,
        created_by=snapshot.creator.name if snapshot.creator else None,
        download_url=f"/api/v1/snapshots/{snapshot.id}/download", files=files,
    )


GIT_SUMMARY = ("commit", "branch", "remote", "dirty")


def code_out(run: Run) -> dict[str, Any] | None:
    """RunOut.code of a code run (None for the others)."""
    if run.snapshot_id is None:
        return None
    snapshot = run.snapshot
    git = snapshot.git if snapshot is not None else None
    return {
        "snapshot_id": run.snapshot_id,
        "sha256": snapshot.sha256 if snapshot is not None else None,
        "entry": json_safe(run.entry or {}),
        "git": None if not git else {k: json_safe(git.get(k)) for k in GIT_SUMMARY},
    }


CUT_KEY = "…"


def _json_bytes(value: Any) -> int:
    import json

    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8", "replace"))


def cut_text(text: str | None, cap: int) -> str | None:
    """``text`` in at most about ``cap`` UTF-8 bytes, ending in ``… [cut: N bytes]`` when cut."""
    if text is None or len(text) * 4 <= cap:
        return text
    data = text.encode("utf-8", "replace")
    if len(data) <= cap:
        return text
    head = data[:cap].decode("utf-8", "ignore")
    return f"{head}… [cut: {len(data) - len(head.encode('utf-8', 'replace'))} bytes]"


def cut_mapping(value: dict[str, Any], cap: int, where: str) -> dict[str, Any] | None:
    """None when ``value`` fits in ``cap`` JSON bytes, else its first entries that fit and the
    entry ``"…": "[cut: N bytes; ...]"`` saying how much is left out and where to read it whole."""
    total = _json_bytes(value)
    if total <= cap:
        return None
    out: dict[str, Any] = {}
    used = 2
    for key, item in value.items():
        size = _json_bytes({key: item})
        if used + size > cap:
            break
        out[key] = item
        used += size
    out[CUT_KEY] = f"[cut: {total - used} bytes; the whole value at {where}]"
    return out


def _cut_run(out: RunOut, cap: int) -> RunOut:
    """A list's view of a run: fields over ``cap`` bytes (stored before the limits existed) cut."""
    for name in ("name", "error"):
        value = getattr(out, name)
        cut = cut_text(value, cap)
        if cut is not value and cut != value:
            setattr(out, name, cut)
            out.truncated.append(name)
    for name in ("params", "trainer", "hyperparameters"):
        where = f"GET /api/v1/runs/{out.id}" + ("/hyperparameters" if name == "hyperparameters" else "")
        cut_map = cut_mapping(getattr(out, name), cap, where)
        if cut_map is not None:
            setattr(out, name, cut_map)
            out.truncated.append(name)
    return out


def run_out(run: Run, public_url: str, last_metrics: dict[str, Any] | None = None,
            cap: int | None = None) -> RunOut:
    """The API's view of a run; with ``cap`` (RUNYARD_MAX_VALUE_BYTES, in lists and the run list's
    events), text and mappings larger than ``cap`` bytes are cut and named in ``truncated``."""
    duration = None
    if run.started_at is not None:
        end = run.ended_at or (None if run.status != "running" else datetime.now(run.started_at.tzinfo))
        if end is not None:
            duration = max(0.0, (end - run.started_at).total_seconds())
    out = RunOut(
        id=run.id, name=run.name, project=run.project.name, recipe=run.recipe, params=json_safe(run.params or {}),
        trainer=json_safe(run.trainer or {}), hyperparameters=json_safe(run.hyperparameters or {}),
        status=run.status, created_at=run.created_at, updated_at=run.updated_at, started_at=run.started_at,
        ended_at=run.ended_at, duration_s=duration, error=run.error, worker_host=run.worker_host,
        device=run.device, attempt=run.attempt, max_attempts=run.max_attempts,
        resumed_from_id=run.resumed_from_id, resume_checkpoint_id=run.resume_checkpoint_id,
        cancel_requested=run.cancel_requested, queue=run.queue, owner=run.owner.name if run.owner else None, url=f"{public_url.rstrip('/')}/runs/{run.id}",
        last_metrics=None if last_metrics is None else {k: encode_float(v) for k, v in last_metrics.items()},
        code=code_out(run),
    )
    return out if cap is None else _cut_run(out, cap)


def checkpoint_out(checkpoint: Checkpoint) -> CheckpointOut:
    return CheckpointOut(
        id=checkpoint.id, run_id=checkpoint.run_id, path=checkpoint.path, epoch=checkpoint.epoch,
        step=checkpoint.step, monitor=checkpoint.monitor, score=encode_float(checkpoint.score),
        size=checkpoint.size, sha256=checkpoint.sha256, is_best=checkpoint.is_best, is_last=checkpoint.is_last,
        created_at=checkpoint.created_at, download_url=f"/api/v1/checkpoints/{checkpoint.id}/download",
        filename=checkpoint.path.rsplit("/", 1)[-1], resumable=bool(checkpoint.resumable), attempt=checkpoint.attempt,
    )


# --------------------------------------------------------------------------- issue 14: tags, notes, views, layout

TAG_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


class TagsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[str] = Field(..., max_length=50)


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(..., max_length=65536, description="Markdown, at most 64 KiB.")

    @field_validator("note")
    @classmethod
    def _size(cls, value: str) -> str:
        if len(value.encode("utf-8", "surrogatepass")) > 65536:
            raise ValueError("note is larger than 64 KiB")
        return value


class BulkQuery(BaseModel):
    """Every run a runs-list query matches (``GET /api/v1/runs``'s ``q``, ``status``, ``recipe``),
    in one project or in all the caller may see."""

    model_config = ConfigDict(extra="forbid")

    project: int | None = Field(None, ge=1, le=2**31 - 1, description="A project id; null: every project the "
                                "caller may see.")
    q: str = Field("", max_length=4000, description="A query, as GET /api/v1/runs's q.")
    status: str | None = Field(None, max_length=200, description="Comma-separated statuses, as GET /api/v1/runs's.")
    recipe: str | None = Field(None, max_length=200)


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[int] | None = Field(None, min_length=1, max_length=1000)
    query: BulkQuery | None = Field(None, description="Instead of ids: every run this query matches now "
                                    "(at most RUNYARD_BULK_MAX), with expected.")
    expected: int | None = Field(None, ge=0, le=2**31 - 1, description="With query: the count the user was "
                                 "shown; another count now answers 409 and changes nothing.")
    action: Literal["tag", "untag", "cancel", "delete"]
    tags: list[str] = Field(default_factory=list, max_length=50)


class ViewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=200)
    query: str = Field("", max_length=4000)
    columns: list[str] = Field(default_factory=list, max_length=100)
    sort: str = Field("", max_length=300)
    group_by: str = Field("", max_length=300)


class Panel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, max_length=100)
    title: str = Field("", max_length=200)
    metrics: list[str] = Field(default_factory=list, max_length=20)
    log_y: bool = False


class LayoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    panels: list[Panel] = Field(default_factory=list, max_length=100)
    hidden: list[str] = Field(default_factory=list, max_length=1000)
