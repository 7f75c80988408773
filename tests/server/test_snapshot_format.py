"""The snapshot format (server/snapshots.py): what is packed (.gitignore, .runyardignore, git's
own file list), the git record, determinism, the limits, and safe reading: every kind of
tar-slip is refused by inspect and by extract, naming the member."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
import warnings
from pathlib import Path

import pytest

from server import snapshots
from server.snapshots import SnapshotError, SnapshotTooLarge, UnsafeSnapshot

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_SYSTEM": "/dev/null",
}


def tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


def repo(root: Path, files: dict[str, str | bytes]) -> Path:
    tree(root, files)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first")
    return root


def paths(root: Path, **kwargs) -> list[str]:
    return [rel for rel, _ in snapshots.collect(root, **kwargs)]


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        return tf.getmembers()


# --------------------------------------------------------------------------- what is packed


def test_same_content_gives_the_same_sha256(tmp_path):
    files = {"b.py": "b = 2\n", "a/x.py": "x = 1\n", "run.sh": "#!/bin/sh\necho hi\n", "z/é.txt": "ünïcode"}
    one = tree(tmp_path / "one", files)
    two = tree(tmp_path / "two", dict(reversed(list(files.items()))))  # made in another order
    for root in (one, two):
        os.chmod(root / "run.sh", 0o755)
    os.utime(two / "b.py", (1_000_000, 1_000_000))
    first, second = snapshots.pack(one), snapshots.pack(two)
    assert first.sha256 == second.sha256 and first.data == second.data
    assert [f["path"] for f in first.files] == ["a/x.py", "b.py", "run.sh", "z/é.txt"]
    assert first.data[4:8] == b"\0\0\0\0"  # gzip header mtime
    infos = members(first.data)
    assert [m.name for m in infos] == ["a/x.py", "b.py", "run.sh", "z/é.txt"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in infos)
    assert {m.name: m.mode for m in infos} == {
        "a/x.py": 0o644,
        "b.py": 0o644,
        "run.sh": 0o755,
        "z/é.txt": 0o644,
    }
    (two / "b.py").write_text("b = 3\n")
    assert snapshots.pack(two).sha256 != first.sha256


def test_gitignore_patterns_nested_files_and_negation_outside_git(tmp_path):
    root = tree(
        tmp_path / "p",
        {
            ".gitignore": "*.log\n!keep.log\nbuild/\n/top.txt\n",
            "a.py": "",
            "x.log": "",
            "keep.log": "",
            "top.txt": "",
            "build/out.bin": "",
            "build/keep.txt": "",
            "sub/.gitignore": "*.tmp\n!important.tmp\n!debug.log\n",
            "sub/top.txt": "",
            "sub/a.tmp": "",
            "sub/important.tmp": "",
            "sub/debug.log": "",
            "sub/other.log": "",
            "sub/deeper/.gitignore": "*.csv\n",
            "sub/deeper/t.csv": "",
            "sub/deeper/t.py": "",
        },
    )
    assert paths(root) == [
        ".gitignore",
        "a.py",
        "keep.log",
        "sub/.gitignore",
        "sub/debug.log",
        "sub/deeper/.gitignore",
        "sub/deeper/t.py",
        "sub/important.tmp",
        "sub/top.txt",
    ]


def test_runyardignore_and_the_always_left_out(tmp_path):
    root = tree(
        tmp_path / "p",
        {
            ".runyardignore": "data/\n*.ckpt\n!best.ckpt\n",
            "train.py": "",
            "data/mnist.bin": "",
            "sub/data/x": "",
            "last.ckpt": "",
            "best.ckpt": "",
            ".git/config": "",
            "__pycache__/m.cpython-311.pyc": "",
            "pkg/__pycache__/x.pyc": "",
            "stray.pyc": "",
            ".runyard/git.json": "{}",
            "pkg/.runyard/kept.txt": "",
        },
    )
    assert paths(root) == [".runyardignore", "best.ckpt", "pkg/.runyard/kept.txt", "train.py"]


def test_symlinks_are_left_out_with_a_warning(tmp_path):
    root = tree(tmp_path / "p", {"a.py": "a"})
    (root / "link.py").symlink_to("a.py")
    (root / "outside").symlink_to("/etc")
    with pytest.warns(snapshots.SnapshotWarning, match="symbolic link") as caught:
        assert paths(root) == ["a.py"]
    assert sorted(str(w.message).split()[0] for w in caught) == ["link.py", "outside"]
    packed = snapshots.pack(root)
    assert [f["path"] for f in packed.files] == ["a.py"]
    assert any("link.py" in w for w in packed.warnings) and any("outside" in w for w in packed.warnings)


def test_git_repository_uses_gits_own_file_list(tmp_path):
    root = repo(
        tmp_path / "r",
        {
            ".gitignore": "*.log\nsecret/\n",
            "a.py": "",
            "x.log": "",
            "secret/key": "",
            "sub/.gitignore": "!keep.log\n*.tmp\n",
            "sub/keep.log": "",
            "sub/t.tmp": "",
            "sub/m.py": "",
        },
    )
    tree(root, {"untracked.py": "", "ignored.log": "", "sub/new.tmp": ""})
    (root / "a.py").unlink()  # tracked but deleted in the working tree: not packed
    git(root, "add", "-f", "x.log")  # tracked despite .gitignore: git lists it, so it is packed
    assert paths(root) == [
        ".gitignore",
        "sub/.gitignore",
        "sub/keep.log",
        "sub/m.py",
        "untracked.py",
        "x.log",
    ]
    # a folder inside the repository: only its files, relative to it
    assert paths(root / "sub") == [".gitignore", "keep.log", "m.py"]


def test_git_record_commit_branch_remote_dirty_and_diff(tmp_path):
    root = repo(tmp_path / "r", {"train.py": "lr = 0.1\n", "sub/m.py": "m = 1\n"})
    git(root, "remote", "add", "origin", "https://bob:hunter2@git.example.org/team/repo.git")
    record, diff = snapshots.git_record(root)
    assert record == {
        "commit": git(root, "rev-parse", "HEAD"),
        "branch": "main",
        "remote": "https://git.example.org/team/repo.git",
        "dirty": False,
        "diff_bytes": 0,
        "diff_truncated": False,
        "root": ".",
    }
    assert diff == b""
    (root / "train.py").write_text("lr = 0.01\n")
    tree(root, {"notes.md": "new"})
    record, diff = snapshots.git_record(root)
    assert record["dirty"] is True and record["diff_bytes"] == len(diff)
    assert b"-lr = 0.1" in diff and b"+lr = 0.01" in diff and b"#   notes.md" in diff
    packed = snapshots.pack(root)
    assert packed.git == record
    assert {".runyard/git.json", ".runyard/git.diff"} <= {f["path"] for f in packed.files}
    assert snapshots.inspect(packed.data).git == record
    assert snapshots.read_member(packed.data, ".runyard/git.diff", max_bytes=2**20) == diff
    sub_record, _ = snapshots.git_record(root / "sub")
    assert sub_record["root"] == "sub" and sub_record["dirty"] is False  # the changes are outside it
    git(root, "checkout", "-q", "--detach")
    assert snapshots.git_record(root)[0]["branch"] is None
    assert snapshots.git_record(tmp_path / "r" / "sub") is not None
    plain = tree(tmp_path / "plain", {"a.py": ""})
    assert snapshots.git_record(plain) is None and snapshots.pack(plain).git is None


def test_git_diff_is_cut_at_one_mib(tmp_path):
    root = repo(tmp_path / "r", {"big.txt": "a line of text\n" * 100_000})
    (root / "big.txt").write_text("another line\n" * 100_000)
    record, diff = snapshots.git_record(root)
    assert record["diff_truncated"] is True and len(diff) == snapshots.MAX_DIFF_BYTES == record["diff_bytes"]


def test_git_repository_without_commits(tmp_path):
    root = tree(tmp_path / "r", {"a.py": "a = 1\n"})
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "a.py")
    record, diff = snapshots.git_record(root)
    assert record["commit"] is None and record["dirty"] is True and b"+a = 1" in diff
    assert paths(root) == ["a.py"]


def test_size_limit_names_the_largest_files_and_the_limit(tmp_path):
    root = tree(
        tmp_path / "p", {"model.py": "x" * 100, "data/big.bin": b"\1" * 6000, "data/mid.bin": b"\1" * 3000}
    )
    with pytest.raises(SnapshotTooLarge) as info:
        snapshots.pack(root, max_bytes=5000)
    message = str(info.value)
    assert "data/big.bin (5.9 KiB)" in message and "data/mid.bin (2.9 KiB)" in message
    assert "4.9 KiB" in message and ".runyardignore" in message
    assert message.index("data/big.bin") < message.index("data/mid.bin") < message.index("model.py")
    (root / ".runyardignore").write_text("data/\n")
    assert [f["path"] for f in snapshots.pack(root, max_bytes=5000).files] == [".runyardignore", "model.py"]


def test_file_count_limit_names_the_fullest_folders(tmp_path):
    root = tree(tmp_path / "p", {**{f"node_modules/m{i}.js": "" for i in range(30)}, "a.py": ""})
    with pytest.raises(SnapshotTooLarge, match=r"more than 10 files.*node_modules/ \(\d+ files\)"):
        snapshots.collect(root, max_files=10)


def test_inspect_read_member_and_extract_round_trip(tmp_path):
    root = tree(
        tmp_path / "p", {"pkg/m.py": "m = 1\n", "run.sh": "#!/bin/sh\n", "bin.dat": bytes(range(256))}
    )
    os.chmod(root / "run.sh", 0o755)
    packed = snapshots.pack(root)
    inspected = snapshots.inspect(packed.data)
    assert (
        inspected.files == packed.files and inspected.unpacked_bytes == 256 + 6 + 10 and inspected.git is None
    )
    assert snapshots.inspect(io.BytesIO(packed.data)).files == packed.files
    archive = tmp_path / "s.tar.gz"
    archive.write_bytes(packed.data)
    assert snapshots.inspect(archive).files == packed.files
    assert snapshots.read_member(packed.data, "pkg/m.py", max_bytes=100) == b"m = 1\n"
    assert snapshots.read_member(packed.data, "bin.dat", max_bytes=10) == bytes(range(10))
    assert snapshots.read_member(packed.data, "nope.py", max_bytes=10) is None
    dest = tmp_path / "out"
    assert snapshots.extract(packed.data, dest) == ["bin.dat", "pkg/m.py", "run.sh"]
    assert (dest / "pkg/m.py").read_text() == "m = 1\n" and (dest / "bin.dat").read_bytes() == bytes(
        range(256)
    )
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o755
    with pytest.raises(SnapshotTooLarge):
        snapshots.inspect(packed.data, max_bytes=100)
    with pytest.raises(SnapshotTooLarge):
        snapshots.extract(packed.data, tmp_path / "small", max_files=2)


# --------------------------------------------------------------------------- refusing unsafe archives


def tar_of(*entries: tuple[str, dict], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tf:
        for name, attrs in entries:
            info = tarfile.TarInfo(name)
            data = attrs.pop("data", b"data")
            for key, value in attrs.items():
                setattr(info, key, value)
            if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


UNSAFE = {
    "dotdot": (tar_of(("ok.py", {}), ("../evil.py", {})), "../evil.py", "'..'"),
    "dotdot inside": (tar_of(("pkg/../../evil.py", {})), "pkg/../../evil.py", "'..'"),
    "absolute": (tar_of(("/etc/cron.d/evil", {})), "/etc/cron.d/evil", "absolute"),
    "backslash": (tar_of(("..\\evil.py", {})), "..\\\\evil.py", "backslash"),
    "control character": (tar_of(("evil\n.py", {})), "evil\\n.py", "control character"),
    "symlink": (
        tar_of(("link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})),
        "link",
        "symbolic link",
    ),
    "hardlink": (
        tar_of(("a.py", {}), ("hard", {"type": tarfile.LNKTYPE, "linkname": "a.py"})),
        "hard",
        "hard link",
    ),
    "char device": (
        tar_of(("dev", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})),
        "dev",
        "device",
    ),
    "block device": (tar_of(("blk", {"type": tarfile.BLKTYPE})), "blk", "device"),
    "fifo": (tar_of(("fifo", {"type": tarfile.FIFOTYPE})), "fifo", "FIFO"),
    "duplicate": (
        tar_of(("twice.py", {"data": b"one"}), ("twice.py", {"data": b"two"})),
        "twice.py",
        "more than once",
    ),
    "file then folder": (tar_of(("pkg", {}), ("pkg/x.py", {})), "pkg/x.py", "is a file"),
    "dot part": (tar_of(("./a.py", {})), "./a.py", "'.' part"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_inspect_refuses_unsafe_members_naming_them(case):
    data, name, why = UNSAFE[case]
    with pytest.raises(UnsafeSnapshot) as info:
        snapshots.inspect(data)
    assert f"'{name}'" in str(info.value) and why in str(info.value)


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_extract_refuses_unsafe_members_and_writes_nothing_outside(case, tmp_path):
    data, name, why = UNSAFE[case]
    dest = tmp_path / "run" / "code"
    with pytest.raises(UnsafeSnapshot) as info:
        snapshots.extract(data, dest)
    assert f"'{name}'" in str(info.value) and why in str(info.value)
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "run" / "evil.py").exists()
    assert list(dest.iterdir()) == []  # what it wrote before the refusal is removed


def test_extract_refuses_a_member_through_a_symlink_planted_in_dest(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "code"
    dest.mkdir()
    (dest / "pkg").symlink_to(outside)
    (dest / "train.py").symlink_to(outside / "train.py")
    data = tar_of(("pkg/evil.py", {"data": b"pwned"}))
    with pytest.raises(UnsafeSnapshot, match="'pkg/evil.py'.*already exists"):
        snapshots.extract(data, dest)
    with pytest.raises(UnsafeSnapshot, match="'train.py'.*already exists"):
        snapshots.extract(tar_of(("train.py", {"data": b"pwned"})), dest)
    assert list(outside.iterdir()) == []
    assert (dest / "pkg").is_symlink() and (dest / "train.py").is_symlink()  # not removed: not extract's own


def test_not_a_tar_gz_and_truncated_archives_are_refused(tmp_path):
    good = snapshots.pack(tree(tmp_path / "p", {"a.py": "a" * 5000})).data
    for data in (b"", b"not gzip at all", gzip.compress(b"gzip but not a tar" * 40), good[: len(good) // 2]):
        with pytest.raises(UnsafeSnapshot, match="tar.gz"):
            snapshots.inspect(data)
        with pytest.raises(UnsafeSnapshot):
            snapshots.extract(data, tmp_path / "out")


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path):
    # a gzip bomb: a pax header declaring 512 MiB of zeros, a few hundred KiB compressed
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 512 * 2**20
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(header.tobuf(tarfile.USTAR_FORMAT))
        zeros = b"\0" * 2**20
        for _ in range(8):  # enough to be read past, far less than declared
            gz.write(zeros)
    with pytest.raises(UnsafeSnapshot, match="tar header"):
        snapshots.inspect(raw.getvalue())


def test_a_member_over_the_limit_is_refused_by_its_declared_size(tmp_path):
    big = tar_of(("a.bin", {"data": b"\0" * (3 * 2**20)}))
    with pytest.raises(SnapshotTooLarge, match="a.bin"):
        snapshots.inspect(big, max_bytes=2**20)


def test_decompression_stops_at_the_budget(tmp_path):
    # tiny files, each behind a 200 KiB pax header (allowed one by one): 8 MiB of tar in all
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        for i in range(40):
            info = tarfile.TarInfo(f"f{i}.py")
            info.pax_headers = {"comment": "x" * 200_000}
            tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(UnsafeSnapshot, match="unpacks to more than"):
        snapshots.inspect(buf.getvalue(), max_bytes=1000, max_files=40)


def test_git_json_must_be_json(tmp_path):
    data = tar_of((".runyard/git.json", {"data": b"{not json"}))
    with pytest.raises(SnapshotError, match="git.json"):
        snapshots.inspect(data)


def test_collect_refuses_what_is_not_a_folder(tmp_path):
    (tmp_path / "f.py").write_text("")
    with pytest.raises(SnapshotError, match="not a folder"):
        snapshots.collect(tmp_path / "f.py")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert paths(tree(tmp_path / "quiet", {"a.py": ""})) == ["a.py"]


# --------------------------------------------------------------------------- entry points


def test_entry_validation_and_key():
    files = {"pkg/models.py", "pkg/data.py", "train.py"}
    module = snapshots.validate_entry({"kind": "module", "model": "pkg/models.py:LitClassifier"}, files)
    assert module == {"kind": "module", "model": "pkg/models.py:LitClassifier", "data": None}
    assert snapshots.validate_entry({"kind": "cli", "script": "train.py"}, files)["subcommand"] == "fit"
    assert snapshots.validate_entry({"kind": "command", "command": ["python", "train.py"]}, files)[
        "command"
    ] == ["python", "train.py"]
    for entry, field in [
        ({"kind": "module", "model": "pkg/nope.py:X"}, "model"),
        ({"kind": "module", "model": "pkg/models.py:1bad"}, "model"),
        ({"kind": "module", "model": "../x.py:X"}, "model"),
        ({"kind": "module", "model": "pkg/models.py:X", "data": "pkg/data.py"}, "data"),
        ({"kind": "cli", "script": "README.md"}, "script"),
        ({"kind": "cli", "script": "train.py", "subcommand": "--evil"}, "subcommand"),
        ({"kind": "command", "command": "python train.py"}, "command"),
        ({"kind": "command", "command": ["python", 3]}, "command"),
        ({"kind": "shell"}, "kind"),
        ("module", "kind"),
        ({"kind": "cli", "script": "train.py", "model": "x"}, "model"),
    ]:
        with pytest.raises(snapshots.EntryError) as info:
            snapshots.validate_entry(entry, files)
        assert info.value.field == field, (entry, str(info.value))
    assert snapshots.entry_key({"kind": "cli", "script": "t.py", "subcommand": "fit"}) == snapshots.entry_key(
        {"subcommand": "fit", "script": "t.py", "kind": "cli"}
    )
    assert len(snapshots.entry_key(module)) == 64


def test_command_argv():
    assert snapshots.command_argv(
        ["python", "train.py"], {"--lr": "0.01", "--fast": True, "--slow": False, "--epochs": 3}
    ) == ["python", "train.py", "--lr", "0.01", "--fast", "--epochs", "3"]
