"""The policy engine: compile a bundle once, then decide requests with Cedar.

Compiling (:meth:`PolicyEngine.compile`) is where a bundle is judged, and any problem
stops it from becoming active:

1. the schema has the shape proctor needs (:func:`read_schema`) and Cedar parses it;
   a bundle with tool catalogs has its schema composed with them first
   (:meth:`~proctor.policy.tool_catalog.ToolCatalog.compose`, ADR 0018);
2. each file parses on its own (so a syntax error names its file, line and column:
   :mod:`proctor.policy._locate`);
3. the bundle holds at least one policy, and no templates;
4. every policy validates against the schema (``cedarpy.validate_policies``, strict),
   and, with tool catalogs, names no ``Proctor::Tool`` literal they do not declare;
5. annotations are known and well-formed (:mod:`proctor.policy.obligations`), and
   ``@id`` names are unique;
6. probe requests built exactly as :mod:`proctor.policy.context` builds them pass
   Cedar's request validation against the schema, for each action, with the fewest
   and the most context fields; after this the engine does not re-validate each
   request against the schema (it cannot differ in shape), which halves Cedar's cost;
7. the policies are sliced (:mod:`proctor.policy.slices`) into pre-parsed policy sets.

Deciding (:meth:`PolicyEngine.decide`) never raises. The answer is allow only when
all of these hold, and deny otherwise, with the reason:

- the request is well-formed (:func:`~proctor.policy.context.request_problem`);
- with tool catalogs, an ``mcp.call`` names a catalogued tool with its catalogued
  definition digest and arguments that fit its input schema (they become
  ``context.tool``: :meth:`~proctor.policy.tool_catalog.ToolCatalog.tool_context`);
- Cedar's decision is ``Allow`` — ``Deny`` and ``NoDecision`` deny;
- Cedar reported no evaluation error. Cedar skips a policy whose condition errors,
  so an erroring ``forbid`` would otherwise let a ``permit`` through;
- trust boundary: the request is not cross-zone, or a determining permit carries
  ``@cross_zone("true")``. A request is cross-zone when ``request.zone`` is
  non-empty and differs from the principal's ``zone`` attribute;
- nothing raised (an exception is a deny that records it).

The engine reads no clock: ``now`` (unix seconds, UTC) is the caller's, and the same
bundle, request and ``now`` always give an identical :class:`Decision`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import cedarpy
import orjson

from proctor.errors import CanonicalizationError, PolicyError, PolicyValidationError
from proctor.policy._cedar import CedarAnswer, ask, ask_batch, reraise_interrupts
from proctor.policy._locate import locate_parse_error
from proctor.policy._probe import probe_requests
from proctor.policy.bundle import PolicyBundle
from proctor.policy.context import build_context, principal_entity_json, request_problem
from proctor.policy.decision import Decision, safe_request_digest
from proctor.policy.decision_cache import DECISION_CACHE_SIZE, DecisionCache, time_fields_read
from proctor.policy.obligations import combine_obligations, read_annotations
from proctor.policy.request import PolicyRequest
from proctor.policy.schema import (
    ACTION_TYPE,
    ACTIONS,
    PRINCIPAL_TYPE,
    RESOURCE_TYPES,
    SchemaInfo,
    read_schema,
)
from proctor.policy.slices import CompiledPolicy, PolicySlices
from proctor.policy.tool_catalog import ToolCatalog
from proctor.policy.tool_types import ArgumentsMismatchError
from proctor.policy.visibility import never_allowed

__all__ = ["ENTITY_CACHE_SIZE", "PolicyEngine"]

ENTITY_CACHE_SIZE = 4096
"""How many (principal, attributes) entity sets an engine keeps parsed."""

_POLICY_IN_ERROR = re.compile(r"policy `([^`]+)`")
_ACTION_UIDS = {a: {"type": ACTION_TYPE, "id": a} for a in ACTIONS}


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


_DEFAULT_DENY = "denied: no permit policy matched (default deny)"
_Determining = tuple[tuple[str, ...], bool, dict[str, Any], str]


class PolicyEngine:
    """A compiled, validated policy bundle that decides requests.

    Build one with :meth:`compile`; an engine you hold always has a valid bundle.
    Engines are immutable and may be shared between threads.

    Attributes:
        bundle: the bundle it was compiled from.
        bundle_digest: that bundle's digest (every decision carries it).
        policies: the bundle's policies, in Cedar id order, with their parsed annotations.
        catalog: the bundle's tool catalogs, or ``None`` when it carries none.
        schema: the parsed schema the policies were validated against (composed with
            the catalogs when there are some).
    """

    def __init__(
        self,
        *,
        bundle: PolicyBundle,
        schema: cedarpy.Schema,
        info: SchemaInfo,
        policies: Sequence[CompiledPolicy],
        slices: PolicySlices,
        catalog: ToolCatalog | None = None,
        decision_cache: int = DECISION_CACHE_SIZE,
    ) -> None:
        # Use compile(); this only stores what compile checked.
        self.bundle = bundle
        self.bundle_digest = bundle.digest
        self.policies = tuple(policies)
        self._schema = schema
        self.schema = schema
        self.catalog = catalog
        self._info = info
        self._by_id = {p.policy_id: p for p in policies}
        self._slices = slices
        self._entities = functools.lru_cache(maxsize=ENTITY_CACHE_SIZE)(self._build_entities)
        self._determining = functools.lru_cache(maxsize=ENTITY_CACHE_SIZE)(self._read_determining)
        self._cache = DecisionCache(time_fields_read(p.est for p in self.policies), decision_cache)

    # -- compiling ---------------------------------------------------------------------

    @classmethod
    def compile(
        cls, bundle: PolicyBundle, *, sliced: bool = True, decision_cache: int = DECISION_CACHE_SIZE
    ) -> PolicyEngine:
        """Parse, validate and index a bundle (steps in the module docstring).

        Args:
            bundle: the bundle.
            sliced: evaluate each request only against the policies that can apply
                to it (the default; ``False`` is the unsliced reference).
            decision_cache: how many decisions to keep for reuse
                (:mod:`proctor.policy.decision_cache`); 0 keeps none.

        Returns:
            The engine.

        Raises:
            PolicyValidationError: the schema, a policy or an annotation is invalid
                (``diagnostics`` has Cedar's and proctor's messages, each naming the file).
            PolicyError: the bundle holds no policy, or is not a ``PolicyBundle``.
        """
        if not isinstance(bundle, PolicyBundle):
            raise PolicyError(f"expected a PolicyBundle, found {type(bundle).__name__}")
        catalog = ToolCatalog.from_fragments(bundle.tools) if bundle.tools else None
        schema_text = catalog.compose(bundle.schema) if catalog is not None else bundle.schema
        info = read_schema(schema_text)
        try:
            schema = cedarpy.Schema.from_json_str(schema_text)
        except ValueError as e:
            raise PolicyValidationError(
                "the bundle schema does not parse", diagnostics=(f"schema: {e}",)
            ) from e
        # 2. Parse each file alone, so a syntax error names its file, and count its
        # policies to map Cedar's positional ids back to files.
        files: list[str] = []
        problems: list[str] = []
        for name, text in bundle.files.items():
            try:
                doc = orjson.loads(cedarpy.policies_to_json_str(text))
            except ValueError as e:
                at = locate_parse_error(text, str(e), cedarpy.policies_to_json_str)
                problems.append(f"{name}:{at[0]}:{at[1]}: {e}" if at else f"{name}: {e}")
                continue
            count = len(doc.get("staticPolicies", {})) + len(doc.get("templates", {}))
            files.extend([name] * count)
            if doc.get("templates"):
                problems.append(f"{name}: templates (?principal, ?resource) are not supported; link them")
        if problems:
            raise PolicyValidationError("policies do not parse", diagnostics=tuple(problems))
        # 3. An empty bundle must not compile: it would deny everything and look healthy.
        if not files:
            raise PolicyError(
                f"bundle {bundle.digest} holds no policy; refusing an empty bundle (fail closed)"
            )
        text = "\n".join(bundle.files.values())
        est: dict[str, Any] = orjson.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]

        def where(policy_id: str) -> str:
            index = int(policy_id.removeprefix("policy")) if policy_id.startswith("policy") else -1
            name = files[index] if 0 <= index < len(files) else "?"
            label = est.get(policy_id, {}).get("annotations", {}).get("id")
            return f"{name}: {policy_id}" + (f" (@id {label!r})" if label else "")

        # 4. Strict validation against the schema.
        result = cedarpy.validate_policies(text, schema)
        if not result.validation_passed:
            diagnostics = tuple(
                f"{where(e.policy_id)}: {e.error}" if e.policy_id else e.error for e in result.errors
            )
            raise PolicyValidationError(
                "policies do not validate against the schema", diagnostics=diagnostics
            )
        if catalog is not None:
            known = ", ".join(f"{s}/*" for s in sorted(catalog.servers))
            unknown = [
                f"{where(p)}: unknown tool Proctor::Tool::{t!r} (catalogued servers: {known})"
                for p, t in catalog.unknown_tools(est)
            ] + [
                f"{where(p)}: {k} is not a declared tool or argument (a has-test on it is always false)"
                for p, k in catalog.unknown_keys(est)
            ]
            if unknown:
                raise PolicyValidationError(
                    "policies name tools or arguments the bundle's tool catalogs do not declare",
                    diagnostics=tuple(unknown),
                )
        # 5. Annotations.
        policies: list[CompiledPolicy] = []
        seen: dict[str, str] = {}
        for policy_id in sorted(est, key=lambda p: int(p.removeprefix("policy"))):
            doc = est[policy_id]
            raw = doc.get("annotations", {})
            annotations, bad = read_annotations(raw, effect=doc["effect"])
            problems.extend(f"{where(policy_id)}: {b}" for b in bad)
            name = raw.get("id") or policy_id
            if name in seen:
                problems.append(f"{where(policy_id)}: @id {name!r} is also the id of {seen[name]}")
            seen[name] = policy_id
            index = int(policy_id.removeprefix("policy"))
            policies.append(CompiledPolicy(policy_id, name, doc["effect"], files[index], annotations, doc))
        if problems:
            raise PolicyValidationError("policy annotations are invalid", diagnostics=tuple(problems))
        probe_requests(schema, info, typed_tools=catalog is not None)
        slices = PolicySlices(policies, action_groups=info.action_groups, sliced=sliced)
        return cls(
            bundle=bundle,
            schema=schema,
            info=info,
            policies=policies,
            slices=slices,
            catalog=catalog,
            decision_cache=decision_cache,
        )

    # -- deciding ----------------------------------------------------------------------

    def _build_entities(self, principal: str, attrs: tuple[tuple[str, str], ...]) -> cedarpy.Entities:
        declared = self._info.principal_attrs
        text = principal_entity_json(principal, {k: v for k, v in attrs if k in declared})
        # Validating against the schema also adds the schema's action entities.
        try:
            return cedarpy.Entities.from_json_str(text, self._schema)
        except ValueError as e:
            raise PolicyError(f"principal {principal!r} does not conform to the bundle schema: {e}") from e

    def _check(self, request: PolicyRequest, now: int) -> Decision | str:
        # A malformed request is a deny that says why; so is one that cannot be hashed.
        # Otherwise the request's digest: every field Cedar will see is well-typed and in it.
        problem = request_problem(request, now)
        try:
            digest = request.digest() if problem is not None else request.wellformed_digest()
        except CanonicalizationError as e:
            return self._deny("", f"denied: the request is outside the canonical JSON subset: {e}", (str(e),))
        if problem is not None:
            return self._deny(digest, f"denied: malformed request: {problem}")
        missing = self._info.required_attrs.difference(request.principal_attrs)
        if missing:
            names = ", ".join(sorted(missing))
            return self._deny(digest, f"denied: the principal lacks attributes the schema requires: {names}")
        return digest

    def _prepare(
        self, request: PolicyRequest, now: int, digest: str
    ) -> Decision | tuple[str, dict[str, Any], cedarpy.PolicySet, cedarpy.Entities]:
        policies, reads, time_reads = self._slices.for_request(request.action, request.resource)
        catalog = self.catalog if request.action == "mcp.call" else None
        if catalog is None and len(policies) == 0:  # Cedar would find no permit, no error
            # (proctor.policy.slices); a catalogued call goes to Cedar, which checks its arguments.
            entities = self._principal_entities(request, digest)
            return entities if isinstance(entities, Decision) else self._deny(digest, _DEFAULT_DENY)
        # The fields the slice's policies read (None: all); "tool" always: Cedar checks it.
        context = build_context(request, now, reads, time_reads)
        if catalog is not None:
            # Checked whether or not a policy reads it: a call must fit its tool's catalog.
            try:
                context["tool"] = catalog.tool_context(request)
            except ArgumentsMismatchError as e:
                return self._deny(digest, f"denied: the call does not fit the tool catalog: {e}", (str(e),))
        cedar_request = {
            "principal": {"type": PRINCIPAL_TYPE, "id": request.principal},
            "action": _ACTION_UIDS[request.action],
            "resource": {"type": RESOURCE_TYPES[request.action], "id": request.resource},
            "context": orjson.dumps(context).decode(),
        }
        entities = self._principal_entities(request, digest)
        return entities if isinstance(entities, Decision) else (digest, cedar_request, policies, entities)

    def _principal_entities(self, request: PolicyRequest, digest: str) -> cedarpy.Entities | Decision:
        """The principal's entities, or the deny that says why they cannot be built."""
        try:
            return self._entities(request.principal, tuple(sorted(request.principal_attrs.items())))
        except PolicyError as e:
            return self._deny(digest, f"denied: {e}", (str(e),))

    def _deny(
        self, digest: str, reason: str, errors: Sequence[str] = (), names: Sequence[str] = ()
    ) -> Decision:
        return Decision(False, tuple(names), tuple(sorted(errors)), {}, self.bundle_digest, digest, reason)

    def _failed(self, request: Any, error: BaseException) -> Decision:
        message = f"{type(error).__name__}: {error}"
        digest = safe_request_digest(request) if isinstance(request, PolicyRequest) else ""
        reason = f"denied: an internal error occurred while deciding ({message}); errors deny"
        return Decision(False, (), (message,), {}, self.bundle_digest, digest, reason)

    def _read_determining(self, reasons: tuple[str, ...]) -> _Determining:
        # What the determining policies say, by their ids alone (kept per set): their names,
        # whether one has @cross_zone("true"), their obligations, the sentence of an allow.
        matched = sorted((self._by_id[p] for p in reasons), key=lambda p: p.name)
        names = tuple(p.name for p in matched)
        obligations = combine_obligations(p.annotations for p in matched)
        allowed = f"allowed by permit polic{'y' if len(names) == 1 else 'ies'} {_names(names)}"
        return names, any(p.annotations.cross_zone for p in matched), obligations, allowed

    def _interpret(self, request: PolicyRequest, digest: str, answer: CedarAnswer) -> Decision:
        errors = tuple(sorted(answer.errors))
        names, crosses, obligations, allowed = self._determining(answer.reasons)
        verdict = answer.decision
        if errors:
            culprits = sorted({self._name(m) for e in errors for m in _POLICY_IN_ERROR.findall(e)})
            where = f" in policy {_names(culprits)}" if culprits else ""
            kept = names if verdict == "Deny" else ()
            reason = f"denied: evaluation error{where} ({errors[0]}); any evaluation error denies"
            return Decision(False, kept, errors, {}, self.bundle_digest, digest, reason)
        if verdict == "Deny":
            if names:
                return self._deny(digest, f"denied by forbid policy {_names(names)}", names=names)
            return self._deny(digest, _DEFAULT_DENY)
        if verdict != "Allow":
            return self._deny(digest, f"denied: Cedar reached no decision ({verdict})")
        principal_zone = request.principal_attrs.get("zone", "")
        cross_zone = bool(request.zone) and request.zone != principal_zone
        if cross_zone and not crosses:
            reason = (
                f"denied: cross-zone request (principal zone {principal_zone!r}, environment zone "
                f"{request.zone!r}) and no determining permit policy ({_names(names)}) "
                'carries @cross_zone("true")'
            )
            return self._deny(digest, reason)
        return Decision(True, names, (), obligations, self.bundle_digest, digest, allowed)

    def _forbid_name(self, policy_id: str) -> str | None:
        policy = self._by_id.get(policy_id)
        return policy.name if policy is not None and policy.effect == "forbid" else None

    def _name(self, policy_id: str) -> str:
        policy = self._by_id.get(policy_id)
        return policy.name if policy is not None else policy_id

    def never_allowed(
        self, principal: str, attrs: Mapping[str, str], action: str, resource: str
    ) -> str | None:
        """Why a tool call is denied whatever its arguments and context, or ``None`` if
        some might allow it (:mod:`proctor.policy.visibility`). Never raises: a failure
        is a reason (the tool is hidden).

        Args:
            principal: the principal's name.
            attrs: its attributes (``role`` and ``zone`` included).
            action: ``mcp.call`` or ``tool.call``.
            resource: ``server/tool``.
        """
        try:
            if action not in ("mcp.call", "tool.call"):
                return f"only tool actions are judged without their context, found {action!r}"
            problem = request_problem(PolicyRequest(principal, attrs, action, resource), 0)
            if problem is not None:
                return f"malformed: {problem}"
            missing = self._info.required_attrs.difference(attrs)
            if missing:
                return f"the principal lacks attributes the schema requires: {', '.join(sorted(missing))}"
            if self.catalog is not None and action == "mcp.call":
                server, _, tool = resource.partition("/")
                if tool not in self.catalog.servers.get(server, {}):
                    return "it is not in the policy bundle's tool catalogs"
            entities = self._entities(principal, tuple(sorted(attrs.items())))
            policies = self._slices.for_request(action, resource).policies
            return never_allowed(policies, entities, principal, action, resource, forbids=self._forbid_name)
        except BaseException as e:  # noqa: BLE001 -- fail closed: what cannot be judged is hidden
            reraise_interrupts(e)
            return f"it could not be judged ({type(e).__name__}: {e})"

    def decide(self, request: PolicyRequest, *, now: int) -> Decision:
        """Decide one request. Never raises: any failure is a deny that says why.

        Args:
            request: the request.
            now: the decision time, unix seconds (UTC), an integer.

        Returns:
            The decision.
        """
        try:
            checked = self._check(request, now)
            if isinstance(checked, Decision):
                return checked
            key = self._cache.key(checked, now) if self._cache.enabled else None
            kept = self._cache.get(key) if key is not None else None
            if kept is not None:
                return kept
            prepared = self._prepare(request, now, checked)
            if isinstance(prepared, Decision):
                decision = prepared
            else:
                digest, cedar_request, policies, entities = prepared
                decision = self._interpret(request, digest, ask(cedar_request, policies, entities))
            # Only a decision reached without an exception is kept (a transient failure
            # must not be replayed); the key is sound by proctor.policy.decision_cache.
            if key is not None:
                self._cache.put(key, decision)
            return decision
        except BaseException as e:  # noqa: BLE001 -- fail closed: every failure is a deny that records it
            reraise_interrupts(e)
            return self._failed(request, e)

    def decide_batch(self, requests: Sequence[PolicyRequest], *, now: int) -> list[Decision]:
        """Decide many requests with Cedar's batch call; the same answers as :meth:`decide`.

        Requests are grouped by policy slice and principal (one batch call each).
        Never raises.

        Args:
            requests: the requests.
            now: the decision time for all of them, unix seconds (UTC).

        Returns:
            One decision per request, in order.
        """
        requests = list(requests)
        decisions: list[Decision | None] = [None] * len(requests)
        groups: dict[tuple[int, Any], list[tuple[int, str, dict[str, Any]]]] = {}
        handles: dict[tuple[int, Any], tuple[cedarpy.PolicySet, cedarpy.Entities]] = {}
        for i, request in enumerate(requests):
            try:
                checked = self._check(request, now)
                prepared = checked if isinstance(checked, Decision) else self._prepare(request, now, checked)
                if isinstance(prepared, Decision):
                    decisions[i] = prepared
                    continue
                digest, cedar_request, policies, entities = prepared
                key = (id(policies), id(entities))
                handles[key] = (policies, entities)
                groups.setdefault(key, []).append((i, digest, cedar_request))
            except BaseException as e:  # noqa: BLE001 -- fail closed
                reraise_interrupts(e)
                decisions[i] = self._failed(request, e)
        for key, members in groups.items():
            policies, entities = handles[key]
            try:
                answers = ask_batch([m[2] for m in members], policies, entities)
                for (i, digest, _), answer in zip(members, answers, strict=True):
                    decisions[i] = self._interpret(requests[i], digest, answer)
            except BaseException as e:  # noqa: BLE001 -- fail closed
                reraise_interrupts(e)
                for i, _, _ in members:
                    decisions[i] = self._failed(requests[i], e)
        return [d if d is not None else self._failed(None, PolicyError("no decision")) for d in decisions]

    def replay(self, request_json: Mapping[str, Any], *, now: int) -> Decision:
        """Re-evaluate a logged request (:meth:`PolicyRequest.to_json` form). Never raises.

        Args:
            request_json: the logged request.
            now: the ``now`` the logged decision used.

        Returns:
            The decision; a malformed document is a deny that says why.
        """
        try:
            request = PolicyRequest.from_json(request_json)
        except Exception as e:  # noqa: BLE001 -- fail closed
            return self._deny("", f"denied: the logged request is malformed: {e}", (str(e),))
        return self.decide(request, now=now)

    @property
    def cache(self) -> DecisionCache:
        """The engine's decision cache (:mod:`proctor.policy.decision_cache`): its hits and misses."""
        return self._cache

    @property
    def slice_count(self) -> int:
        """How many pre-parsed policy sets the engine evaluates against (1 when unsliced)."""
        return self._slices.slice_count
