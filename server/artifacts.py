"""Where checkpoint files live: a local folder (default) or an S3 bucket.

``artifact_store(settings)`` builds the configured store (the app keeps one on
``app.state.artifacts``): ``RUNYARD_ARTIFACT_URL`` empty -> :class:`LocalArtifactStore` on
``RUNYARD_ARTIFACT_ROOT``; ``s3://bucket/prefix`` -> :class:`S3ArtifactStore` (boto3; endpoint from
``RUNYARD_S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL``, credentials and region the usual ``AWS_*`` way).

Keys are relative, ``/``-separated names such as ``"<run_id>/checkpoints/<file>"``. Every key is
checked (:func:`check_key`): no absolute keys, no ``.``/``..``/empty parts, no NUL or backslash; the
local store also resolves symlinks and refuses a key whose file would land outside its root.

Operations (both stores): ``put_file(key, src, move=False)`` (a finished local file; S3 streams it
with a multipart upload, memory flat in the file's size), ``open_range(key, start, length)`` -> an
iterator of byte chunks (the object is opened before it returns, so a missing key raises there),
``size(key)``, ``exists(key)``, ``sha256(key)``, ``delete(key)``, ``delete_prefix("<run_id>/")``,
``validate(key)``, ``local_path(key)`` (the file's path for the local store, else None) and
``probe()`` (write and remove a small file or object: raises when the store cannot be written,
e.g. ``OSError`` ``ENOSPC`` / ``EROFS``; ``/healthz`` calls it, see ``server/health.py``). ``iter_files()``
lists every key with its modification time (the orphan sweep of ``server/quotas.py``). A full
or read-only disk during ``put_file`` raises that ``OSError`` and leaves no partial file behind.
Errors: :class:`UnsafeKey` (the key would leave the root) and :class:`ArtifactNotFound`.
"""

from __future__ import annotations

import abc
import errno
import hashlib
import logging
import math
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from server.settings import Settings

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # read size for downloads and hashing
MAX_KEY_LENGTH = 1024


class ArtifactError(Exception):
    """A problem with an artifact key or object; ``str(exc)`` is a sentence."""


class UnsafeKey(ArtifactError, ValueError):
    """The key is not a plain relative name, or it would resolve outside the store's root."""


class ArtifactNotFound(ArtifactError, FileNotFoundError):
    """No file (object) under that key."""


def check_key(key: str) -> str:
    """``key`` if it is a plain relative key (``a/b/c``), else :class:`UnsafeKey`."""
    if not isinstance(key, str) or not key:
        raise UnsafeKey("An artifact key must be a non-empty relative name.")
    if len(key) > MAX_KEY_LENGTH:
        raise UnsafeKey(f"The artifact key is longer than {MAX_KEY_LENGTH} characters.")
    if "\x00" in key or "\\" in key:
        raise UnsafeKey(f"The artifact key {key!r} contains a NUL character or a backslash.")
    if key.startswith("/"):
        raise UnsafeKey(f"The artifact key {key!r} is absolute; keys are relative to the artifact root.")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise UnsafeKey(f"The artifact key {key!r} has an empty, '.' or '..' part; give a plain relative path.")
    return key


def check_prefix(prefix: str) -> str:
    """A folder prefix such as ``"12/"`` or ``"12/checkpoints/"`` (never empty: that is everything)."""
    if not isinstance(prefix, str) or not prefix.endswith("/"):
        raise UnsafeKey(f"The artifact prefix {prefix!r} must name a folder and end with '/'.")
    check_key(prefix[:-1])
    return prefix


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # the portable way sets it for a moment (process-wide), hence the lock
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new regular file gets from ``open()``: ``0o666`` minus the umask."""
    return 0o666 & ~current_umask()


def _iter_file(f: BinaryIO, length: int | None, chunk_size: int) -> Iterator[bytes]:
    try:
        while length is None or length > 0:
            chunk = f.read(chunk_size if length is None else min(chunk_size, length))
            if not chunk:
                break
            if length is not None:
                length -= len(chunk)
            yield chunk
    finally:
        f.close()


PROBE_BYTES = 4096  # one page: enough that a full file system refuses it


def walk_files(root: Path) -> Iterator[tuple[str, float]]:
    """``(relative posix path, mtime)`` of every regular file below ``root`` (symlinks neither
    followed nor listed; a file deleted meanwhile is skipped)."""
    for folder, _dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        for name in files:
            path = here / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if path.is_symlink() or not path.is_file():
                continue
            yield path.relative_to(root).as_posix(), st.st_mtime


def write_probe(folder: Path) -> None:
    """Write a small file in ``folder`` (made if needed) and remove it; raises ``OSError`` (e.g.
    ``ENOSPC``, ``EDQUOT``, ``EROFS``) when the folder cannot be written."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".runyard-probe-{uuid.uuid4().hex}.tmp"
    try:
        with open(probe, "xb", buffering=0) as f:
            f.write(b"\0" * PROBE_BYTES)
    finally:
        try:
            probe.unlink()
        except FileNotFoundError:
            pass


class ArtifactStore(abc.ABC):
    """The interface both stores implement (see the module docstring)."""

    #: a short description for logs and errors (``/srv/artifacts``, ``s3://bucket/prefix``)
    url: str

    @abc.abstractmethod
    def validate(self, key: str) -> str:
        """``key`` if files may be read and written under it here, else :class:`UnsafeKey`."""

    @abc.abstractmethod
    def put_file(self, key: str, src: str | os.PathLike[str], *, move: bool = False) -> None:
        """Store the finished local file ``src`` under ``key`` (replacing what is there).

        ``move=True`` lets the store take the file (``src`` is gone afterwards)."""

    @abc.abstractmethod
    def open_range(self, key: str, start: int = 0, length: int | None = None,
                   chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The bytes ``start .. start+length-1`` (to the end when ``length`` is None) as chunks.

        The object is opened before this returns (:class:`ArtifactNotFound` is raised here, not
        while iterating); close the iterator (or run it to the end) to release it."""

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """The size in bytes, or :class:`ArtifactNotFound`."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens when it is not there)."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove everything under the folder ``prefix`` (``"<run_id>/"``)."""

    def local_path(self, key: str) -> Path | None:
        """The file's path on this machine (local store only), else None."""
        return None

    def iter_files(self) -> Iterator[tuple[str, float]]:
        """Every stored file as ``(key, last modified as a Unix time)`` (for the orphan sweep of
        ``server/quotas.py``); symlinks are not followed."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its files")

    def probe(self) -> None:
        """Write and remove a small file (object); raise when the store cannot be written."""
        import tempfile

        key = f".runyard-probe/{uuid.uuid4().hex}"
        with tempfile.NamedTemporaryFile() as f:
            f.write(b"\0" * 16)
            f.flush()
            self.put_file(key, f.name)
        self.delete(key)

    def sha256(self, key: str) -> str:
        """The hex sha256 of the object, streamed."""
        digest = hashlib.sha256()
        for chunk in self.open_range(key):
            digest.update(chunk)
        return digest.hexdigest()


class LocalArtifactStore(ArtifactStore):
    """Files under ``root``; a key never resolves outside it (symlinks are followed)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        check_key(key)
        try:  # symlinks are followed: one pointing outside the root resolves outside it
            target = (self.root / key).resolve()
        except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
            raise UnsafeKey(f"The artifact key {key!r} cannot be resolved under the artifact root ({exc}).") from exc
        if target == self.root or not target.is_relative_to(self.root):
            raise UnsafeKey(f"The artifact key {key!r} points outside the artifact root.")
        return target

    def validate(self, key: str) -> str:
        self._path(key)
        return key

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def probe(self) -> None:
        write_probe(self.root)

    def _file(self, key: str) -> Path:
        path = self._path(key)
        try:
            is_file = path.is_file()
        except OSError:
            is_file = False
        if not is_file:
            raise ArtifactNotFound(f"There is no file {key!r} in the artifact root.")
        return path

    def put_file(self, key: str, src: str | os.PathLike[str], *, move: bool = False) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target = self._path(key)  # again: the folders now exist, so a symlink among them is resolved
        if move:
            try:
                os.replace(src, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            else:
                os.chmod(target, file_mode())  # whoever made ``src`` may have used 0600
                return
        temp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(src, "rb") as source, open(temp, "xb") as out:  # "x": the umask's mode, never a reused file
                shutil.copyfileobj(source, out, CHUNK)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        if move:
            Path(src).unlink(missing_ok=True)

    def open_range(self, key: str, start: int = 0, length: int | None = None,
                   chunk_size: int = CHUNK) -> Iterator[bytes]:
        path = self._file(key)
        f = path.open("rb")
        try:
            f.seek(start)
        except BaseException:
            f.close()
            raise
        return _iter_file(f, length, chunk_size)

    def size(self, key: str) -> int:
        return self._file(key).stat().st_size

    def exists(self, key: str) -> bool:
        try:
            self._file(key)
        except (ArtifactNotFound, UnsafeKey):
            return False
        return True

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            if path.is_file():
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not delete %s: %s", path, exc)

    def iter_files(self) -> Iterator[tuple[str, float]]:
        return walk_files(self.root)

    def delete_prefix(self, prefix: str) -> None:
        check_prefix(prefix)
        lexical = self.root / prefix.rstrip("/")
        if lexical.is_symlink():
            # the folder itself is a link (maybe out of the root): drop the link, never what it points to
            lexical.unlink(missing_ok=True)
            return
        folder = self._path(prefix.rstrip("/"))
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)  # rmtree does not follow symlinks inside
        elif folder.is_file():
            folder.unlink(missing_ok=True)


class S3ArtifactStore(ArtifactStore):
    """Objects in ``bucket`` under ``prefix`` (``s3://bucket/prefix``), through boto3."""

    #: parts of a multipart upload: S3 allows 10,000 parts of 5 MiB .. 5 GiB
    PART_SIZE = 16 * 1024 * 1024
    MAX_PARTS = 9_000
    CONCURRENCY = 4  # parts in memory at once: CONCURRENCY x part size, whatever the file's size

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 client: Any = None) -> None:
        if not bucket:
            raise ValueError("An S3 artifact store needs a bucket: RUNYARD_ARTIFACT_URL=s3://bucket/prefix.")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.endpoint_url = endpoint_url or None
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"max_attempts": 5, "mode": "standard"},
                            # S3-compatible servers (MinIO, Ceph, moto) are reached path-style
                            s3={"addressing_style": "path"} if self.endpoint_url else None)
            client = boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, config=config)
        self.client = client

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.url!r}, endpoint_url={self.endpoint_url!r})"

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, client: Any = None) -> S3ArtifactStore:
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        return cls(bucket, prefix, endpoint_url=endpoint_url, client=client)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def validate(self, key: str) -> str:
        self._key(key)
        return key

    def probe(self) -> None:
        key = self._key(f".runyard-probe/{uuid.uuid4().hex}")
        self.client.put_object(Bucket=self.bucket, Key=key, Body=b"\0" * 16)
        self.client.delete_object(Bucket=self.bucket, Key=key)

    @staticmethod
    def _missing(exc: Exception) -> bool:
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("404", "NoSuchKey", "NotFound") or status == 404

    def put_file(self, key: str, src: str | os.PathLike[str], *, move: bool = False) -> None:
        from boto3.s3.transfer import TransferConfig

        full = self._key(key)
        size = os.path.getsize(src)
        part = max(self.PART_SIZE, math.ceil(size / self.MAX_PARTS))
        config = TransferConfig(multipart_threshold=self.PART_SIZE, multipart_chunksize=part,
                                max_concurrency=self.CONCURRENCY, use_threads=True)
        self.client.upload_file(os.fspath(src), self.bucket, full, Config=config)
        if move:
            Path(src).unlink(missing_ok=True)

    def open_range(self, key: str, start: int = 0, length: int | None = None,
                   chunk_size: int = CHUNK) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        full = self._key(key)
        if length == 0:
            self.size(key)  # still 404 for a missing key
            return iter(())
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if start or length is not None:
            args["Range"] = f"bytes={start}-{'' if length is None else start + length - 1}"
        try:
            body = self.client.get_object(**args)["Body"]
        except ClientError as exc:
            if self._missing(exc):
                raise ArtifactNotFound(f"There is no object {key!r} in {self.url}.") from exc
            raise

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

        return chunks()

    def size(self, key: str) -> int:
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except ClientError as exc:
            if self._missing(exc):
                raise ArtifactNotFound(f"There is no object {key!r} in {self.url}.") from exc
            raise

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except (ArtifactNotFound, UnsafeKey):
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def iter_files(self) -> Iterator[tuple[str, float]]:
        start = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                key = item["Key"][len(start):]
                if key:
                    yield key, item["LastModified"].timestamp()

    def delete_prefix(self, prefix: str) -> None:
        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:  # a page holds at most 1,000 keys: what one DeleteObjects takes
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                for error in answer.get("Errors", []):
                    log.warning("could not delete s3://%s/%s: %s", self.bucket, error.get("Key"),
                                error.get("Message"))


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store ``settings`` configure (``RUNYARD_ARTIFACT_URL``, see the module docstring)."""
    url = (settings.artifact_url or "").strip()
    if not url:
        return LocalArtifactStore(settings.artifact_root)
    if url.startswith("file://"):
        return LocalArtifactStore(url.removeprefix("file://"))
    if url.startswith("s3://"):
        endpoint = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        return S3ArtifactStore.from_url(url, endpoint_url=endpoint)
    raise ValueError(f"RUNYARD_ARTIFACT_URL={url!r} is not supported; leave it empty for the local "
                     "RUNYARD_ARTIFACT_ROOT, or give s3://bucket/prefix.")
