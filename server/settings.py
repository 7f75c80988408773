"""Every setting Runyard reads, from ``RUNYARD_*`` environment variables, in one place."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path("runyard-data")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNYARD_", extra="ignore")

    home: Path = Field(DEFAULT_HOME, description="RUNYARD_HOME: where the embedded defaults keep their files.")
    database_url: str = Field("", description="SQLAlchemy URL; default: SQLite file under RUNYARD_HOME.")
    artifact_root: Path = Field(Path(""), description="Checkpoint root; default: RUNYARD_HOME/artifacts.")
    broker_url: str = Field("", description="Celery broker; default: SQLAlchemy transport on a SQLite file.")
    data_dir: Path = Field(Path(""), description="RUNYARD_DATA_DIR: where recipes find datasets (MNIST).")
    recipes: str = Field("", description="Comma-separated modules that register user recipes.")
    download_data: bool = Field(True, description="RUNYARD_DOWNLOAD_DATA: let recipes download missing datasets (MNIST).")
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = Field("", description="Base URL printed in links; default http://host:port.")
    allowed_hosts: str = Field("", description="RUNYARD_ALLOWED_HOSTS: comma-separated host names the Host header "
                               "may carry (e.g. 'runyard.example.org,*.lab.example.org'; '*': any); others are "
                               "refused with 400, which defeats DNS rebinding; default: RUNYARD_HOST, localhost, "
                               "127.0.0.1, ::1, the hosts of RUNYARD_PUBLIC_URL and RUNYARD_URL, and the machine's "
                               "host names when RUNYARD_HOST is 0.0.0.0 or ::.")
    heartbeat_timeout: float = Field(30.0, gt=0, description="Seconds without a worker heartbeat before a running run is requeued.")
    max_attempts: int = Field(3, ge=1, description="Attempts before a run that keeps failing is failed.")
    sse_poll_interval: float = Field(0.2, gt=0, description="RUNYARD_SSE_POLL_INTERVAL: seconds between the "
                                     "change feed's database polls (one feed per server process, for all its "
                                     "live event streams).")
    max_streams_per_client: int = Field(64, ge=1, description="RUNYARD_MAX_STREAMS_PER_CLIENT: live event streams "
                                        "one client (a token, a logged-in user, else a client address) may hold "
                                        "open on one server process (more: 429).")
    max_metric_points: int = Field(10_000, ge=1, description="Most metric points one POST may carry (more: 413).")
    # request limits (server/limits.py, docs/security.md "Request limits")
    max_body_bytes: int = Field(2**20, ge=1, description="RUNYARD_MAX_BODY_BYTES: the largest JSON body of any "
                                "request but metrics, logs and uploads (run create/patch, hyperparameters, "
                                "summary, ...), counted as it streams in (more: 413); default 1 MiB.")
    max_metrics_body_bytes: int = Field(64 * 2**20, ge=1, description="RUNYARD_MAX_METRICS_BODY_BYTES: the largest "
                                        "body of one POST /runs/{id}/metrics (more: 413); default 64 MiB.")
    max_logs_body_bytes: int = Field(8 * 2**20, ge=1, description="RUNYARD_MAX_LOGS_BODY_BYTES: the largest body "
                                     "of one POST /runs/{id}/logs (more: 413); default 8 MiB.")
    max_log_line_bytes: int = Field(64 * 2**10, ge=64, description="RUNYARD_MAX_LOG_LINE_BYTES: a log line longer "
                                    "than this (UTF-8 bytes) is stored cut, ending in '… [cut: N bytes]'; "
                                    "default 64 KiB.")
    max_json_depth: int = Field(64, ge=2, description="RUNYARD_MAX_JSON_DEPTH: the deepest nesting of arrays and "
                                "objects a JSON body may have (more: 422).")
    max_json_items: int = Field(200_000, ge=10, description="RUNYARD_MAX_JSON_ITEMS: the most values (and keys) "
                                "one JSON body may hold (more: 422).")
    max_value_bytes: int = Field(64 * 2**10, ge=256, description="RUNYARD_MAX_VALUE_BYTES: in lists (GET /runs, "
                                 "the run events of /events) a run's name, error, params, trainer or "
                                 "hyperparameters larger than this (JSON bytes) is shown cut, with a marker; its "
                                 "own endpoint returns it whole; default 64 KiB.")
    bulk_max: int = Field(2_000, ge=1, description="RUNYARD_BULK_MAX: the most runs one bulk action by query "
                          "(POST /api/v1/runs/bulk with query) may act on (more: 422).")
    artifact_url: str = Field("", description="RUNYARD_ARTIFACT_URL: where checkpoint files are stored; empty: the "
                              "local RUNYARD_ARTIFACT_ROOT, s3://bucket/prefix: S3 (boto3, AWS_* credentials).")
    s3_endpoint_url: str = Field("", description="RUNYARD_S3_ENDPOINT_URL: an S3-compatible endpoint (MinIO, ...); "
                                 "default AWS_ENDPOINT_URL, else AWS itself.")
    upload_dir: Path = Field(Path(""), description="RUNYARD_UPLOAD_DIR: where the server stages checkpoint uploads "
                             "until they are complete (server-local disk); default RUNYARD_HOME/uploads.")
    max_checkpoint_bytes: int = Field(50 * 2**30, ge=1, description="RUNYARD_MAX_CHECKPOINT_BYTES: the largest "
                                      "checkpoint an upload may declare or send (more: 413); default 50 GiB.")
    snapshot_max_bytes: int = Field(100 * 2**20, ge=1, description="RUNYARD_SNAPSHOT_MAX_BYTES: the largest code "
                                    "snapshot (tar.gz) an upload may send (more: 413); default 100 MiB.")
    snapshot_max_unpacked_bytes: int = Field(100 * 2**20, ge=1, description="RUNYARD_SNAPSHOT_MAX_UNPACKED_BYTES: "
                                             "the most bytes a snapshot's files may hold unpacked (more: 413); "
                                             "default 100 MiB.")
    snapshot_max_files: int = Field(10_000, ge=1, description="RUNYARD_SNAPSHOT_MAX_FILES: the most files a "
                                    "snapshot may hold (more: 413).")
    # quotas per project (server/quotas.py, docs/security.md "Quotas and retention"); an admin sets a
    # project's own with PUT /api/v1/projects/{id}/quotas or `runyard project quota`
    quota_checkpoint_bytes: int = Field(100 * 2**30, ge=1, description="RUNYARD_QUOTA_CHECKPOINT_BYTES: the most "
                                        "bytes all of a project's checkpoints may hold (an upload past it: 413); "
                                        "default 100 GiB.")
    quota_keep_best: int = Field(5, ge=0, description="RUNYARD_QUOTA_KEEP_BEST: retention, per run: keep the k "
                                 "best checkpoints by score (in the monitor's mode).")
    quota_keep_last: int = Field(5, ge=1, description="RUNYARD_QUOTA_KEEP_LAST: retention, per run: keep the n "
                                 "newest checkpoints (at least 1).")
    quota_keep_every: int = Field(0, ge=0, description="RUNYARD_QUOTA_KEEP_EVERY: retention, per run: also keep "
                                  "the first checkpoint of every N training steps (0: off).")
    quota_metric_keys_per_run: int = Field(1_000, ge=1, description="RUNYARD_QUOTA_METRIC_KEYS_PER_RUN: the most "
                                           "metric keys one run may log (more: 413, the run fails).")
    quota_points_per_run: int = Field(10_000_000, ge=1, description="RUNYARD_QUOTA_POINTS_PER_RUN: the most "
                                      "metric points one run may hold (more: 413, the run fails).")
    quota_max_run_seconds: float = Field(3 * 86400.0, gt=0, description="RUNYARD_QUOTA_MAX_RUN_SECONDS: the longest "
                                         "a run may run, in seconds: queued runs get it as trainer max_time, and "
                                         "the reaper fails runs past it; default 3 days.")
    quota_run_time_grace: float = Field(300.0, ge=0, description="RUNYARD_QUOTA_RUN_TIME_GRACE: seconds past its "
                                        "longest run time before the reaper stops a run (time to save and finish).")
    sweep_interval: float = Field(3600.0, gt=0, description="RUNYARD_SWEEP_INTERVAL: seconds between sweeps that "
                                  "delete files no row points to (checkpoints, snapshot blobs, staged uploads).")
    sweep_grace: float = Field(3600.0, ge=0, description="RUNYARD_SWEEP_GRACE: the sweep only deletes files "
                               "untouched for this many seconds (writes in flight are safe).")
    health_probe_interval: float = Field(5.0, ge=0, description="RUNYARD_HEALTH_PROBE_INTERVAL: seconds /healthz "
                                         "keeps the result of its write probes (the database, the artifact store, "
                                         "the upload staging folder) before it writes again (server/health.py).")
    reaper: bool = Field(True, description="Run the reaper in the server: requeue runs with a stale heartbeat, fail "
                         "scripts that stopped heartbeating, send queued runs whose message never reached the broker.")
    resend_after: float = Field(0.0, ge=0, description="RUNYARD_RESEND_AFTER: seconds after which a queued run's "
                                "broker message is presumed lost and sent again while a worker of its queue is idle; "
                                "default 10 x RUNYARD_HEARTBEAT_TIMEOUT.")
    migrate: bool = Field(True, description="RUNYARD_MIGRATE: bring the database to the latest migration when the "
                          "server starts (runyard up migrates once itself and turns this off for its server).")
    url: str = Field("", description="RUNYARD_URL: the server, for workers, run processes, RunyardLogger and the "
                     "CLI; default http://host:port.")
    token: str = Field("", description="RUNYARD_TOKEN: the token workers, scripts and the CLI send (a worker token "
                       "for `runyard worker`).", repr=False)
    worker_name: str = Field("", description="RUNYARD_WORKER_NAME: the name a worker registers as (default: host).")
    # accounts, sessions, SSO (docs/security.md)
    secret_key: str = Field("", repr=False, description="RUNYARD_SECRET_KEY: signs the short-lived SSO login "
                            "state cookie; default: a random key kept in RUNYARD_HOME/secret_key (0600).")
    session_max_age: float = Field(14 * 86400, gt=0, description="RUNYARD_SESSION_MAX_AGE: seconds a browser "
                                   "login lasts at most (default 14 days).")
    session_idle_timeout: float = Field(3 * 86400, gt=0, description="RUNYARD_SESSION_IDLE_TIMEOUT: seconds "
                                        "without a request after which a browser login ends (default 3 days).")
    login_max_failures: int = Field(5, ge=1, description="RUNYARD_LOGIN_MAX_FAILURES: failed logins per account "
                                    "within RUNYARD_LOGIN_WINDOW before it is refused with 429.")
    login_max_failures_per_address: int = Field(20, ge=1, description="RUNYARD_LOGIN_MAX_FAILURES_PER_ADDRESS: "
                                                "failed logins per client address within the window.")
    login_window: float = Field(300.0, gt=0, description="RUNYARD_LOGIN_WINDOW: seconds the login limits count.")
    login_link_ttl: float = Field(24 * 3600.0, gt=0, description="RUNYARD_LOGIN_LINK_TTL: seconds a one-time "
                                  "login link stays valid.")
    oidc_issuer: str = Field("", description="RUNYARD_OIDC_ISSUER: the OpenID Connect issuer URL (its "
                             "/.well-known/openid-configuration is read); empty: no single sign-on.")
    oidc_client_id: str = Field("", description="RUNYARD_OIDC_CLIENT_ID")
    oidc_client_secret: str = Field("", repr=False, description="RUNYARD_OIDC_CLIENT_SECRET")
    oidc_scopes: str = Field("openid email profile", description="RUNYARD_OIDC_SCOPES: scopes asked for.")
    oidc_groups_claim: str = Field("groups", description="RUNYARD_OIDC_GROUPS_CLAIM: the ID token / userinfo "
                                   "claim that lists the user's groups.")
    oidc_group_roles: str = Field("", description="RUNYARD_OIDC_GROUP_ROLES: group=project:role pairs, comma "
                                  "separated (e.g. 'ml-team=vision:member,ml-leads=vision:admin'); a user's roles "
                                  "from SSO are recomputed at every login.")
    oidc_admin_groups: str = Field("", description="RUNYARD_OIDC_ADMIN_GROUPS: comma-separated groups whose "
                                   "members are server admins.")
    oidc_name: str = Field("single sign-on", description="RUNYARD_OIDC_NAME: the login button's label.")
    admin_user: str = Field("", description="RUNYARD_ADMIN_USER: with RUNYARD_ADMIN_PASSWORD, `runyard server` / "
                            "`runyard up` create this server admin at start if no user of that name exists (for "
                            "deployments such as docker compose); it is never changed afterwards.")
    admin_password: str = Field("", repr=False, description="RUNYARD_ADMIN_PASSWORD: that admin's first password "
                                "(at least 8 characters).")

    def model_post_init(self, __context: object) -> None:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'runyard.db').resolve()}"
        if not str(self.artifact_root) or str(self.artifact_root) == ".":
            self.artifact_root = self.home / "artifacts"
        self.artifact_root = self.artifact_root.resolve()
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{(self.home / 'broker.db').resolve()}"
        if not str(self.data_dir) or str(self.data_dir) == ".":
            self.data_dir = self.home / "datasets"
        self.data_dir = self.data_dir.resolve()
        if not str(self.upload_dir) or str(self.upload_dir) == ".":
            self.upload_dir = self.home / "uploads"
        self.upload_dir = self.upload_dir.resolve()
        if not self.public_url:
            self.public_url = f"http://{self.host}:{self.port}"
        if not self.url:
            self.url = f"http://{self.host}:{self.port}"
        self.url = self.url.rstrip("/")
        if not self.resend_after:
            self.resend_after = 10 * self.heartbeat_timeout
        self.oidc_issuer = self.oidc_issuer.rstrip("/")

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)

    def signing_key(self) -> str:
        """RUNYARD_SECRET_KEY, else a random key made once and kept in RUNYARD_HOME/secret_key."""
        if self.secret_key:
            return self.secret_key
        import os
        import secrets

        path = self.home / "secret_key"
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    @property
    def heartbeat_interval(self) -> float:
        """How often runs and workers heartbeat: a quarter of the timeout, between 0.2 s and 5 s
        (three missed beats before the reaper acts)."""
        return max(0.2, min(5.0, self.heartbeat_timeout / 4))

    def ensure_dirs(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.artifact_root.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def forbid_peeking() -> bool:
    """Make this process non-dumpable (Linux ``prctl(PR_SET_DUMPABLE, 0)``): other processes of
    the same user, such as a run's own code, can then no longer read its ``/proc/<pid>/environ``
    or memory, which hold the worker's token. For worker processes; no core dumps either.
    Returns whether it took effect."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE = 4
    except OSError:
        return False
