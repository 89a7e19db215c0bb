"""The governor's request and reply shapes: the typed model of every JSON request
body, and the parsed request and reply of ``POST /v1/authorize``.

Every request body is validated against its model (:func:`parse_body`) only after the
request's signature has verified and its bytes have parsed as canonical-subset JSON
(:func:`proctor.governor.limits.parse_json`): the signature covers the raw bytes, so
nothing is made of a body before it is known whose it is. The same models are the
request bodies of ``/openapi.json`` (:data:`BODIES`).

Some bodies (an execution's start, renewal and end) are checked again, field by field,
by the code that acts on them; for the fields that code has always coerced or ignored
rather than refused (``signal``, ``detail``, ``containment`` …) the model documents the
type a client should send and accepts any JSON value, so that no value those fields
accepted before is refused now (ADR 0011).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from proctor.errors import ProctorError, RequestShapeError  # RequestShapeError: re-exported here
from proctor.governor.boundary import explain
from proctor.policy import ACTIONS, Decision

__all__ = [
    "RequestShapeError",
    "AuthorizeRequest",
    "AuthorizeResult",
    "MAX_ARGV",
    "AuthorizeBody",
    "StartExecutionBody",
    "StartPlanBody",
    "AuthorizeStartBody",
    "RenewExecutionBody",
    "FinishExecutionBody",
    "PrincipalBody",
    "RevocationBody",
    "PolicyBundleBody",
    "SignedPolicyBody",
    "ApprovalDecisionBody",
    "EmptyBody",
    "BODIES",
    "parse_body",
]

MAX_ARGV = 1024

_Model = TypeVar("_Model", bound=BaseModel)


def _lenient(schema: dict[str, Any]) -> Any:
    """A field documented as ``schema`` that accepts any JSON value (the code that acts on
    it coerces or ignores what it cannot use, as it always did)."""
    return WithJsonSchema(schema)


_STRING = {"type": "string"}
_OUTPUT_DIGEST = {"type": "string", "pattern": "^(sha256:[0-9a-f]{64})?$"}


class _Body(BaseModel):
    """A request body: strict JSON types (no coercion), unknown members kept."""

    model_config = ConfigDict(strict=True, frozen=True, extra="allow")


class _ExactBody(_Body):
    """A request body whose unknown members are refused."""

    model_config = ConfigDict(extra="forbid")


class AuthorizeBody(_ExactBody):
    """``POST /v1/authorize``: what a principal asks to execute."""

    action: Annotated[
        str, Field(description="what kind of execution", json_schema_extra={"enum": list(ACTIONS)})
    ]
    resource: Annotated[
        str, Field(min_length=1, max_length=4096, description="an absolute executable path, or server/tool")
    ]
    argv: Annotated[
        list[str],
        Field(max_length=MAX_ARGV, description="the exact argument vector (exec), argv[0] included"),
    ] = Field(default_factory=list)
    arguments: Annotated[
        dict[str, Any] | None, Field(description="the exact tool arguments (mcp.call, tool.call)")
    ] = None
    zone: Annotated[
        str, Field(max_length=4096, description='the zone it would run in ("": the principal\'s)')
    ] = ""
    executable_digest: Annotated[
        str, Field(max_length=4096, description="sha256:<hex> of the measured executable")
    ] = ""
    parent_warrant: Annotated[
        str, Field(max_length=16384, description="a warrant token this request is delegated under")
    ] = ""
    approval: Annotated[
        str,
        Field(
            max_length=64,
            description="the id of an approved approval (ap_...) for exactly this request, to use it once",
        ),
    ] = ""

    @field_validator("action")
    @classmethod
    def _known_action(cls, value: str) -> str:
        if value not in ACTIONS:
            raise ValueError(f"expected one of {list(ACTIONS)}, found {value!r:.40}")
        return value


class StartExecutionBody(_Body):
    """``POST /v1/executions``: an enforcer starts what a warrant allowed, as measured."""

    warrant: Annotated[str, Field(description="the warrant token from POST /v1/authorize")]
    action: str
    resource: str
    measurement: Annotated[
        dict[str, Any], Field(description="what the enforcer measured (proctor.verification)")
    ]
    argv: list[str] = Field(default_factory=list)
    arguments: Annotated[Any, _lenient({"type": "object"}), Field(description="the tool arguments")] = None
    zone: str = ""
    containment: Annotated[
        Any,
        _lenient({"type": "array", "items": _STRING}),
        Field(description="containment backends planned (at most 16 strings kept)"),
    ] = None
    enforcer: Annotated[Any, _lenient(_STRING), Field(description="the enforcer's name")] = None


class StartPlanBody(_ExactBody):
    """The ``start`` part of ``POST /v1/authorize/start``: what ``POST /v1/executions``
    carries besides what the authorization already names (ADR 0019)."""

    measurement: Annotated[
        dict[str, Any], Field(description="what the enforcer measured (proctor.verification)")
    ]
    containment: Annotated[
        list[Annotated[str, Field(max_length=256)]] | None,
        Field(max_length=16, description="containment backends planned"),
    ] = None
    enforcer: Annotated[str | None, Field(max_length=256, description="the enforcer's name")] = None


class AuthorizeStartBody(_ExactBody):
    """``POST /v1/authorize/start``: authorize, and on allow start at once (ADR 0019)."""

    authorize: Annotated[AuthorizeBody, Field(description="the POST /v1/authorize body")]
    start: Annotated[StartPlanBody, Field(description="the start, once the warrant is minted")]


class RenewExecutionBody(_Body):
    """``POST /v1/executions/{id}/renew``: the enforcer's own check (the body may be omitted)."""

    integrity: Annotated[
        Any,
        _lenient({"type": "string", "enum": ["ok", "violated"]}),
        Field(description="the enforcer's integrity check; anything but ok (or none) ends the execution"),
    ] = None
    integrity_detail: Annotated[Any, _lenient(_STRING), Field(description="what was violated")] = None


class FinishExecutionBody(_Body):
    """``POST /v1/executions/{id}/finish``: how an execution ended."""

    outcome: Annotated[str, Field(json_schema_extra={"enum": ["completed", "terminated", "failed"]})]
    exit_status: Annotated[
        Any, _lenient({"type": ["integer", "null"]}), Field(description="required when completed")
    ] = None
    reason: Annotated[Any, _lenient(_STRING), Field(description="required when terminated or failed")] = None
    detail: Annotated[Any, _lenient(_STRING)] = None
    signal: Annotated[Any, _lenient(_STRING)] = None
    processes_killed: Annotated[Any, _lenient({"type": "integer"})] = None
    resource_usage: Annotated[
        Any, _lenient({"type": "object", "additionalProperties": {"type": "integer"}})
    ] = None
    stdout_digest: Annotated[Any, _lenient(_OUTPUT_DIGEST), Field(description="of stdout, if kept")] = None
    stderr_digest: Annotated[Any, _lenient(_OUTPUT_DIGEST), Field(description="of stderr, if kept")] = None
    warrant: Annotated[
        Any,
        _lenient(_STRING),
        Field(description="if given, the execution must run under this warrant (else 409, nothing recorded)"),
    ] = None


class PrincipalBody(_Body):
    """``POST /v1/principals``: a principal to register."""

    name: str
    public_key: Annotated[str, Field(description="the Ed25519 public key, base64")]
    attrs: dict[str, str] = Field(default_factory=dict)
    zone: str = ""


class RevocationBody(_Body):
    """``POST /v1/revocations``: what to revoke."""

    kind: Annotated[str, Field(description="warrant, execution, principal or policy")]
    target: Annotated[str, Field(description="its id, name or bundle digest")]
    reason: str = ""
    successor: Annotated[str, Field(description="revoking an admin: the principal that becomes admin")] = ""


class PolicyBundleBody(_ExactBody):
    """A policy bundle: Cedar files, their schema, a version, and any tool catalogs."""

    files: Annotated[dict[str, str], Field(description="file name (*.cedar) to Cedar policy text")]
    policy_schema: Annotated[str, Field(alias="schema", description="Cedar JSON schema text")]
    version: Annotated[int, Field(ge=0)]
    tools: Annotated[
        dict[str, str] | None,
        Field(description="tool catalog fragments, file name (*.tools.json) to text (ADR 0018)"),
    ] = None


class SignedPolicyBody(_ExactBody):
    """``PUT /v1/policy``: a policy bundle signed by the admin who pushes it."""

    bundle: PolicyBundleBody
    signer: str
    signature: Annotated[str, Field(description="Ed25519 signature, base64")]


class ApprovalDecisionBody(_ExactBody):
    """``POST /v1/approvals/{id}/approve`` and ``/deny`` (admin): why (the body may be omitted)."""

    reason: Annotated[str, Field(max_length=500, description="why, for the log")] = ""


class EmptyBody(_Body):
    """No fields: the body may be omitted (an object's members are ignored)."""


BODIES: tuple[type[BaseModel], ...] = (
    AuthorizeBody,
    StartExecutionBody,
    AuthorizeStartBody,
    RenewExecutionBody,
    FinishExecutionBody,
    PrincipalBody,
    RevocationBody,
    SignedPolicyBody,
    ApprovalDecisionBody,
    EmptyBody,
)
"""Every request body model (the OpenAPI document's request body schemas)."""


@functools.cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def parse_body(model: type[_Model], doc: Any, *, error: type[ProctorError] = RequestShapeError) -> _Model:
    """Validate a verified, parsed request body against its model.

    Args:
        model: one of :data:`BODIES`.
        doc: the body, as :func:`~proctor.governor.limits.parse_json` returned it.
        error: what to raise (a policy bundle is refused as a
            :class:`~proctor.errors.BundleError`).

    Raises:
        RequestShapeError: (or ``error``) every wrong field, each with what was
            expected and what was found.
    """
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise error(explain(e.errors(include_url=False), _schema(model))) from e


@dataclass(frozen=True)
class AuthorizeRequest:
    """What a principal asks to execute.

    Attributes:
        action: ``exec``, ``mcp.call`` or ``tool.call``.
        resource: an absolute executable path, or ``server/tool``.
        argv: the exact argument vector (``exec``), argv[0] included.
        arguments: the exact tool arguments (``mcp.call``/``tool.call``).
        zone: the zone of the environment it would run in ("" = the principal's).
        executable_digest: ``sha256:<hex>`` of the measured executable, if known.
        parent_warrant: a warrant token this request is delegated under, if any.
        approval: the id of an approved approval to use for it, if any
            (:mod:`proctor.governor.approvals`).
    """

    action: str
    resource: str
    argv: tuple[str, ...] = ()
    arguments: Mapping[str, Any] | None = None
    zone: str = ""
    executable_digest: str = ""
    parent_warrant: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    approval: str = ""

    @classmethod
    def from_json(cls, doc: Any) -> AuthorizeRequest:
        """Parse and check the request body (:class:`AuthorizeBody`).

        Raises:
            RequestShapeError: a field is missing, of the wrong type, or unknown.
        """
        return cls.from_body(parse_body(AuthorizeBody, doc))

    @classmethod
    def from_body(cls, body: AuthorizeBody) -> AuthorizeRequest:
        """The request of a validated body."""
        return cls(
            action=body.action,
            resource=body.resource,
            argv=tuple(body.argv),
            arguments=body.arguments,
            zone=body.zone,
            executable_digest=body.executable_digest,
            parent_warrant=body.parent_warrant,
            approval=body.approval,
        )

    def to_json(self) -> dict[str, Any]:
        """The request body."""
        out: dict[str, Any] = {"action": self.action, "resource": self.resource}
        if self.argv:
            out["argv"] = list(self.argv)
        if self.arguments is not None:
            out["arguments"] = dict(self.arguments)
        for key in ("zone", "executable_digest", "parent_warrant", "approval"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class AuthorizeResult:
    """The governor's answer: the decision, where it was logged, and the warrant on allow
    (or, on an allow that waits for an approval, the approval asked for)."""

    decision: Decision
    log_index: int | None
    warrant: str | None = None
    warrant_id: str | None = None
    warrant_index: int | None = None
    expires: int | None = None
    lease_ttl_ms: int | None = None
    approval: Mapping[str, Any] | None = None
    zone: str | None = None

    @property
    def allowed(self) -> bool:
        """Whether a warrant was issued."""
        return self.decision.allow and self.warrant is not None

    def to_json(self) -> dict[str, Any]:
        """The reply body of ``POST /v1/authorize``."""
        out: dict[str, Any] = {
            "allow": self.allowed,
            "decision": self.decision.to_json(),
            "log_index": self.log_index,
        }
        if self.warrant is not None:
            out["warrant"] = {
                "token": self.warrant,
                "id": self.warrant_id,
                "log_index": self.warrant_index,
                "expires": self.expires,
                "lease_ttl_ms": self.lease_ttl_ms,
            }
            if self.zone is not None:
                out["warrant"]["zone"] = self.zone  # the warrant's own zone claim
        if self.approval is not None:
            out["approval"] = dict(self.approval)
        return out
