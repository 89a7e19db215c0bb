"""A witness's data directory: its name, its cosigner key and its state.

Layout (created by ``proctor witness init``)::

    <dir>/               directory, mode 0700
    <dir>/witness.json   {"format": 1, "kind": "witness", "name": "...", "created": "..."}
    <dir>/witness.key    the cosigner key, PRIVATE+KEY+<name>+<id>+base64(0x04||seed), 0600
    <dir>/witness.pub    its vkey, <name>+<id>+base64(0x04||pub)
    <dir>/witness.db     the state (:mod:`proctor.orchestration.witness_state`)

As for the governor's data directory (:mod:`proctor.datadir`): it is built whole or not
at all (a fresh 0700 sibling, fsynced, renamed into place; the target must not exist or
be empty), the key is created ``O_EXCL | O_NOFOLLOW`` with mode 0600, and opening
refuses a directory that others may write or another user owns and a key file that is
a symlink, not a regular file, not owned by the current user, or readable by others.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from proctor.datadir import check_unshared
from proctor.errors import ConfigError, KeyFormatError
from proctor.lineage.cosignature import Cosigner, CosignerKey, generate_cosigner
from proctor.note import valid_key_name
from proctor.orchestration.witness_state import WitnessState

__all__ = ["WITNESS_FORMAT", "DEFAULT_WITNESS_DIR", "WitnessDir"]

WITNESS_FORMAT = 1
DEFAULT_WITNESS_DIR = Path(".proctor-witness")
_MAX_KEY_BYTES = 4096
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class WitnessDir:
    """An initialised witness directory."""

    path: Path
    name: str

    @property
    def key_path(self) -> Path:
        """The cosigner key file."""
        return self.path / "witness.key"

    @property
    def db_path(self) -> Path:
        """The state database."""
        return self.path / "witness.db"

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, name: str) -> WitnessDir:
        """Create a witness directory at ``path``, whole or not at all.

        Raises:
            ConfigError: the name is not a key name, ``path`` is a symlink, a file, or a
                non-empty directory, or an I/O step failed (nothing is left behind).
        """
        if not valid_key_name(name):
            raise ConfigError(f"expected a witness name without spaces or '+', found {name!r}")
        given = Path(path)
        root = Path(os.path.abspath(given))
        _check_target(given, root)
        try:
            root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.init-", dir=root.parent))
        except OSError as e:
            raise ConfigError(f"cannot create the witness directory {given}: {e}") from e
        try:
            os.chmod(staging, 0o700)
            cosigner = generate_cosigner(name)
            _create(staging / "witness.key", cosigner.to_string() + "\n", 0o600)
            _create(staging / "witness.pub", cosigner.verifier.to_string() + "\n", 0o644)
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            config = {"format": WITNESS_FORMAT, "kind": "witness", "name": name, "created": created}
            _create(staging / "witness.json", json.dumps(config, indent=2) + "\n", 0o644)
            WitnessState(staging / "witness.db", create=True).close()
            for entry in staging.iterdir():
                _fsync(entry, os.O_RDONLY)
            _fsync(staging, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.rename(staging, root)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise ConfigError(
                        f"{given} appeared while it was being created; nothing was written"
                    ) from e
                raise
            _fsync(root.parent, os.O_RDONLY | os.O_DIRECTORY)
        except BaseException as e:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(e, OSError):
                raise ConfigError(f"cannot create the witness directory {given}: {e}") from e
            raise
        return cls(root, name)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> WitnessDir:
        """Open a witness directory made by :meth:`create`.

        Raises:
            ConfigError: missing, not a witness directory, of another format, or unsafe
                (writable by others, owned by another user).
        """
        root = Path(path)
        config = root / "witness.json"
        try:
            st = os.lstat(root)
        except OSError as e:
            raise ConfigError(
                f"no witness directory at {root} (run proctor witness init): {e.strerror}"
            ) from e
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{root} is not a directory: expected a witness directory")
        check_unshared(root, st, "witness directory")
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(
                f"{root} is not a witness directory (no witness.json; run proctor witness init)"
            ) from e
        except (OSError, ValueError) as e:
            raise ConfigError(f"{config}: expected the witness's JSON configuration: {e}") from e
        if not isinstance(data, dict) or data.get("kind") != "witness":
            raise ConfigError(f"{config}: expected a witness configuration (kind 'witness')")
        if data.get("format") != WITNESS_FORMAT:
            raise ConfigError(f"{config}: expected format {WITNESS_FORMAT}, found {data.get('format')!r}")
        name = data.get("name")
        if not isinstance(name, str) or not valid_key_name(name):
            raise ConfigError(f"{config}: expected a witness name without spaces or '+', found {name!r}")
        return cls(root, name)

    def cosigner(self) -> Cosigner:
        """Load the cosigner key, after checking the file is the owner's alone.

        Raises:
            ConfigError: the key file is unsafe, unreadable, malformed, or not this
                witness's name.
        """
        path = self.key_path
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ConfigError(f"key file {path} is a symbolic link: expected a regular file") from e
            raise ConfigError(f"cannot read the witness key {path}: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"key file {path} is not a regular file")
            if st.st_uid != os.geteuid():
                raise ConfigError(f"key file {path} is owned by uid {st.st_uid}: expected the current user")
            if stat.S_IMODE(st.st_mode) & 0o077:
                mode = stat.S_IMODE(st.st_mode)
                raise ConfigError(f"key file {path} has mode {mode:04o}: expected 0600 (chmod 600 {path})")
            raw = os.read(fd, _MAX_KEY_BYTES + 1)
        finally:
            os.close(fd)
        if len(raw) > _MAX_KEY_BYTES:
            raise ConfigError(f"key file {path} is larger than {_MAX_KEY_BYTES} bytes")
        try:
            cosigner = Cosigner.from_string(raw.decode("ascii").strip())
        except (UnicodeDecodeError, KeyFormatError) as e:
            raise ConfigError(f"key file {path}: expected a cosigner key: {e}") from e
        if cosigner.name != self.name:
            raise ConfigError(f"key file {path} is for {cosigner.name!r}, expected {self.name!r}")
        return cosigner

    def verifier(self) -> CosignerKey:
        """The witness's public key (its vkey), read from the key file."""
        return self.cosigner().verifier

    def state(self) -> WitnessState:
        """Open the state database."""
        return WitnessState(self.db_path)


def _check_target(given: Path, root: Path) -> None:
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"cannot create the witness directory {given}: {e.strerror}") from e
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"{given} is a symbolic link: expected a new or empty directory")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{given} exists and is not a directory: expected a new or empty directory")
    if os.listdir(root):
        raise ConfigError(f"{given} exists and is not empty: expected a new or empty directory")


def _create(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
