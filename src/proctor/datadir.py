"""The data directory: configuration, keys and the embedded database.

Layout (created by ``proctor init``, mode 0700)::

    <data>/config.json     {"format": 1, "origin": "...", "created": "..."}
    <data>/keys/log.key    the log's note signer key (Go PRIVATE+KEY+… form), mode 0600
    <data>/keys/log.pub    the log's verifier key, name+keyid+base64
    <data>/proctor.db      SQLite database (WAL), the embedded store
    <data>/log.lock        held by the one process appending to the log

Anything unknown or malformed is refused: an unknown ``format`` is an error, not a guess.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from proctor.errors import ConfigError, KeyFormatError
from proctor.lineage.note import NoteSigner, NoteVerifier, generate_signer, valid_key_name

__all__ = ["DATA_FORMAT", "DEFAULT_DATA_DIR", "DataDir", "default_origin"]

DATA_FORMAT = 1
DEFAULT_DATA_DIR = Path(".proctor")


def default_origin() -> str:
    """A log origin unique to this host and this init: ``proctor/<host>/<random>``."""
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-.") or "host"
    return f"proctor/{host}/{secrets.token_hex(4)}"


@dataclass(frozen=True)
class DataDir:
    """An initialised data directory."""

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

    def log_signer(self) -> NoteSigner:
        """The log's checkpoint signing key.

        Raises:
            ConfigError: the key file is missing, malformed, or not the origin's key.
        """
        path = self.path / "keys" / "log.key"
        try:
            signer = NoteSigner.from_string(path.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read the log signing key {path}: {e}") from e
        except KeyFormatError as e:
            raise ConfigError(f"{path}: {e}") from e
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
        """Open a data directory made by :meth:`create`.

        Raises:
            ConfigError: not initialised, malformed, or of an unknown format.
        """
        root = Path(path)
        config = root / "config.json"
        try:
            raw = config.read_bytes()
        except FileNotFoundError as e:
            raise ConfigError(
                f"{root} is not an initialised proctor data directory "
                f"(no config.json); run 'proctor init --data {root}'"
            ) from e
        except OSError as e:
            raise ConfigError(f"cannot read {config}: {e}") from e
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
    def create(cls, path: str | os.PathLike[str], *, origin: str | None = None) -> DataDir:
        """Initialise a new data directory with a fresh log key.

        Raises:
            ConfigError: the directory is already initialised, or the origin is invalid.
        """
        root = Path(path)
        origin = origin or default_origin()
        if not valid_key_name(origin):
            raise ConfigError(f"expected an origin without spaces or '+', found {origin!r}")
        if (root / "config.json").exists():
            raise ConfigError(f"{root} is already initialised; refusing to overwrite its keys")
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            keys = root / "keys"
            keys.mkdir(mode=0o700, exist_ok=True)
            signer = generate_signer(origin)
            _write_secret(keys / "log.key", signer.to_string() + "\n")
            (keys / "log.pub").write_text(signer.verifier.to_string() + "\n")
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            config = {"format": DATA_FORMAT, "origin": origin, "created": created}
            # Written last and atomically: its presence means "initialised".
            tmp = root / "config.json.tmp"
            tmp.write_text(json.dumps(config, indent=2) + "\n")
            os.replace(tmp, root / "config.json")
        except OSError as e:
            raise ConfigError(f"cannot initialise {root}: {e}") from e
        return cls(root, origin)


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
