"""A code run in its run's own process: the user's project folder (a snapshot) as a run.

The run (``recipe == "code"``) carries ``code: {snapshot_id, sha256, entry, git}``. Its process
downloads the snapshot with its run token (sha256 verified), unpacks it with
:func:`server.snapshots.extract` (every path checked) into ``RUN_DIR/code``, builds or reuses the
env of its ``requirements.txt`` (:mod:`worker.codeenv`), records the entry point's parameter schema
on the server (``PUT /runs/{id}/code-schema``, *before* validating the parameters, so a refused
submission still teaches the server the form), then runs the entry point:

- ``module``: ``pkg/models.py:LitClassifier`` (and an optional data class) imported from the
  folder, made a :class:`~worker.recipes.Recipe` (schema, validation and building exactly as the
  built-in recipes', except that ``data_dir``/``download`` are the code's own arguments), and
  trained here as a recipe run is (resume checkpoint, cancel, warm shutdown, test).
- ``cli``: a ``trainer_core.cli.LightningCLI`` script. Its schema comes from
  ``python SCRIPT SUBCOMMAND --print_config``; the params (the config) are written to
  ``RUN_DIR/runyard_config.yaml`` and ``python SCRIPT SUBCOMMAND --config that`` runs as a child.
- ``command``: ``entry.command`` + the params as options (``{"--lr": "0.01", "--fast": true}`` ->
  ``--lr 0.01 --fast``), a child.

A child runs in ``RUN_DIR/code`` in a process group of its own, with the run's token and
``RUNYARD_AUTO_LOGGER=1`` (its ``trainer_core.Trainer`` attaches a RunyardLogger to the run by
itself) and nothing else of the worker's. This process forwards its stdout/stderr to the run's
log lines, heartbeats, stops the group on cancel or warm shutdown (SIGTERM, SIGKILL after a grace)
and finishes the run: exit 0 succeeded, else failed with the exit code and stderr's last lines.
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import inspect
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.child import Pipe, kill_group, signal_name, spawn, supervise_child
from worker.control import WORKER_SHUTDOWN

CONFIG_NAME = "runyard_config.yaml"
PRINT_CONFIG_TIMEOUT_S = 300.0
STDERR_TAIL = 20
PYTHON_NAMES = ("python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}")
MODULE_NAME = "code"  # the recipe name of a module entry point


class CodeRunError(RuntimeError):
    """A code run that cannot go on; the message (said to the user as is) is the run's error."""


def stop_grace() -> float:
    """Seconds between SIGTERM and SIGKILL of a child's group (``RUNYARD_STOP_GRACE``, default 10)."""
    try:
        return max(0.0, float(os.environ.get("RUNYARD_STOP_GRACE") or 10.0))
    except ValueError:
        return 10.0


def _should_stop(logger: Any) -> bool:
    return logger.stop_requested.is_set() or WORKER_SHUTDOWN.is_set()


# --------------------------------------------------------------------------- the entry point


def train(payload: dict[str, Any], logger: Any, run_dir: Path) -> str:
    """Run a code run; the status as ``run_process._train`` returns it (``succeeded``,
    ``cancelled``, ``requeued``, ``lost``); a failure raises :class:`CodeRunError`."""
    from worker import codeenv
    from worker.run_process import _stopped

    spec = payload["run"]
    code = spec.get("code") or {}
    entry = code.get("entry") or spec.get("entry") or {}
    if not isinstance(entry, dict) or entry.get("kind") not in ("module", "cli", "command"):
        raise CodeRunError(
            f"The run's entry point {entry!r} is not one Runyard knows (kind module, cli or command)."
        )
    code_dir = fetch_snapshot(logger, code, run_dir)
    os.environ["RUNYARD_CODE_DIR"] = str(code_dir)
    send = getattr(logger, "send_environment", None)
    if send is not None:
        send()  # the record now carries the snapshot's git state (.runyard/git.json)
    if _should_stop(logger):
        return _stopped(logger)
    try:
        env = codeenv.ensure_env(
            code_dir,
            payload.get("home") or _home(run_dir),
            out=print,
            should_stop=lambda: _should_stop(logger),
        )
    except codeenv.Stopped:
        return _stopped(logger)
    except codeenv.EnvBuildFailed as exc:
        raise CodeRunError(str(exc)) from None
    if _should_stop(logger):
        return _stopped(logger)
    kind = entry["kind"]
    if kind == "module":
        return run_module(payload, logger, run_dir, code_dir, entry, env)
    if kind == "cli":
        argv = cli_argv(payload, logger, run_dir, code_dir, entry, env)
    else:
        argv = prepare_command(payload, logger, entry, env)
    if _should_stop(logger):
        return _stopped(logger)
    shown = shlex.join(["python", *argv[1:]] if argv[0] == python_for(env) else argv)
    return supervise(argv, code_dir, child_env(payload, run_dir, code_dir, env), logger, shown)


def _home(run_dir: Path) -> Path:
    from server.settings import get_settings

    home = Path(get_settings().home)
    return home if home.is_absolute() else run_dir.parent.parent  # RUNYARD_HOME/work/run-N-attempt-A


def fetch_snapshot(logger: Any, code: dict[str, Any], run_dir: Path) -> Path:
    """Download the run's snapshot (sha256 checked) and unpack it into ``RUN_DIR/code``."""
    from server import snapshots
    from trainer_core.client import ChecksumMismatch, ClientError

    snapshot_id = code.get("snapshot_id")
    if snapshot_id is None:
        raise CodeRunError(
            "The run names no code snapshot (code.snapshot_id); submit it again with runyard submit."
        )
    sha = code.get("sha256") or None
    archive = run_dir / "snapshot.tar.gz"
    try:
        logger.client.download(f"/snapshots/{int(snapshot_id)}/download", archive, sha256=sha)
    except ChecksumMismatch as exc:
        raise CodeRunError(f"The code snapshot {snapshot_id} did not arrive intact: {exc}") from None
    except ClientError as exc:
        raise CodeRunError(f"The code snapshot {snapshot_id} could not be downloaded: {exc}") from None
    code_dir = run_dir / "code"
    if code_dir.exists():
        shutil.rmtree(code_dir)
    limits = _limits(snapshots)
    try:
        with open(archive, "rb") as f:
            files = snapshots.extract(f, code_dir, **limits)
    except snapshots.SnapshotError as exc:
        shutil.rmtree(code_dir, ignore_errors=True)
        raise CodeRunError(f"The code snapshot {snapshot_id} was refused: {exc}") from None
    finally:
        archive.unlink(missing_ok=True)
    print(
        f"[runyard] code: snapshot {snapshot_id} ({(sha or '')[:12]}, {len(files)} files) unpacked into {code_dir}"
    )
    return code_dir


def _limits(snapshots: Any) -> dict[str, int]:
    """The unpack limits: the worker's RUNYARD_SNAPSHOT_MAX_UNPACKED_BYTES / _MAX_FILES (as the server's)."""
    from server.settings import get_settings

    settings = get_settings()
    return {
        "max_bytes": int(getattr(settings, "snapshot_max_unpacked_bytes", snapshots.DEFAULT_MAX_BYTES)),
        "max_files": int(getattr(settings, "snapshot_max_files", snapshots.DEFAULT_MAX_FILES)),
    }


def record_schema(
    logger: Any, run_id: int, params_schema: dict[str, Any], trainer_schema: dict[str, Any] | None
) -> None:
    """``PUT /runs/{id}/code-schema`` (a failure to record is said in the log, not fatal)."""
    from trainer_core.client import ClientError

    try:
        logger.client.request(
            "PUT",
            f"/runs/{run_id}/code-schema",
            json={"params_schema": params_schema, "trainer_schema": trainer_schema},
            retry_for=30,
        )
    except ClientError as exc:
        print(
            f"[runyard] warning: the entry point's parameter schema was not recorded: {exc}", file=sys.stderr
        )


# --------------------------------------------------------------------------- module


def _within(code_dir: Path, rel: str, what: str) -> Path:
    if not rel or rel.startswith(("/", "\\")) or "\\" in rel or any(part == ".." for part in rel.split("/")):
        raise CodeRunError(f"The entry point's {what} {rel!r} must be a relative path inside the snapshot.")
    path = (code_dir / rel).resolve()
    if not path.is_relative_to(code_dir.resolve()):
        raise CodeRunError(f"The entry point's {what} {rel!r} points outside the snapshot.")
    if not path.is_file():
        raise CodeRunError(f"The entry point's {what} {rel!r} is not a file in the snapshot.")
    return path


def load_object(code_dir: Path, spec: str, what: str) -> Any:
    """``pkg/models.py:LitClassifier`` from ``code_dir`` (on ``sys.path``), imported as
    ``pkg.models`` so the file's relative imports work."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise CodeRunError(f"The entry point's {what} {spec!r} must look like path/to/file.py:ClassName.")
    rel, name = spec.split(":")
    path = _within(code_dir, rel, what)
    if path.suffix != ".py" or not name.isidentifier():
        raise CodeRunError(f"The entry point's {what} {spec!r} must look like path/to/file.py:ClassName.")
    parts = list(Path(rel).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    root = str(code_dir.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        if parts and all(part.isidentifier() for part in parts):
            _check_name_free(parts[0], code_dir)
            module = importlib.import_module(".".join(parts))
        else:  # not importable by name (a dash in a folder...): load the file by location
            mod_name = "runyard_code_" + "_".join(
                "".join(c if c.isalnum() else "_" for c in p) for p in parts
            )
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            module_spec.loader.exec_module(module)
    except CodeRunError:
        raise
    except BaseException as exc:  # user code: any error (SystemExit too) fails the run with it
        raise CodeRunError(
            f"Importing {rel} failed: {type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        ) from None
    if not hasattr(module, name):
        defined = sorted(
            k for k, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__
        )
        raise CodeRunError(
            f"{rel} has no {name}" + (f" (it defines {', '.join(defined)})." if defined else ".")
        )
    return getattr(module, name)


def _check_name_free(top: str, code_dir: Path) -> None:
    """The snapshot's top-level package must not be one the run's process has imported already."""
    module = sys.modules.get(top)
    if module is None:
        return
    where = [getattr(module, "__file__", None) or "", *list(getattr(module, "__path__", []) or [])]
    root = code_dir.resolve()
    if any(w and Path(w).resolve().is_relative_to(root) for w in where):
        return
    raise CodeRunError(
        f"The snapshot's top-level module {top!r} has the name of a module the worker uses itself "
        f"({where[0] or 'built in'}); rename the folder or file in your project."
    )


def module_recipe(code_dir: Path, entry: dict[str, Any]) -> Any:
    """The entry point as a :class:`~worker.recipes.Recipe` named ``code``."""
    import trainer_core as L
    from worker.recipes import Recipe

    model = load_object(code_dir, entry.get("model") or "", "model")
    if not (inspect.isclass(model) and issubclass(model, L.LightningModule)):
        raise CodeRunError(
            f"{entry.get('model')} is not a LightningModule class (subclass trainer_core.LightningModule "
            "or lightning.LightningModule)."
        )
    data = None
    if entry.get("data"):
        data = load_object(code_dir, entry["data"], "data")
        if not callable(data):
            raise CodeRunError(
                f"{entry['data']} is not a LightningDataModule class or a function returning dataloaders."
            )
    recipe = Recipe(name=MODULE_NAME, model=model, data=data)
    # In the user's code data_dir and download are its own arguments (its default, or the form's
    # value), not the worker's RUNYARD_DATA_DIR.
    recipe.hidden = frozenset()
    return recipe


def run_module(
    payload: dict[str, Any], logger: Any, run_dir: Path, code_dir: Path, entry: dict[str, Any], env: Any
) -> str:
    from pydantic import ValidationError

    from worker import codeenv, run_process
    from worker.recipes import trainer_schema

    started = time.perf_counter()
    if env is not None:
        codeenv.activate_in_process(env)
    os.chdir(code_dir)  # the code's relative paths are the project folder's, as on the user's machine
    recipe = module_recipe(code_dir, entry)
    try:
        schema = recipe.params_schema()
    except Exception as exc:  # a type pydantic cannot express: say which class
        raise CodeRunError(
            f"Runyard cannot make a form from the __init__ arguments of {entry.get('model')}"
            + (f" and {entry['data']}" if entry.get("data") else "")
            + f": {exc}\nGive every argument a default or a JSON type (int, float, str, bool, list, dict, Literal)."
        ) from None
    record_schema(logger, payload["run"]["id"], schema, trainer_schema())
    params = payload["run"].get("params") or {}
    try:
        values = recipe.validate_params(params)
    except ValidationError as exc:
        raise CodeRunError(f"The parameters do not fit {entry.get('model')}: {exc}") from None
    label = f"code {entry.get('model')}" + (f" + {entry['data']}" if entry.get("data") else "")
    return run_process.train_recipe(
        payload,
        logger,
        run_dir,
        recipe,
        values,
        label=label,
        started=started,
        data_dir=values.get("data_dir"),
        download=values.get("download"),
    )


# --------------------------------------------------------------------------- cli and command


def python_for(env: Any) -> str:
    return str(env.python) if env is not None else sys.executable


def child_env(payload: dict[str, Any], run_dir: Path, code_dir: Path, env: Any) -> dict[str, str]:
    """The child's environment: this process's (the worker's secrets are gone already) plus the
    run's own variables; nothing else."""
    from worker.run_process import SECRET_ENV

    out = {k: v for k, v in os.environ.items() if k not in SECRET_ENV and not k.startswith(("AWS_", "PG"))}
    pythonpath = os.pathsep.join(p for p in (str(code_dir), os.environ.get("PYTHONPATH", "")) if p)
    out.update(
        RUNYARD_URL=str(payload["url"]),
        RUNYARD_TOKEN=str(payload["token"]),
        RUNYARD_RUN_ID=str(payload["run"]["id"]),
        RUNYARD_RUN_DIR=str(run_dir),
        RUNYARD_AUTO_LOGGER="1",
        RUNYARD_CAPTURE="0",
        RUNYARD_SYSTEM_METRICS="0",  # this process samples itself and its children
        RUNYARD_HEARTBEAT_INTERVAL="0",  # and heartbeats the run
        RUNYARD_CODE_DIR=str(code_dir),
        PYTHONPATH=pythonpath,
        PYTHONUNBUFFERED="1",
    )
    if env is not None:
        out["PATH"] = os.pathsep.join(p for p in (str(env.bin), os.environ.get("PATH", "")) if p)
        out["VIRTUAL_ENV"] = str(env.path)
    return out


def config_schema(config: Any, title: str | None = None) -> dict[str, Any]:
    """A JSON Schema for a printed config: nested objects; a leaf's type from its value's type
    (``null``: any type), its default the value."""
    schema = _value_schema(config)
    if title:
        schema["title"] = title
    return schema


def _value_schema(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"type": "object", "properties": {str(k): _value_schema(v) for k, v in value.items()}}
    if value is None:
        return {"default": None}
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, int):
        kind = "integer"
    elif isinstance(value, float):
        kind = "number"
    elif isinstance(value, str):
        kind = "string"
    elif isinstance(value, (list, tuple)):
        return {"type": "array", "default": list(value)}
    else:
        return {"default": str(value)}
    return {"type": kind, "default": value}


def _spawn(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A child of the run's process: its own process group (so a stop reaches everything it
    started), killed with this process, stdout and stderr piped."""
    return spawn(argv, cwd, env, die_with_parent=True)


def _capture(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = _spawn(argv, cwd, env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise CodeRunError(f"`{shlex.join(argv[1:])}` did not finish within {timeout:.0f} s.") from None
    finally:
        kill_group(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(
        argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


def cli_argv(
    payload: dict[str, Any], logger: Any, run_dir: Path, code_dir: Path, entry: dict[str, Any], env: Any
) -> list[str]:
    """Record the LightningCLI script's schema (``--print_config``), write the config; the argv."""
    import yaml

    script = entry.get("script") or ""
    _within(code_dir, script, "script")
    subcommand = entry.get("subcommand") or "fit"
    python = python_for(env)
    shown = f"python {script} {subcommand} --print_config"
    printed = _capture(
        [python, script, subcommand, "--print_config"],
        code_dir,
        child_env(payload, run_dir, code_dir, env),
        PRINT_CONFIG_TIMEOUT_S,
    )
    if printed.returncode != 0:
        tail = "\n".join(printed.stderr.strip().splitlines()[-STDERR_TAIL:])
        raise CodeRunError(
            f"`{shown}` exited with {describe_code(printed.returncode)}; its last lines:\n{tail}"
        )
    try:
        config = yaml.safe_load(printed.stdout)
    except yaml.YAMLError as exc:
        raise CodeRunError(
            f"`{shown}` did not print a YAML config ({exc}); is {script} a LightningCLI script?"
        ) from None
    if not isinstance(config, dict):
        raise CodeRunError(f"`{shown}` printed no config mapping; is {script} a LightningCLI script?")
    record_schema(logger, payload["run"]["id"], config_schema(config, f"{script} {subcommand}"), None)
    params = payload["run"].get("params") or config
    if not isinstance(params, dict):
        raise CodeRunError("The parameters of a LightningCLI run must be its config (a mapping).")
    path = run_dir / CONFIG_NAME
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    print(f"[runyard] code: {script} {subcommand} with its config in {path}")
    return [python, script, subcommand, "--config", str(path)]


def options_argv(params: dict[str, Any]) -> list[str]:
    """``{"--lr": "0.01", "--fast": true, "--quiet": false}`` -> ``["--lr", "0.01", "--fast"]``."""
    argv: list[str] = []
    for key, value in params.items():
        if value is False or value is None:
            continue
        if value is True:
            argv.append(str(key))
        elif isinstance(value, (list, tuple)):
            argv.extend([str(key), *(str(v) for v in value)])
        else:
            argv.extend([str(key), str(value)])
    return argv


def command_schema(params: dict[str, Any]) -> dict[str, Any]:
    """Each option a string (a flag: a boolean), its default the value given."""
    properties: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, bool):
            properties[str(key)] = {"type": "boolean", "default": value}
        elif isinstance(value, (list, tuple)):
            properties[str(key)] = {
                "type": "array",
                "items": {"type": "string"},
                "default": [str(v) for v in value],
            }
        elif value is None:
            properties[str(key)] = {"default": None}
        else:
            properties[str(key)] = {"type": "string", "default": str(value)}
    return {"type": "object", "title": "command options", "properties": properties}


def command_argv(command: list[str], params: dict[str, Any], env: Any = None) -> list[str]:
    """The child's argv: ``command`` (``python``/``python3`` -> the env's or the worker's
    interpreter; a console script the requirements installed -> its path in the env) + the
    options ``params`` name, in order."""
    argv = list(command)
    if argv[0] in PYTHON_NAMES:
        argv[0] = python_for(env)
    elif env is not None and "/" not in argv[0] and (env.bin / argv[0]).is_file():
        argv[0] = str(env.bin / argv[0])
    return argv + options_argv(params)


def prepare_command(payload: dict[str, Any], logger: Any, entry: dict[str, Any], env: Any) -> list[str]:
    """Record the command's schema (its options); the argv."""
    command = entry.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) and c for c in command):
        raise CodeRunError(f"The entry point's command {command!r} must be a non-empty list of strings.")
    params = payload["run"].get("params") or {}
    if not isinstance(params, dict):
        raise CodeRunError('The parameters of a command run must map options to values ({"--lr": "0.01"}).')
    record_schema(logger, payload["run"]["id"], command_schema(params), None)
    return command_argv(command, params, env)


# --------------------------------------------------------------------------- the child


def describe_code(code: int) -> str:
    if code < 0:
        return f"signal {signal_name(-code) or -code}"
    return f"code {code}"


def _print_to(target: str) -> Callable[[str], None]:
    """A child's line, printed here (this process's RunyardLogger makes it the run's log line)."""

    def sink(line: str) -> None:
        print(line, file=getattr(sys, target), flush=True)

    return sink


def supervise(argv: list[str], cwd: Path, env: dict[str, str], logger: Any, shown: str | None = None) -> str:
    """Run the child to its end; its status (a failure raises :class:`CodeRunError`, which names
    the command as ``shown``, e.g. with ``python`` rather than the interpreter's path)."""
    shown = shown or shlex.join(argv)
    from worker.run_process import _stopped

    started = time.monotonic()
    try:
        proc = _spawn(argv, cwd, env)
    except OSError as exc:
        raise CodeRunError(f"Could not start {shlex.join(argv)}: {exc}") from None
    print(f"[runyard] code: running {shlex.join(argv)} in {cwd} (pid {proc.pid}, its own process group)")
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    grace = stop_grace()

    def on_stop() -> None:
        why = (
            "cancelled"
            if logger.cancel_requested.is_set()
            else "the worker shuts down"
            if WORKER_SHUTDOWN.is_set()
            else "the run is no longer this worker's"
        )
        print(f"[runyard] code: stopping the command ({why}): SIGTERM to its process group")

    def on_kill() -> None:
        print(f"[runyard] code: the command did not stop within {grace:.0f} s: SIGKILL")

    assert proc.stdout is not None and proc.stderr is not None
    ended = supervise_child(
        proc,
        [
            Pipe(proc.stdout, _print_to("stdout"), None, "runyard-child-out"),
            Pipe(proc.stderr, _print_to("stderr"), tail, "runyard-child-err"),
        ],
        lambda: _should_stop(logger),
        grace=grace,
        on_stop=on_stop,
        on_kill=on_kill,
    )
    code = ended.code
    elapsed = time.monotonic() - started
    if ended.stopped or logger.lost.is_set():
        print(f"[runyard] code: the command ended ({describe_code(code)}) after {elapsed:.1f} s")
        return _stopped(logger)
    if code == 0:
        print(f"[runyard] code: the command finished in {elapsed:.1f} s")
        return "succeeded"
    last = "\n".join(tail)
    raise CodeRunError(
        f"The command `{shown}` exited with {describe_code(code)} after {elapsed:.1f} s."
        + (f" The last lines of its stderr:\n{last}" if last else " It wrote nothing to stderr.")
    )
