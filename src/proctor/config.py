"""The operator's configuration of a data directory: ``<data>/config.toml``.

``config.json`` says what a data directory *is* (its format and log origin) and is
never edited; ``config.toml`` says how its governor is *run*, and is the operator's
to edit. ``proctor init`` writes it with every setting at its default, commented
(:data:`DEFAULT_CONFIG_TOML`). Today it holds the per-principal quotas::

    [quotas]
    max_running = 64             # executions one principal may have running at once
    max_starts_per_minute = 600  # executions one principal may start in any 60 s
    max_streams = 64             # event streams (GET /v1/stream) one principal may hold
    max_requests_per_second = 200        # signed requests of any kind, per second
    max_authorizations_per_second = 100  # signed authorization requests, per second

    [quotas.principals.ci-runner]   # overrides for one principal (others: the above)
    max_running = 256

and, optionally, the witnesses that cosign the log's checkpoints (ADR 0014)::

    [witnesses]
    policy = "witnesses.txt"     # a C2SP tlog-policy file, relative to the data directory
    interval_ms = 1000           # how often to submit the latest checkpoint (when it grew)
    timeout_ms = 5000            # how long to wait for one witness's answer

Invariants:

1. A missing file means every default (data directories made before it existed keep
   working); anything present is read strictly: an unknown table or key, a value
   that is not an integer (``true`` is not one), or one outside ``1 …``
   :data:`MAX_QUOTA`, is an error naming the key, what was expected and what was
   found. A governor refuses to start on such a file (fail closed): a quota that is
   mistyped must not silently become no quota.
2. Overrides name principals by the principal-name grammar; two that name the same
   principal ignoring case are refused (principal names are unique ignoring case),
   and an override matches its principal ignoring case.
3. Every admin is a principal like any other here: no one is exempt from a quota
   unless an override for that principal says so.
4. ``[witnesses]`` names its policy file; reading and checking that file is the
   governor's (:mod:`proctor.governor.cosigner`), which refuses to start when it is
   missing or invalid. Without the table, nothing is witnessed by the governor.
5. Pure but for :func:`load_config` and :func:`write_default_config`; no clock.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from proctor.authorization.keys import valid_principal_name
from proctor.datadir import check_unshared
from proctor.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_CONFIG_TOML",
    "MAX_QUOTA",
    "Config",
    "QuotaConfig",
    "QuotaLimits",
    "WitnessConfig",
    "load_config",
    "write_default_config",
]

CONFIG_FILE = "config.toml"
"""The configuration's file name in the data directory."""
MAX_QUOTA = 1_000_000_000
"""The largest value any quota accepts (a bound, not a recommendation)."""
_MAX_CONFIG_BYTES = 64 << 10
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted as the file must not hang the open


@dataclass(frozen=True)
class QuotaLimits:
    """The quotas of one principal.

    Attributes:
        max_running: executions it may have running at once.
        max_starts_per_minute: executions it may start in any 60 seconds.
        max_streams: event streams (``GET /v1/stream``) it may hold open.
        max_requests_per_second: signed requests (of any kind) it may send per second.
        max_authorizations_per_second: signed ``POST /v1/authorize`` requests it may
            send per second (they count as requests too).
    """

    max_running: int = 64
    max_starts_per_minute: int = 600
    max_streams: int = 64
    max_requests_per_second: int = 200
    max_authorizations_per_second: int = 100

    def __post_init__(self) -> None:
        """Raises:
        ConfigError: a value that is not an integer in ``1 …`` :data:`MAX_QUOTA`.
        """
        for f in fields(self):
            _check_quota(f.name, getattr(self, f.name))


@dataclass(frozen=True)
class QuotaConfig:
    """The ``[quotas]`` table: the default limits and per-principal overrides.

    Attributes:
        default: the limits of every principal without an override.
        principals: overrides, keyed by principal name casefolded.
    """

    default: QuotaLimits = field(default_factory=QuotaLimits)
    principals: Mapping[str, QuotaLimits] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "principals", MappingProxyType(dict(self.principals)))

    def limits(self, principal: str) -> QuotaLimits:
        """The limits that apply to ``principal`` (its override, or the default)."""
        if not self.principals:
            return self.default
        return self.principals.get(principal.casefold(), self.default)


@dataclass(frozen=True)
class WitnessConfig:
    """The ``[witnesses]`` table: the governor has its checkpoints cosigned (ADR 0014).

    Attributes:
        policy: the witness policy file (C2SP tlog-policy), relative to the data
            directory unless absolute.
        interval_ms: how often the latest checkpoint is submitted, when the tree grew
            since the last one that met the quorum (or that one has not yet).
        timeout_ms: how long one witness's answer is waited for.
    """

    policy: str
    interval_ms: int = 1000
    timeout_ms: int = 5000

    def __post_init__(self) -> None:
        """Raises:
        ConfigError: an empty policy path, or a number outside its bounds.
        """
        if type(self.policy) is not str or not self.policy.strip() or "\x00" in self.policy:
            raise ConfigError(
                f"witnesses.policy: expected the path of a witness policy file, found {_kind(self.policy)} "
                f"({self.policy!r:.80})"
            )
        for key, low, high in (("interval_ms", 100, 86_400_000), ("timeout_ms", 100, 60_000)):
            value = getattr(self, key)
            if type(value) is not int or not low <= value <= high:
                raise ConfigError(
                    f"witnesses.{key}: expected an integer from {low} to {high}, found {_kind(value)} "
                    f"({value!r})"
                )


@dataclass(frozen=True)
class Config:
    """A data directory's ``config.toml``.

    Attributes:
        quotas: the per-principal quotas.
        witnesses: the witnesses that cosign the log's checkpoints, or ``None``.
    """

    quotas: QuotaConfig = field(default_factory=QuotaConfig)
    witnesses: WitnessConfig | None = None

    @classmethod
    def from_toml(cls, text: str, *, source: str = CONFIG_FILE) -> Config:
        """Parse and check a configuration (module docstring, invariant 1).

        Args:
            text: the TOML text.
            source: where it came from, for messages.

        Raises:
            ConfigError: not TOML, or a table, key or value that is not expected.
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: expected TOML, found invalid text: {e}") from e
        _known(doc, ("quotas", "witnesses"), source, "")
        quotas = doc.get("quotas", {})
        if type(quotas) is not dict:
            raise ConfigError(f"{source}: quotas: expected a table, found {_kind(quotas)}")
        return cls(quotas=_quota_config(quotas, source), witnesses=_witness_config(doc, source))


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", str: "a string", float: "a float", dict: "a table"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _check_quota(key: str, value: Any, *, where: str = "quotas") -> None:
    if type(value) is not int:
        raise ConfigError(
            f"{where}.{key}: expected an integer from 1 to {MAX_QUOTA}, found {_kind(value)} ({value!r})"
        )
    if not 1 <= value <= MAX_QUOTA:
        raise ConfigError(f"{where}.{key}: expected an integer from 1 to {MAX_QUOTA}, found {value}")


def _known(table: Mapping[str, Any], allowed: tuple[str, ...], source: str, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]}: expected one of {', '.join(allowed)}, "
            f"found {', '.join(prefix + k for k in unknown)}"
        )


_QUOTA_KEYS = tuple(f.name for f in fields(QuotaLimits))


def _limits(table: Mapping[str, Any], base: QuotaLimits, source: str, where: str) -> QuotaLimits:
    _known(table, _QUOTA_KEYS, source, where)
    for key, value in table.items():
        try:
            _check_quota(key, value, where=where)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return replace(base, **table)


def _quota_config(table: Mapping[str, Any], source: str) -> QuotaConfig:
    _known(table, (*_QUOTA_KEYS, "principals"), source, "quotas")
    default = _limits({k: v for k, v in table.items() if k != "principals"}, QuotaLimits(), source, "quotas")
    named = table.get("principals", {})
    if type(named) is not dict:
        raise ConfigError(f"{source}: quotas.principals: expected a table, found {_kind(named)}")
    overrides: dict[str, QuotaLimits] = {}
    spelled: dict[str, str] = {}
    for name, override in named.items():
        where = f"quotas.principals.{name}"
        if not valid_principal_name(name):
            raise ConfigError(
                f"{source}: {where}: expected a principal name (1-64 of [A-Za-z0-9._-], "
                f"starting with a letter or digit), found {name!r}"
            )
        if type(override) is not dict:
            raise ConfigError(f"{source}: {where}: expected a table, found {_kind(override)}")
        key = name.casefold()
        if key in spelled:
            raise ConfigError(
                f"{source}: {where}: expected one table per principal (names are unique ignoring "
                f"case), found {spelled[key]!r} and {name!r}"
            )
        spelled[key] = name
        overrides[key] = _limits(override, default, source, where)
    return QuotaConfig(default, overrides)


def _witness_config(doc: Mapping[str, Any], source: str) -> WitnessConfig | None:
    if "witnesses" not in doc:
        return None
    table = doc["witnesses"]
    if type(table) is not dict:
        raise ConfigError(f"{source}: witnesses: expected a table, found {_kind(table)}")
    _known(table, ("policy", "interval_ms", "timeout_ms"), source, "witnesses")
    if "policy" not in table:
        raise ConfigError(
            f"{source}: witnesses.policy: expected the path of a witness policy file, found none"
        )
    try:
        return WitnessConfig(**table)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(data_dir: str | os.PathLike[str]) -> Config:
    """Read ``<data_dir>/config.toml``; every default when there is none.

    The file is read without following a symlink, must be a regular file owned by the
    current user or root that group and others cannot write (like the data directory
    itself: whoever can write it can lift every quota), and at most 64 KiB.

    Raises:
        ConfigError: the file is unsafe, unreadable, or not a valid configuration.
    """
    path = Path(data_dir) / CONFIG_FILE
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK)
    except FileNotFoundError:
        return Config()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror} (expected a regular file, not a link)") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: expected a regular file")
        check_unshared(path, st, "the configuration")
        raw = os.read(fd, _MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    finally:
        os.close(fd)
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: expected at most {_MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: expected UTF-8 text: {e}") from e
    return Config.from_toml(text, source=str(path))


DEFAULT_CONFIG_TOML = f"""\
# proctor: how the governor of this data directory runs. Read when a governor opens the
# directory (proctor serve, and admin commands without --server); edit it and restart.
# A missing file means every default. Anything present is checked strictly: an unknown
# key, a value that is not an integer, or one outside 1..{MAX_QUOTA} stops the governor
# from starting, with a message naming the key.

[quotas]
# Executions one principal may have running at once. A start beyond it is refused
# (HTTP 429, "quota": "max_running") and nothing is recorded; an authorization while
# at it is denied, and the deny is recorded with the reason.
max_running = {QuotaLimits.max_running}

# Executions one principal may start in any 60 seconds (HTTP 429 beyond it).
# Policies see the count as context.counters.starts_1m.
max_starts_per_minute = {QuotaLimits.max_starts_per_minute}

# Event streams (GET /v1/stream) one principal may hold open (HTTP 429 beyond it).
# `proctor serve --max-streams-per-principal N` overrides this default.
max_streams = {QuotaLimits.max_streams}

# Signed requests one principal may send per second (a sliding one-second window; a
# burst of as many is allowed): of any kind, and of POST /v1/authorize. Beyond either:
# HTTP 429 ("quota": "max_requests_per_second" or "max_authorizations_per_second"),
# checked right after the signature and before anything else is done. Such a refusal is
# counted in /metrics (proctor_quota_refusals_total), not written to the log: whoever
# floods must not fill it. A refused request is spent (it cannot be replayed later).
max_requests_per_second = {QuotaLimits.max_requests_per_second}
max_authorizations_per_second = {QuotaLimits.max_authorizations_per_second}

# Overrides for one principal; unnamed keys keep the values above. Admins are not
# exempt from any quota unless a table here says so. Quote names with a dot in them.
#
# [quotas.principals.ci-runner]
# max_running = 256
# max_starts_per_minute = 3000

# Witnesses (ADR 0014): the governor submits its latest checkpoint to every witness of
# a C2SP tlog-policy file (the log, the witnesses' keys and URLs, the quorum) in the
# background, stores their cosignatures, and serves receipts under the latest
# checkpoint that meets the quorum once it covers the execution. A witness that is
# down never delays an authorization; one that reports a fork makes /readyz answer 503.
# A missing or invalid policy file stops the governor from starting.
#
# [witnesses]
# policy = "witnesses.txt"   # relative to this directory, or absolute
# interval_ms = 1000         # submit this often, when the tree grew (100..86400000)
# timeout_ms = 5000          # wait this long for one witness (100..60000)
"""
"""What ``proctor init`` writes: every setting at its default, documented."""


def write_default_config(data_dir: str | os.PathLike[str]) -> Path:
    """Create ``<data_dir>/config.toml`` with :data:`DEFAULT_CONFIG_TOML` (mode 0644,
    exclusively and never through a symlink), fsynced.

    Returns:
        The path written.

    Raises:
        ConfigError: the file exists or cannot be written.
    """
    path = Path(data_dir) / CONFIG_FILE
    data = DEFAULT_CONFIG_TOML.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644)
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror}") from e
    try:
        os.fchmod(fd, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from e
    finally:
        os.close(fd)
    return path
