"""Settings: every RUNYARD_* variable is read from the environment, the defaults live under
./runyard-data, and each variable is documented (README and docs/api.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings

REPO = Path(__file__).resolve().parents[2]

ENVIRONMENT = {
    "RUNYARD_HOME": ("home", "{tmp}/home", lambda tmp: Path(f"{tmp}/home")),
    "RUNYARD_DATABASE_URL": ("database_url", "postgresql://u:p@db.example:5433/runs",
                             lambda tmp: "postgresql://u:p@db.example:5433/runs"),
    "RUNYARD_ARTIFACT_ROOT": ("artifact_root", "{tmp}/art", lambda tmp: Path(f"{tmp}/art").resolve()),
    "RUNYARD_BROKER_URL": ("broker_url", "redis://broker.example:6380/3", lambda tmp: "redis://broker.example:6380/3"),
    "RUNYARD_DATA_DIR": ("data_dir", "{tmp}/data", lambda tmp: Path(f"{tmp}/data").resolve()),
    "RUNYARD_RECIPES": ("recipes", "a.recipes,b.recipes", lambda tmp: "a.recipes,b.recipes"),
    "RUNYARD_DOWNLOAD_DATA": ("download_data", "false", lambda tmp: False),
    "RUNYARD_HOST": ("host", "0.0.0.0", lambda tmp: "0.0.0.0"),
    "RUNYARD_PORT": ("port", "9123", lambda tmp: 9123),
    "RUNYARD_PUBLIC_URL": ("public_url", "https://runyard.example", lambda tmp: "https://runyard.example"),
    "RUNYARD_ALLOWED_HOSTS": ("allowed_hosts", "runyard.example,*.lab.example", lambda tmp: "runyard.example,*.lab.example"),
    "RUNYARD_HEARTBEAT_TIMEOUT": ("heartbeat_timeout", "12.5", lambda tmp: 12.5),
    "RUNYARD_MAX_ATTEMPTS": ("max_attempts", "7", lambda tmp: 7),
    "RUNYARD_SSE_POLL_INTERVAL": ("sse_poll_interval", "0.5", lambda tmp: 0.5),
    "RUNYARD_MAX_STREAMS_PER_CLIENT": ("max_streams_per_client", "7", lambda tmp: 7),
    "RUNYARD_MAX_METRIC_POINTS": ("max_metric_points", "500", lambda tmp: 500),
    "RUNYARD_MAX_BODY_BYTES": ("max_body_bytes", "4096", lambda tmp: 4096),
    "RUNYARD_MAX_METRICS_BODY_BYTES": ("max_metrics_body_bytes", "8192", lambda tmp: 8192),
    "RUNYARD_MAX_LOGS_BODY_BYTES": ("max_logs_body_bytes", "16384", lambda tmp: 16384),
    "RUNYARD_MAX_LOG_LINE_BYTES": ("max_log_line_bytes", "1000", lambda tmp: 1000),
    "RUNYARD_MAX_JSON_DEPTH": ("max_json_depth", "10", lambda tmp: 10),
    "RUNYARD_MAX_JSON_ITEMS": ("max_json_items", "5000", lambda tmp: 5000),
    "RUNYARD_MAX_VALUE_BYTES": ("max_value_bytes", "2048", lambda tmp: 2048),
    "RUNYARD_BULK_MAX": ("bulk_max", "250", lambda tmp: 250),
    "RUNYARD_REAPER": ("reaper", "0", lambda tmp: False),
    "RUNYARD_RESEND_AFTER": ("resend_after", "45", lambda tmp: 45.0),
    "RUNYARD_MIGRATE": ("migrate", "0", lambda tmp: False),
    "RUNYARD_URL": ("url", "https://runyard.example:8443/", lambda tmp: "https://runyard.example:8443"),
    "RUNYARD_TOKEN": ("token", "ryw_secret", lambda tmp: "ryw_secret"),
    "RUNYARD_WORKER_NAME": ("worker_name", "gpu-box-1", lambda tmp: "gpu-box-1"),
    "RUNYARD_ARTIFACT_URL": ("artifact_url", "s3://bucket/prefix", lambda tmp: "s3://bucket/prefix"),
    "RUNYARD_S3_ENDPOINT_URL": ("s3_endpoint_url", "http://127.0.0.1:9000", lambda tmp: "http://127.0.0.1:9000"),
    "RUNYARD_UPLOAD_DIR": ("upload_dir", "{tmp}/up", lambda tmp: Path(f"{tmp}/up").resolve()),
    "RUNYARD_MAX_CHECKPOINT_BYTES": ("max_checkpoint_bytes", "1000", lambda tmp: 1000),
    "RUNYARD_SNAPSHOT_MAX_BYTES": ("snapshot_max_bytes", "2000", lambda tmp: 2000),
    "RUNYARD_SNAPSHOT_MAX_UNPACKED_BYTES": ("snapshot_max_unpacked_bytes", "3000", lambda tmp: 3000),
    "RUNYARD_SNAPSHOT_MAX_FILES": ("snapshot_max_files", "40", lambda tmp: 40),
    "RUNYARD_QUOTA_CHECKPOINT_BYTES": ("quota_checkpoint_bytes", "5000", lambda tmp: 5000),
    "RUNYARD_QUOTA_KEEP_BEST": ("quota_keep_best", "2", lambda tmp: 2),
    "RUNYARD_QUOTA_KEEP_LAST": ("quota_keep_last", "3", lambda tmp: 3),
    "RUNYARD_QUOTA_KEEP_EVERY": ("quota_keep_every", "100", lambda tmp: 100),
    "RUNYARD_QUOTA_METRIC_KEYS_PER_RUN": ("quota_metric_keys_per_run", "50", lambda tmp: 50),
    "RUNYARD_QUOTA_POINTS_PER_RUN": ("quota_points_per_run", "6000", lambda tmp: 6000),
    "RUNYARD_QUOTA_MAX_RUN_SECONDS": ("quota_max_run_seconds", "7200", lambda tmp: 7200.0),
    "RUNYARD_QUOTA_RUN_TIME_GRACE": ("quota_run_time_grace", "30", lambda tmp: 30.0),
    "RUNYARD_SWEEP_INTERVAL": ("sweep_interval", "600", lambda tmp: 600.0),
    "RUNYARD_SWEEP_GRACE": ("sweep_grace", "120", lambda tmp: 120.0),
    "RUNYARD_HEALTH_PROBE_INTERVAL": ("health_probe_interval", "0.5", lambda tmp: 0.5),
    "RUNYARD_SECRET_KEY": ("secret_key", "k" * 40, lambda tmp: "k" * 40),
    "RUNYARD_SESSION_MAX_AGE": ("session_max_age", "3600", lambda tmp: 3600.0),
    "RUNYARD_SESSION_IDLE_TIMEOUT": ("session_idle_timeout", "600", lambda tmp: 600.0),
    "RUNYARD_LOGIN_MAX_FAILURES": ("login_max_failures", "3", lambda tmp: 3),
    "RUNYARD_LOGIN_MAX_FAILURES_PER_ADDRESS": ("login_max_failures_per_address", "9", lambda tmp: 9),
    "RUNYARD_LOGIN_WINDOW": ("login_window", "60", lambda tmp: 60.0),
    "RUNYARD_LOGIN_LINK_TTL": ("login_link_ttl", "120", lambda tmp: 120.0),
    "RUNYARD_OIDC_ISSUER": ("oidc_issuer", "http://127.0.0.1:9/", lambda tmp: "http://127.0.0.1:9"),
    "RUNYARD_OIDC_CLIENT_ID": ("oidc_client_id", "runyard", lambda tmp: "runyard"),
    "RUNYARD_OIDC_CLIENT_SECRET": ("oidc_client_secret", "s3cret", lambda tmp: "s3cret"),
    "RUNYARD_OIDC_SCOPES": ("oidc_scopes", "openid groups", lambda tmp: "openid groups"),
    "RUNYARD_OIDC_GROUPS_CLAIM": ("oidc_groups_claim", "roles", lambda tmp: "roles"),
    "RUNYARD_OIDC_GROUP_ROLES": ("oidc_group_roles", "ml=vision:member", lambda tmp: "ml=vision:member"),
    "RUNYARD_OIDC_ADMIN_GROUPS": ("oidc_admin_groups", "ops", lambda tmp: "ops"),
    "RUNYARD_OIDC_NAME": ("oidc_name", "Company SSO", lambda tmp: "Company SSO"),
    "RUNYARD_ADMIN_USER": ("admin_user", "root", lambda tmp: "root"),
    "RUNYARD_ADMIN_PASSWORD": ("admin_password", "first-password", lambda tmp: "first-password"),
}


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_setting_is_read_from_its_environment_variable(clean_env, tmp_path):
    assert {f"RUNYARD_{name.upper()}" for name in Settings.model_fields} == set(ENVIRONMENT)
    for name, (_, raw, _) in ENVIRONMENT.items():
        clean_env.setenv(name, raw.format(tmp=tmp_path))
    settings = Settings()
    for name, (field, _, expected) in ENVIRONMENT.items():
        assert getattr(settings, field) == expected(tmp_path), name


def test_defaults_live_under_runyard_data(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    settings = Settings()
    home = (tmp_path / "runyard-data").resolve()
    assert settings.database_url == f"sqlite:///{home / 'runyard.db'}"
    assert settings.artifact_root == home / "artifacts"
    assert settings.broker_url == f"sqla+sqlite:///{home / 'broker.db'}"
    assert (settings.host, settings.port, settings.public_url) == ("127.0.0.1", 8000, "http://127.0.0.1:8000")
    assert settings.max_metric_points == 10_000
    # RUNYARD_HOME moves every embedded default with it
    clean_env.setenv("RUNYARD_HOME", str(tmp_path / "elsewhere"))
    moved = Settings()
    assert moved.database_url == f"sqlite:///{(tmp_path / 'elsewhere' / 'runyard.db').resolve()}"
    assert moved.artifact_root == (tmp_path / "elsewhere" / "artifacts").resolve()


def test_bad_values_are_refused_with_the_variable_named(clean_env):
    from pydantic import ValidationError

    for name, raw in [("RUNYARD_PORT", "http"), ("RUNYARD_MAX_METRIC_POINTS", "0"), ("RUNYARD_REAPER", "maybe")]:
        clean_env.setenv(name, raw)
        with pytest.raises(ValidationError, match=name.removeprefix("RUNYARD_").lower()):
            Settings()
        clean_env.delenv(name)


@pytest.mark.parametrize("doc", ["README.md", "docs/api.md"])
def test_every_variable_is_documented(doc):
    text = (REPO / doc).read_text()
    missing = [name for name in ENVIRONMENT if name not in text]
    assert missing == [], f"{doc} does not list {missing}"
