"""``proctor policy check|push|show|replay``: policy bundles (registered by
:mod:`proctor.cli_admin` under ``policy``).

``check`` and ``replay`` read only the files and the data directory given; ``push`` and
``show`` act on a governor (``--server``) or on the data directory (:mod:`proctor.cli_access`).
On a terminal ``show`` prints a summary (version, digest, signer, activation, each
policy's id, effect and file); piped, or with ``--json``, the signed bundle as before,
from a governor or from the data directory alike.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from proctor.authorization.keys import PrincipalKey
from proctor.cli_access import AdminAccess, KeyOpt, admin_access, exit_for
from proctor.cli_output import DataOpt, JsonOpt, ServerOpt, StoreOpt, emit, fail, fields, table, ticks, when
from proctor.client import GovernorError
from proctor.datadir import DEFAULT_DATA_DIR, DataDir
from proctor.errors import PolicyValidationError, ProctorError
from proctor.exitcodes import ExitCode
from proctor.lineage.events import Event
from proctor.policy import PolicyBundle, PolicyEngine, PolicyRequest

__all__ = ["policy_app"]

policy_app = typer.Typer(help="Check, push, show and replay policy bundles.", no_args_is_help=True)


def _bundle(source: Path, version: int) -> PolicyBundle:
    try:
        if source.is_dir() or source.suffix == ".cedar":  # a directory, or one policy file
            return PolicyBundle.from_path(source, version=version)
        doc = json.loads(source.read_text())
        return PolicyBundle.from_json(doc["bundle"] if "bundle" in doc and "signature" in doc else doc)
    except (ProctorError, OSError, ValueError, KeyError) as e:
        fail(ExitCode.BAD_INPUT, f"error: cannot read the bundle {source}: {e}")


@policy_app.command("check")
def _policy_check(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="PATH",
            help="A directory of *.cedar files (and schema.json), one .cedar file, or bundle JSON.",
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Validate policies against the schema; print Cedar's diagnostics."""
    bundle = _bundle(source, 1)
    try:
        engine = PolicyEngine.compile(bundle)
    except PolicyValidationError as e:
        emit(
            {"ok": False, "error": str(e), "diagnostics": list(e.diagnostics)},
            human=_check_text,
            json=json_out,
        )
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    except ProctorError as e:
        emit({"ok": False, "error": str(e), "diagnostics": []}, human=_check_text, json=json_out)
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    emit(
        {"ok": True, "bundle": engine.bundle_digest, "files": sorted(bundle.files)},
        human=_check_text,
        json=json_out,
    )


def _check_text(result: dict[str, Any]) -> str:
    """``policy check`` (and a refused ``policy push``) for a person."""
    if result.get("ok"):
        return ticks([(True, f"valid: {', '.join(result['files'])} (bundle {result['bundle']})")])
    return "\n".join([ticks([(False, result["error"])]), *(f"  {d}" for d in result["diagnostics"])])


@policy_app.command("push")
def _policy_push(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="PATH", help="A directory of *.cedar files (and schema.json), or one .cedar file."
        ),
    ],
    version: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Bundle version, above every version pushed before (default: time-based)."
        ),
    ] = None,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Sign a bundle with the admin key and activate it (the previous one stays on failure).

    Versions only go forward: without ``--version``, the bundle gets the current unix
    time, or the active bundle's version plus one if that is higher.
    """
    try:
        admin_key = PrincipalKey.load(key or data / "keys" / "admin.key")
    except (ProctorError, OSError) as e:
        fail(ExitCode.BAD_INPUT, f"error: cannot load the admin key: {e}")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    with admin_access(data, server, key, store) as admin:
        if version is None:
            version = max(int(time.time()), _active_version(admin) + 1)
        bundle = _bundle(source, version)
        signed = bundle.signed(
            Ed25519PrivateKey.from_private_bytes(admin_key.private_bytes()), admin_key.name
        )
        try:
            if admin.client is not None:
                result = admin.client.json("PUT", "/v1/policy", signed.to_json())
            elif admin.governor is not None:
                result = admin.governor.push_policy(signed.to_json(), by=admin.name)
        except PolicyValidationError as e:
            refused = {"ok": False, "error": str(e), "diagnostics": list(e.diagnostics)}
            emit(refused, human=_check_text, json=json_out)
            raise typer.Exit(ExitCode.BAD_INPUT) from None
        except GovernorError as e:
            if isinstance(e.body, dict) and "diagnostics" in e.body:
                refused = {"ok": False, "error": str(e), "diagnostics": e.body["diagnostics"]}
                emit(refused, human=_check_text, json=json_out)
            exit_for(e)
        except ProctorError as e:
            exit_for(e)
    emit(result, human=fields, json=json_out)


def _active_version(admin: AdminAccess) -> int:
    """The active bundle's version, or -1 when none is active."""
    active: Any = None
    try:
        if admin.client is not None:
            active = admin.client.json("GET", "/v1/policy")
        elif admin.governor is not None:
            active = admin.governor.active_policy()
    except GovernorError as e:
        if e.status == 404:
            return -1
        exit_for(e)
    except ProctorError as e:
        exit_for(e)
    if not isinstance(active, dict) or not isinstance(active.get("bundle"), dict):
        return -1
    found = active["bundle"].get("version")
    return found if type(found) is int else -1


@policy_app.command("show")
def _policy_show(
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the active signed bundle (on a terminal: a summary of it, activation time included).

    Both forms print the same: the signed bundle as JSON, and in the summary the time
    the bundle was activated, which the governor's ``GET /v1/policy`` adds to the signed
    bundle (``activated``) and the data directory's form reads from the stored bundles.
    """
    activated: str | None = None
    with admin_access(data, server, key, store) as admin:
        try:
            if admin.client is not None:
                active = admin.client.json("GET", "/v1/policy")
                if not isinstance(active, dict):
                    kind = type(active).__name__
                    fail(ExitCode.UNAVAILABLE, f"error: GET /v1/policy: expected an object, found {kind}")
                found = active.pop("activated", None)
                activated = found if isinstance(found, str) else None
            elif admin.governor is not None:
                active = admin.governor.active_policy()
                digest = _digest(active)
                stored = admin.governor.state.bundle_versions()
                activated = next((at for d, _, at in stored if d == digest), None)
        except ProctorError as e:
            exit_for(e)
    if active is None:
        fail(ExitCode.BAD_INPUT, "error: no policy bundle is active; everything is denied")
    emit(active, human=lambda doc: _policy_summary(doc, activated), json=json_out)


def _digest(active: Any) -> str | None:
    try:
        return PolicyBundle.from_json(active["bundle"]).digest if isinstance(active, dict) else None
    except (ProctorError, KeyError, TypeError):
        return None


def _policy_summary(active: dict[str, Any], activated: str | None) -> str:
    """``policy show`` for a person: version, digest, activation and each policy."""
    lines = [
        f"version:   {active.get('bundle', {}).get('version')}",
        f"digest:    {_digest(active) or '(not a valid bundle)'}",
        f"signed by: {active.get('signer')}",
        "activated: " + (when(activated) if activated else "(not reported by this governor; see the log)"),
        "",
    ]
    try:
        engine = PolicyEngine.compile(PolicyBundle.from_json(active["bundle"]))
    except (ProctorError, KeyError, TypeError) as e:
        return "\n".join([*lines, f"policies: cannot be read: {e}"])
    rows = [(p.name, p.effect, p.file) for p in engine.policies]
    return "\n".join([*lines, table(rows, ("policy", "effect", "file"))])


@policy_app.command("replay")
def _policy_replay(
    bundle_source: Annotated[
        Path, typer.Option("--bundle", metavar="PATH", help="Bundle directory or JSON to evaluate with.")
    ],
    since: Annotated[int, typer.Option("--since", metavar="INDEX", help="First log index to replay.")] = 0,
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-evaluate logged decisions against another bundle; report which would change."""
    from proctor.lineage.log import Log  # noqa: PLC0415

    bundle = _bundle(bundle_source, 0)
    try:
        engine = PolicyEngine.compile(bundle)
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    changed: list[dict[str, Any]] = []
    total = 0

    from proctor.policy.commitment import ArgumentOpening, reveal  # noqa: PLC0415
    from proctor.store.open import open_stores  # noqa: PLC0415

    try:
        dd = DataDir.open(data)
        # The log has each request's arguments as a commitment; the openings are in the
        # private state (the data directory's file, or the --store database).
        stores = open_stores(store, db_path=dd.db_path, lock_path=dd.lock_path)
        state = stores.state
        with Log(stores.log, dd.log_signer(), sequencer=stores.sequencer) as log:
            for index in range(max(since, 0), log.size):
                event = Event.from_bytes(log.leaf(index)).data
                if event.get("type") != "decision" or "request" not in event:
                    continue
                total += 1
                before = event["decision"]
                now = event.get("now")
                request = event["request"]
                if "args_commitment" in request:
                    opening = state.opening(index)
                    if opening is None:
                        fail(
                            ExitCode.BAD_INPUT,
                            f"error: the arguments of the decision at {index} are not kept",
                        )
                    request = reveal(request, ArgumentOpening.from_json(opening))
                after = engine.decide(PolicyRequest.from_json(request), now=int(now or 0))
                if ("allow" if after.allow else "deny") != before:
                    changed.append(
                        {
                            "index": index,
                            "principal": event.get("principal"),
                            "before": before,
                            "after": "allow" if after.allow else "deny",
                            "policies": list(after.policies),
                            "reason": after.reason,
                        }
                    )
    except ProctorError as e:
        fail(ExitCode.BAD_INPUT, f"error: {e}")
    emit(
        {"bundle": engine.bundle_digest, "replayed": total, "changed": len(changed), "changes": changed},
        human=_replay_text,
        json=json_out,
    )


def _replay_text(result: dict[str, Any]) -> str:
    head = f"{result['changed']} of {result['replayed']} decision(s) would change under {result['bundle']}"
    rows = [
        (c["index"], c["principal"], c["before"], c["after"], ", ".join(c["policies"]) or "-", c["reason"])
        for c in result["changes"]
    ]
    if not rows:
        return head
    return "\n".join([head, "", table(rows, ("index", "principal", "before", "after", "policies", "reason"))])
