"""What a measurement says was executed, and whether a warrant covers it.

For ``exec`` the resource a policy decides on *is* the measured file the command line
names (``argv[0]`` resolved as ``execvp`` does, symlinks resolved): for a script, the
script — run directly through its ``#!`` line or given to an interpreter
(``python3 job.py``) — with the interpreter measured alongside; otherwise the
executable. Its digest is the warrant's ``executable_digest``. A resource named by the
caller that differs from it is refused before anything starts, and a warrant that
binds no executable digest cannot start an ``exec``.

:func:`check_measurement` is the one comparison the enforcer (before it starts the
command), the governor (before it records ``execution.started``) and the receipt
verifier (offline) all make:

1. the measurement is well-formed: ``files`` is a list of ``{path, digest, role}``, the
   first the ``executable`` or ``interpreter``, at most one ``script``;
2. the warrant binds an executable digest (an ``exec`` warrant that does not cannot
   start anything);
3. the warrant's resource equals the measured resource's path;
4. the warrant's executable digest equals the measured resource's digest.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proctor.errors import IntegrityError

__all__ = ["MeasuredResource", "check_measurement", "measured_resource"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ROLES = ("executable", "interpreter", "script")
_MAX_FILES = 8


@dataclass(frozen=True)
class MeasuredResource:
    """The file a measured command line names.

    Attributes:
        path: its absolute path, symlinks resolved.
        digest: ``sha256:<hex>`` of its content.
        interpreter: the path of the interpreter that runs it, ``""`` for none.
    """

    path: str
    digest: str
    interpreter: str = ""


def measured_resource(measurement: Any) -> MeasuredResource:
    """The resource a measurement (``Measurement.to_json()``) names (step 1).

    Args:
        measurement: the measurement as JSON.

    Returns:
        The script if one was measured, else the executable.

    Raises:
        IntegrityError: the measurement is not well-formed.
    """
    if not isinstance(measurement, Mapping):
        raise IntegrityError(f"measurement: expected an object, found {type(measurement).__name__}")
    files = measurement.get("files")
    if type(files) is not list or not 1 <= len(files) <= _MAX_FILES:
        raise IntegrityError(
            f"measurement.files: expected 1 to {_MAX_FILES} measured files, found {files!r:.80}"
        )
    parsed: list[tuple[str, str, str]] = []
    for i, f in enumerate(files):
        if type(f) is not dict or set(f) != {"path", "digest", "role"}:
            raise IntegrityError(f"measurement.files[{i}]: expected {{path, digest, role}}, found {f!r:.80}")
        path, digest, role = f["path"], f["digest"], f["role"]
        if type(path) is not str or not path.startswith("/"):
            raise IntegrityError(
                f"measurement.files[{i}].path: expected an absolute path, found {path!r:.80}"
            )
        if type(digest) is not str or _DIGEST.fullmatch(digest) is None:
            raise IntegrityError(
                f"measurement.files[{i}].digest: expected sha256:<64 hex>, found {digest!r:.80}"
            )
        if role not in _ROLES:
            raise IntegrityError(f"measurement.files[{i}].role: expected one of {_ROLES}, found {role!r:.40}")
        parsed.append((path, digest, role))
    if parsed[0][2] == "script":
        raise IntegrityError("measurement.files[0]: expected the executable or interpreter, found the script")
    scripts = [p for p in parsed if p[2] == "script"]
    if len(scripts) > 1 or (parsed[0][2] == "interpreter" and not scripts):
        raise IntegrityError("measurement.files: expected at most one script, and one with an interpreter")
    if scripts:
        return MeasuredResource(scripts[0][0], scripts[0][1], interpreter=parsed[0][0])
    return MeasuredResource(parsed[0][0], parsed[0][1])


def check_measurement(
    measurement: Any, *, action: str, resource: str, executable_digest: str
) -> MeasuredResource:
    """Whether a warrant's ``(action, resource, executable_digest)`` covers what was measured.

    Args:
        measurement: the measurement as JSON.
        action: the warrant's action (only ``exec`` is bound to a measurement).
        resource: the warrant's resource.
        executable_digest: the warrant's executable digest.

    Returns:
        The measured resource.

    Raises:
        IntegrityError: a numbered step of the module docstring failed; the message
            says what was expected and what was found.
    """
    found = measured_resource(measurement)  # step 1
    if action != "exec":
        return found
    if not executable_digest:  # step 2
        raise IntegrityError("the warrant binds no executable digest: it cannot start an exec")
    if resource != found.path:  # step 3
        raise IntegrityError(f"the warrant is for {resource!r}, but the command executes {found.path!r}")
    if not hmac.compare_digest(executable_digest, found.digest):  # step 4
        raise IntegrityError(
            f"the warrant binds executable digest {executable_digest}, "
            f"but {found.path!r} measures {found.digest}"
        )
    return found
