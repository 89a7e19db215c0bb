"""The data directory: configuration, keys and the embedded database.

Layout (created by ``proctor init``)::

    <data>/                directory, mode 0700
    <data>/config.json     {"format": 1, "origin": "...", "created": "..."}
    <data>/keys/           directory, mode 0700
    <data>/keys/log.key    the log's note signer key (Go PRIVATE+KEY+… form), mode 0600
    <data>/keys/log.pub    the log's verifier key, name+keyid+base64
    <data>/proctor.db      SQLite database (WAL), the embedded store
    <data>/log.lock        held by the one process appending to the log

Invariants:

1. A data directory is built whole or not at all (:meth:`DataDir.build`): everything
   is written into a fresh ``0700`` sibling directory, fsynced, and renamed onto the
   target in one ``rename(2)``. A failure removes the sibling; the target is never
   half-initialised. The target must not exist or be an empty directory, so nothing
   planted there beforehand (a symlink at ``keys/log.key``) is ever written through.
2. Secrets are created with ``O_EXCL | O_NOFOLLOW`` and mode ``0600``, and fsynced.
3. Opening (:meth:`DataDir.open`) refuses, before reading any key, a data or keys
   directory that group or others may write or that another user owns, a keys
   directory that is a symlink, and a ``*.key`` file that is a symlink, not a regular
   file, readable or writable by group or others, or not owned by the current user —
   as OpenSSH refuses unprotected private keys. There is no override: fix the modes.
4. Anything unknown or malformed is refused: an unknown ``format`` is an error, not a guess.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from proctor.errors import ConfigError, KeyFormatError
from proctor.note import NoteSigner, NoteVerifier, generate_signer, valid_key_name

__all__ = [
    "DATA_FORMAT",
    "DEFAULT_DATA_DIR",
    "DataDir",
    "check_unshared",
    "default_origin",
]

DATA_FORMAT = 1
DEFAULT_DATA_DIR = Path(".proctor")

_MAX_KEY_BYTES = 4096  # a key file is ~100-200 bytes
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted as a key must not hang the open
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC


def default_origin() -> str:
    """A log origin unique to this host and this init: ``proctor/<host>/<random>``."""
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-.") or "host"
    return f"proctor/{host}/{secrets.token_hex(4)}"


@dataclass(frozen=True)
class DataDir:
    """An initialised data directory (or one being built, inside :meth:`build`)."""

    path: Path
    origin: str

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.path / "proctor.db"

    @property
    def lock_path(self) -> Path:
        """The append lock file."""
        return self.path / "log.lock"

    @property
    def keys_path(self) -> Path:
        """The directory of key files."""
        return self.path / "keys"

    def log_signer(self) -> NoteSigner:
        """The log's checkpoint signing key.

        The file is opened without following a symlink and checked on the opened
        descriptor (regular, owned by the current user, mode ``0600`` or narrower).

        Raises:
            ConfigError: the key file is missing, unsafe, malformed, or not the origin's key.
        """
        path = self.keys_path / "log.key"
        raw = _read_secret(path)
        try:
            signer = NoteSigner.from_string(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"key file {path}: expected UTF-8 text: {e}") from e
        except KeyFormatError as e:
            raise ConfigError(f"key file {path}: {e}") from e
        if signer.name != self.origin:
            raise ConfigError(
                f"{path}: expected a key named after the log origin {self.origin!r}, found {signer.name!r}"
            )
        return signer

    def log_verifier(self) -> NoteVerifier:
        """The log's verifier key (public)."""
        return self.log_signer().verifier

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> DataDir:
        """Open a data directory made by :meth:`build` (``proctor init``).

        Steps:
          1. The directory exists; it and its ``keys`` directory (not a symlink) are
             owned by the current user or root and not writable by group or others.
          2. Every ``keys/*.key`` is a regular file (not a symlink) owned by the
             current user with no access for group or others; ``keys/log.key`` exists.
          3. ``config.json`` is a JSON object of a known format with a valid origin.

        Raises:
            ConfigError: not initialised, unsafe (step 1 or 2), malformed, or of an
                unknown format.
        """
        root = Path(path)
        # Step 1 (the data directory itself may be reached through a symlink the
        # operator made; what it points to is checked).
        try:
            st = os.stat(root)
        except FileNotFoundError as e:
            raise ConfigError(
                f"{root} is not an initialised proctor data directory "
                f"(it does not exist); run 'proctor init --data {root}'"
            ) from e
        except OSError as e:
            raise ConfigError(f"cannot open the data directory {root}: {e.strerror}") from e
        _check_directory(root, st, "data directory")
        config = root / "config.json"
        if not os.path.lexists(config):
            raise ConfigError(
                f"{root} is not an initialised proctor data directory "
                f"(no config.json); run 'proctor init --data {root}'"
            )
        keys = root / "keys"
        try:
            kst = os.lstat(keys)
        except FileNotFoundError as e:
            raise ConfigError(f"keys directory {keys} not found: the data directory is incomplete") from e
        except OSError as e:
            raise ConfigError(f"cannot open the keys directory {keys}: {e.strerror}") from e
        if stat.S_ISLNK(kst.st_mode):
            raise ConfigError(f"keys directory {keys} is a symbolic link: expected a directory")
        _check_directory(keys, kst, "keys directory")
        # Step 2
        try:
            names = sorted(os.listdir(keys))
        except OSError as e:
            raise ConfigError(f"cannot list the keys directory {keys}: {e.strerror}") from e
        if "log.key" not in names:
            raise ConfigError(f"key file {keys / 'log.key'} not found")
        for name in names:
            if name.endswith(".key"):
                kp = keys / name
                try:
                    _check_secret(kp, os.lstat(kp))
                except FileNotFoundError as e:  # removed while we looked
                    raise ConfigError(f"key file {kp} not found") from e
        # Step 3
        try:
            raw = config.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read {config}: {e.strerror}") from e
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise ConfigError(f"{config}: expected JSON, found invalid text: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{config}: expected a JSON object")
        if data.get("format") != DATA_FORMAT:
            raise ConfigError(f"{config}: expected data format {DATA_FORMAT}, found {data.get('format')!r}")
        origin = data.get("origin")
        if not isinstance(origin, str) or not valid_key_name(origin):
            raise ConfigError(f"{config}: expected an origin without spaces or '+', found {origin!r}")
        return cls(root, origin)

    @classmethod
    @contextmanager
    def build(cls, path: str | os.PathLike[str], *, origin: str | None = None) -> Iterator[DataDir]:
        """Build a new data directory atomically; the ``with`` body adds to it.

        Yields a :class:`DataDir` at a fresh ``0700`` sibling of ``path`` that already
        holds ``config.json``, ``keys/log.key`` and ``keys/log.pub``. When the body
        returns, every file and directory in it is fsynced and it is renamed onto
        ``path`` (then the parent is fsynced). If anything fails — in here, in the
        body, or the rename — the sibling is removed and ``path`` is left as it was.

        Steps:
          1. The origin is valid, and ``path`` is not a symlink and either does not
             exist or is an empty directory.
          2. Build in the sibling: ``keys/`` (0700), the log key (0600, ``O_EXCL |
             O_NOFOLLOW``), its public key, ``config.json``; then the body.
          3. fsync the tree, ``rename(2)`` it onto ``path`` (which fails, rather than
             replaces, if ``path`` has meanwhile become non-empty), fsync the parent.

        Args:
            path: where the data directory goes.
            origin: the log's origin; default :func:`default_origin`.

        Yields:
            The data directory being built (its ``path`` is the temporary sibling).

        Raises:
            ConfigError: the origin is invalid, ``path`` is a symlink, not a
                directory, not empty or already initialised, or an I/O step failed.
        """
        # Step 1
        given = Path(path)
        origin = origin or default_origin()
        if not valid_key_name(origin):
            raise ConfigError(f"expected an origin without spaces or '+', found {origin!r}")
        root = Path(os.path.abspath(given))
        if not root.name:
            raise ConfigError(f"expected a new directory for the data, found {given}")
        _check_target(given, root)
        try:
            root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.init-", dir=root.parent))
        except OSError as e:
            raise ConfigError(f"cannot initialise {given}: {e}") from e
        try:
            # Step 2
            os.chmod(staging, 0o700)
            keys = staging / "keys"
            keys.mkdir(mode=0o700)
            os.chmod(keys, 0o700)
            signer = generate_signer(origin)
            _create_file(keys / "log.key", (signer.to_string() + "\n").encode(), 0o600)
            _create_file(keys / "log.pub", (signer.verifier.to_string() + "\n").encode(), 0o644)
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            config = {"format": DATA_FORMAT, "origin": origin, "created": created}
            _create_file(staging / "config.json", (json.dumps(config, indent=2) + "\n").encode(), 0o644)
            yield cls(staging, origin)
            # Step 3
            _fsync_tree(staging)
            try:
                os.rename(staging, root)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise ConfigError(
                        f"{given} appeared while it was being initialised; nothing was written to it"
                    ) from e
                raise
            _fsync_dir(root.parent)
        except BaseException as e:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(e, OSError):
                raise ConfigError(f"cannot initialise {given}: {e}; nothing was written to it") from e
            raise


def _check_target(given: Path, root: Path) -> None:
    """Refuse a target that is a symlink, not a directory, or not empty."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"cannot initialise {given}: {e.strerror}") from e
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(
            f"{given} is a symbolic link: expected a new or empty directory (give the real path)"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{given} exists and is not a directory: expected a new or empty directory")
    if os.path.lexists(root / "config.json"):
        raise ConfigError(f"{given} is already initialised; refusing to overwrite its keys")
    try:
        entries = sorted(os.listdir(root))
    except OSError as e:
        raise ConfigError(f"cannot initialise {given}: {e.strerror}") from e
    if entries:
        shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
        raise ConfigError(
            f"{given} exists and is not empty (found {shown}): expected a new or empty "
            "directory; nothing was written to it"
        )


def _check_directory(path: Path, st: os.stat_result, what: str) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {path} is not a directory")
    check_unshared(path, st, what)


def check_unshared(path: str | os.PathLike[str], st: os.stat_result, what: str) -> None:
    """Refuse a file or directory that another user owns or that group or others may write.

    Args:
        path: its path (for the message).
        st: its ``stat`` (``fstat`` of the opened file where there is one).
        what: what it is, for the message.

    Raises:
        ConfigError: owned by neither the current user nor root, or writable by group or others.
    """
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        raise ConfigError(
            f"{what} {path} is owned by uid {st.st_uid}: expected the current user (uid {euid}) or root"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"{what} {path} has mode {mode:04o}: expected no write access for group and "
            f"others (chmod go-w {path})"
        )


def _check_secret(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(_symlink_key(path))
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"key file {path} is not a regular file")
    euid = os.geteuid()
    if st.st_uid != euid:
        raise ConfigError(
            f"key file {path} is owned by uid {st.st_uid}: expected the current user (uid {euid})"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"key file {path} has mode {mode:04o}: expected no access for group and others (chmod 600 {path})"
        )


def _symlink_key(path: Path) -> str:
    return f"key file {path} is a symbolic link: refusing to follow it (expected a regular file)"


def _read_secret(path: Path) -> bytes:
    """Read a key file without following a symlink, checking what was opened."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK)
    except FileNotFoundError as e:
        raise ConfigError(f"key file {path} not found") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(_symlink_key(path)) from e
        raise ConfigError(f"cannot read key file {path}: {e.strerror}") from e
    try:
        _check_secret(path, os.fstat(fd))
        chunks: list[bytes] = []
        remaining = _MAX_KEY_BYTES + 1
        while remaining > 0 and (chunk := os.read(fd, remaining)):
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as e:
        raise ConfigError(f"cannot read key file {path}: {e.strerror}") from e
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > _MAX_KEY_BYTES:
        raise ConfigError(f"key file {path}: expected at most {_MAX_KEY_BYTES} bytes")
    return raw


def _create_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively (never through a symlink) with exactly ``mode``; fsync it."""
    fd = os.open(path, _CREATE_FLAGS, mode)
    try:
        os.fchmod(fd, mode)  # exact, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every regular file and directory under ``root`` (deepest first)."""
    for top, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(top, name), os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK)
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(top))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
