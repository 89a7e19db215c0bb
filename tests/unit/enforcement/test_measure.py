"""measure() and prepare(): what runs is what was measured."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from proctor.enforcement._staging import Snapshots, staging_for
from proctor.enforcement.measure import MeasuredFile, Measurement, measure, prepare
from proctor.errors import EnforcementError, IntegrityError

SH = os.path.realpath(shutil.which("sh") or "/bin/sh")
PY = os.path.realpath(sys.executable)


def sha(path: str | Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write(path: Path, text: str, mode: int = 0o755) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    """A PATH directory with stand-ins named like interpreters (copies of ``true``)."""
    d = tmp_path / "bin"
    d.mkdir()
    true = os.path.realpath(shutil.which("true") or "/bin/true")
    for name in ("python3", "python3.11", "python", "bash", "perl", "ruby", "node", "tool"):
        shutil.copy(true, d / name)
    return d


# -- measure ---------------------------------------------------------------------------


def test_plain_executable_is_resolved_on_the_path_and_hashed(bindir: Path) -> None:
    m = measure(["tool", "--flag"], path=str(bindir))
    assert m.executable == str(bindir / "tool")
    assert m.executable_digest == sha(bindir / "tool")
    assert m.files == (MeasuredFile(str(bindir / "tool"), sha(bindir / "tool"), "executable"),)
    assert m.script_index is None
    assert m.argv == ("tool", "--flag")
    assert m.to_json() == {
        "executable": m.executable,
        "executable_digest": m.executable_digest,
        "files": [{"path": m.executable, "digest": m.executable_digest, "role": "executable"}],
        "script_index": None,
    }


def test_path_lookup_skips_what_execvp_skips(tmp_path: Path, bindir: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    write(first / "tool", "not executable\n", mode=0o644)  # skipped: not executable
    (first / "tool2").mkdir()  # skipped: a directory
    m = measure(["tool"], path=f"{first}:{bindir}")
    assert m.executable == str(bindir / "tool")


def test_relative_and_symlinked_paths_resolve_to_the_real_file(tmp_path: Path, bindir: Path) -> None:
    (tmp_path / "link").symlink_to(bindir / "tool")
    m = measure(["./link"], cwd=str(tmp_path))
    assert m.executable == str(bindir / "tool")
    assert m.argv == ("./link",)


def test_shebang_measures_the_interpreter_and_the_script(tmp_path: Path) -> None:
    script = write(tmp_path / "run.sh", f"#!{SH} -e\necho hi\n")
    m = measure([str(script), "a"])
    assert m.executable == SH
    assert [f.role for f in m.files] == ["interpreter", "script"]
    assert m.files[1] == MeasuredFile(str(script), sha(script), "script")
    assert m.executable_digest == sha(SH)
    assert m.script_index == 0


def test_env_shebang_resolves_the_named_interpreter(tmp_path: Path, bindir: Path) -> None:
    script = write(tmp_path / "run.py", "#!/usr/bin/env python3\nprint(1)\n")
    m = measure([str(script)], path=str(bindir))
    assert m.executable == str(bindir / "python3")
    assert [f.role for f in m.files] == ["interpreter", "script"]
    split = write(tmp_path / "split.py", "#!/usr/bin/env -S python3 -u\nprint(1)\n")
    assert measure([str(split)], path=str(bindir)).executable == str(bindir / "python3")


@pytest.mark.parametrize(
    ("argv", "index"),
    [
        (["python3", "x.py", "arg"], 1),
        (["python3", "-u", "x.py"], 2),
        (["python3", "-W", "ignore", "-X", "dev", "x.py"], 5),
        (["python3", "-Wignore", "x.py"], 2),
        (["python3.11", "-I", "--", "x.py"], 3),
        (["python", "-uB", "x.py"], 2),
        (["bash", "-e", "x.py"], 2),
        (["bash", "-o", "errexit", "x.py"], 3),
        (["bash", "+x", "x.py"], 2),
        (["bash", "--rcfile", "other", "x.py"], 3),
        (["perl", "-w", "x.py"], 2),
        (["ruby", "-I", "lib", "x.py"], 3),
        (["node", "--require", "m", "x.py"], 3),
        (["node", "--inspect=9229", "x.py"], 2),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_interpreter_with_a_script_argument_measures_the_script(
    tmp_path: Path, bindir: Path, argv: list[str], index: int
) -> None:
    script = write(tmp_path / "x.py", "print(1)\n", mode=0o644)
    m = measure(argv, cwd=str(tmp_path), path=str(bindir))
    assert m.script_index == index
    assert m.files[0].role == "executable"
    assert m.files[1] == MeasuredFile(str(script), sha(script), "script")


@pytest.mark.parametrize(
    "argv",
    [
        ["python3", "-c", "x.py"],
        ["python3", "-uc", "x.py"],
        ["python3", "-m", "x.py"],
        ["python3", "-"],
        ["python3"],
        ["bash", "-c", "x.py"],
        ["bash", "-ec", "x.py"],
        ["bash", "-s", "x.py"],
        ["perl", "-e", "x.py"],
        ["perl", "-le", "x.py"],
        ["ruby", "-e", "x.py"],
        ["node", "-e", "x.py"],
        ["node", "--eval", "x.py"],
        ["tool", "x.py"],  # not an interpreter: its arguments are data
    ],
    ids=" ".join,
)
def test_code_on_the_command_line_is_not_a_script(tmp_path: Path, bindir: Path, argv: list[str]) -> None:
    write(tmp_path / "x.py", "print(1)\n", mode=0o644)
    m = measure(argv, cwd=str(tmp_path), path=str(bindir))
    assert m.script_index is None
    assert len(m.files) == 1


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        (None, ["no-such-tool"], "not found on the PATH"),
        (None, ["./missing"], "does not exist"),
        ("noexec", ["./f"], "not executable"),
        ("dir", ["./d"], "not a regular file"),
        (None, ["python3", "missing.py"], "not an existing regular file"),
        ("dir", ["python3", "d"], "not an existing regular file"),
        ("relative", ["./rel"], "not an absolute path"),
        ("nested", ["./outer"], "itself a #! script"),
        ("envspace", ["./envspace"], "env -S"),
        ("envopt", ["./envopt"], "unsupported env options"),
        (None, [], "empty"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_what_cannot_be_measured_is_an_error(
    tmp_path: Path, bindir: Path, setup: str | None, argv: list[str], message: str
) -> None:
    if setup == "noexec":
        write(tmp_path / "f", "data\n", mode=0o644)
    elif setup == "dir":
        (tmp_path / "d").mkdir()
    elif setup == "relative":
        write(tmp_path / "rel", "#!bin/sh\n")
    elif setup == "nested":
        inner = write(tmp_path / "inner", f"#!{SH}\n")
        write(tmp_path / "outer", f"#!{inner}\n")
    elif setup == "envspace":
        write(tmp_path / "envspace", "#!/usr/bin/env python3 -u\n")
    elif setup == "envopt":
        write(tmp_path / "envopt", "#!/usr/bin/env -i python3\n")
    with pytest.raises(EnforcementError, match=message):
        measure(argv, cwd=str(tmp_path), path=str(bindir))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_executable_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "f", "data\n", mode=0o111)
    with pytest.raises(EnforcementError, match="cannot be opened"):
        measure(["./f"], cwd=str(tmp_path))


def test_measurement_validates_itself() -> None:
    exe = MeasuredFile("/bin/x", "sha256:" + "0" * 64, "executable")
    with pytest.raises(EnforcementError, match="first measured file"):
        Measurement(("x",), "/bin/y", exe.digest, (exe,), None)
    with pytest.raises(EnforcementError, match="script index"):
        Measurement(("x",), "/bin/x", exe.digest, (exe,), 0)
    with pytest.raises(EnforcementError, match="digest"):
        MeasuredFile("/bin/x", "sha256:XYZ", "executable")
    with pytest.raises(EnforcementError, match="role"):
        MeasuredFile("/bin/x", exe.digest, "library")
    with pytest.raises(EnforcementError, match="absolute"):
        MeasuredFile("x", exe.digest, "executable")


# -- prepare -----------------------------------------------------------------------------


SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def test_prepare_executes_a_sealed_copy_of_the_executable(bindir: Path) -> None:
    m = measure(["tool", "a"], path=str(bindir))
    with prepare(m) as p:
        (fd,) = p.pass_fds
        assert p.exec_path == f"/proc/self/fd/{fd}"
        assert os.readlink(p.exec_path).startswith("/memfd:proctor-executable:tool")
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & SEALS == SEALS
        assert os.pread(fd, 1 << 20, 0) == (bindir / "tool").read_bytes()
        assert p.argv == ("tool", "a")
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # never leaks into other children
        assert staging_for(p.exec_path, p.argv, p.pass_fds) is not None
    assert p.pass_fds == ()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_executable_overwritten_in_place_after_prepare_runs_the_measured_bytes(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    shutil.copy(os.path.realpath(shutil.which("echo") or "/bin/echo"), tool)
    inode = tool.stat().st_ino
    m = measure([str(tool), "measured"])
    with prepare(m) as p:
        with tool.open("r+b") as f:  # the same inode, rewritten: now it prints nothing, fails
            f.write(Path(os.path.realpath(shutil.which("false") or "/bin/false")).read_bytes())
            f.truncate()
        assert tool.stat().st_ino == inode
        run = subprocess.run(
            p.argv, executable=p.exec_path, pass_fds=p.pass_fds, capture_output=True, check=False
        )
    assert (run.returncode, run.stdout) == (0, b"measured\n")


def test_staging_is_found_only_for_exactly_the_prepared_command(tmp_path: Path) -> None:
    script = write(tmp_path / "x.sh", "echo hi\n", mode=0o644)
    m = measure([SH, str(script)])
    with prepare(m) as p:
        staging = staging_for(p.exec_path, p.argv, p.pass_fds)
        assert staging is not None
        assert staging.argv == (SH, str(script))  # the script by its own path
        assert [c.target for c in staging.copies] == [SH, str(script)]
        assert staging_for(p.exec_path, (*p.argv, "more"), p.pass_fds) is None
        assert staging_for(p.exec_path, p.argv, p.pass_fds[:1]) is None
        assert staging_for("/bin/sh", p.argv, p.pass_fds) is None
    assert staging_for(p.exec_path, m.argv, ()) is None  # closed: forgotten


@pytest.mark.parametrize("role", ["executable", "script"])
def test_prepare_stages_the_very_copy_measure_hashed(tmp_path: Path, bindir: Path, role: str) -> None:
    if role == "executable":
        target, argv = bindir / "tool", ["tool"]
    else:
        target = write(tmp_path / "x.sh", "echo one\n", mode=0o644)
        argv = [SH, str(target)]
    original = target.read_bytes()
    m = measure(argv, path=str(bindir))
    with target.open("ab") as f:  # changed after measuring, in place
        f.write(b"\necho two\n")
    with prepare(m) as p:
        copy = p.pass_fds[-1]
        assert os.pread(copy, 1 << 20, 0) == original  # what was measured (and authorized) runs


@pytest.mark.parametrize("role", ["executable", "script"])
def test_prepare_without_the_measured_copy_detects_a_modification(
    tmp_path: Path, bindir: Path, role: str
) -> None:
    if role == "executable":
        target, argv = bindir / "tool", ["tool"]
    else:
        target = write(tmp_path / "x.sh", "echo one\n", mode=0o644)
        argv = [SH, str(target)]
    m = measure(argv, path=str(bindir))
    prepare(m).close()  # the copy measure() made is used up
    with target.open("ab") as f:
        f.write(b"\necho two\n")
    with pytest.raises(IntegrityError, match=f"{role} .* changed since it was measured"):
        prepare(m)


def test_script_is_staged_in_a_sealed_memfd(tmp_path: Path) -> None:
    script = write(tmp_path / "x.sh", 'echo staged "$@"\n', mode=0o644)
    m = measure([SH, str(script), "arg"])
    with prepare(m) as p:
        _, memfd = p.pass_fds
        assert p.argv == (SH, f"/proc/self/fd/{memfd}", "arg")
        assert fcntl.fcntl(memfd, fcntl.F_GET_SEALS) & SEALS == SEALS
        assert os.pread(memfd, 100, 0) == script.read_bytes()
        with pytest.raises(PermissionError):
            os.pwrite(memfd, b"rm -rf /\n", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(memfd, 0)
        reopened = os.open(f"/proc/self/fd/{memfd}", os.O_RDWR)
        try:
            with pytest.raises(PermissionError):
                os.write(reopened, b"x")
        finally:
            os.close(reopened)
        script.write_text("echo replaced\n")  # the original may change now: the copy runs
        out = subprocess.run(
            p.argv, executable=p.exec_path, pass_fds=p.pass_fds, capture_output=True, check=True
        ).stdout
    assert out == b"staged arg\n"


def test_shebang_script_runs_its_interpreter_with_the_memfd(tmp_path: Path) -> None:
    script = write(tmp_path / "x.py", f"#!{PY} -S\nimport sys\nprint(sys.argv[1:], sys.flags.no_site)\n")
    m = measure([str(script), "one", "two"])
    with prepare(m) as p:
        _, memfd = p.pass_fds
        assert p.argv == (PY, "-S", f"/proc/self/fd/{memfd}", "one", "two")
        out = subprocess.run(
            p.argv, executable=p.exec_path, pass_fds=p.pass_fds, capture_output=True, check=True
        ).stdout
    assert out == b"['one', 'two'] 1\n"


def test_env_shebang_runs_the_resolved_interpreter_directly(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(PY)
    script = write(tmp_path / "x.py", "#!/usr/bin/env -S python3 -S\nprint('env ok')\n")
    m = measure([str(script)], path=str(bindir))
    assert m.executable == PY
    with prepare(m) as p:
        _, memfd = p.pass_fds
        assert p.argv == ("python3", "-S", f"/proc/self/fd/{memfd}")
        out = subprocess.run(
            p.argv, executable=p.exec_path, pass_fds=p.pass_fds, capture_output=True, check=True
        ).stdout
    assert out == b"env ok\n"


def test_prepare_refuses_a_file_that_stopped_being_executable(bindir: Path) -> None:
    m = measure(["tool"], path=str(bindir))
    (bindir / "tool").chmod(stat.S_IRUSR)
    with pytest.raises(EnforcementError, match="no longer executable"):
        prepare(m)


def test_kept_copies_are_bounded_and_handed_over_once() -> None:
    store = Snapshots(size=2)
    fds = [os.memfd_create(f"t{i}") for i in range(3)]
    for i, fd in enumerate(fds):
        store.put(f"/f{i}", "sha256:x", fd)
    with pytest.raises(OSError):
        os.fstat(fds[0])  # the oldest was closed
    assert store.take("/f0", "sha256:x") is None
    assert store.take("/f2", "sha256:y") is None  # another digest: not this copy
    assert store.take("/f2", "sha256:x") == fds[2]
    assert store.take("/f2", "sha256:x") is None  # handed over once
    for fd in fds[1:]:
        os.close(fd)
