"""Slicing: evaluate each request only against the policies whose scope can match it.

Cedar evaluates every policy of a set for every request, about 0.7 µs each. Most
policies of a real bundle pin their action and often their resource in the scope
(``permit(principal, action == Proctor::Action::"exec", resource ==
Proctor::Executable::"/usr/bin/pg_dump") when …``), and a policy whose scope does not
match a request is not satisfied by it: it can neither determine the decision nor
raise an evaluation error (Cedar does not evaluate the conditions of a policy whose
scope does not match). Leaving such policies out therefore changes no answer.

Each policy is put, from its scope alone (the EST JSON of ``policies_to_json_str``),
in the slices it can match:

- action: ``action`` (unconstrained) → every action; ``action == A`` → ``A``;
  ``action in [A, B]`` → those actions, unless the schema declares action groups
  (``memberOf``), in which case every action (membership then depends on the
  hierarchy). Any other shape → every action.
- resource, for an action whose resource type is ``T`` (Executable or Tool):
  unconstrained or ``resource is T`` → every resource of the action;
  ``resource == T::"x"``, ``resource in T::"x"`` and ``resource is T in T::"x"`` → only
  resource ``x`` (proctor's resources are not in the entity store, so they have no
  ancestors and ``in`` is equality); a different entity type → none. Any other
  shape → every resource.

The slice for (action, resource) is then the action's unpinned policies plus those
pinned to that resource. Each distinct slice is one pre-parsed ``cedarpy.PolicySet``
built at compile time, keeping Cedar's policy ids, so decisions name the same ids
sliced or not.

Each slice also records which top-level ``context`` attributes its policies read
(:func:`context_reads`), and the engine passes Cedar only those. Cedar parses the
context into its values on every request, about 4 µs per attribute and more for
nested records: a slice that reads ``context.args`` is handed ``{"args": …}``, not
all eleven attributes. An attribute no policy of the slice names cannot change its
answer, and every attribute one names is given whole, nested records included, but for
``time``: a slice whose policies read only ``context.time.hour`` is handed ``{"hour":
…}``, as the decision cache keys on it (:func:`~proctor.policy.decision_cache.time_fields_read`:
a field named, or the whole record when it is used any other way). A
policy that uses ``context`` other than as ``context.A`` or ``context has A``
(compared whole, put in a record) makes its slices take the whole context. The one
attribute always given is a catalogued call's ``tool``: it holds the call's arguments,
which Cedar checks while it parses the context (a decimal's text, for one), and a
refusal there must not depend on which policies read them.

A request whose slice is empty (no policy's scope can match it) is denied by default
without asking Cedar, whose answer would be just that (no permit, no error); a
catalogued call is still handed over, for the check of its arguments above.

``tests/unit/policy/test_policy_slicing.py`` checks both against the unsliced
reference (every policy, the whole context) over generated policies and requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cedarpy
import orjson

from proctor.policy.decision_cache import TIME_FIELDS, time_fields_read
from proctor.policy.obligations import PolicyAnnotations
from proctor.policy.schema import ACTION_TYPE, ACTIONS, RESOURCE_TYPES

__all__ = [
    "CompiledPolicy",
    "Slice",
    "context_reads",
    "scope_actions",
    "scope_resource",
    "policy_set",
    "PolicySlices",
]

_ANY = "*"  # a resource slot that matches every resource of the action


@dataclass(frozen=True)
class CompiledPolicy:
    """One static policy of a compiled bundle.

    Attributes:
        policy_id: Cedar's id (``policy0`` …, positional over the concatenated files).
        name: the id decisions use: the ``@id`` annotation, else ``policy_id``.
        effect: ``"permit"`` or ``"forbid"``.
        file: the bundle file it came from.
        annotations: its parsed annotations (obligations, ``@cross_zone``).
        est: its Cedar EST JSON (what ``policies_to_json_str`` gives for it).
    """

    policy_id: str
    name: str
    effect: str
    file: str
    annotations: PolicyAnnotations
    est: Mapping[str, Any]


def scope_actions(scope: Mapping[str, Any], *, action_groups: bool) -> frozenset[str]:
    """The proctor actions a policy's action scope can match.

    Args:
        scope: the EST ``action`` scope.
        action_groups: whether the schema declares action groups.

    Returns:
        A subset of :data:`~proctor.policy.schema.ACTIONS` (all of them when unsure).
    """
    everything = frozenset(ACTIONS)
    op = scope.get("op")
    if op == "==" or (op == "in" and not action_groups):
        entities = scope.get("entities") if "entities" in scope else [scope.get("entity")]
        if type(entities) is not list or any(type(e) is not dict for e in entities):
            return everything
        return frozenset(e.get("id") for e in entities if e.get("type") == ACTION_TYPE) & everything
    return everything


def scope_resource(scope: Mapping[str, Any], resource_type: str) -> str | None:
    """Which resources of type ``resource_type`` a policy's resource scope can match.

    Args:
        scope: the EST ``resource`` scope.
        resource_type: the resource type of the action being sliced.

    Returns:
        ``"*"`` for every resource, a resource id for just that one, or ``None`` for none.
    """
    op = scope.get("op")
    entity: Any = None
    if op in ("==", "in") and "entity" in scope:
        entity = scope["entity"]
    elif op == "is":
        if scope.get("entity_type") != resource_type:
            return None
        inner = scope.get("in")
        if inner is None:
            return _ANY
        entity = inner.get("entity") if type(inner) is dict else None
    else:
        return _ANY  # unconstrained, or a shape not recognised: keep it everywhere
    if type(entity) is not dict or type(entity.get("id")) is not str:
        return _ANY
    if entity.get("type") != resource_type:
        return None
    resource_id: str = entity["id"]
    return resource_id


def policy_set(policies: Sequence[CompiledPolicy]) -> cedarpy.PolicySet:
    """A pre-parsed Cedar policy set of these policies, keeping their Cedar ids.

    Args:
        policies: the policies.

    Returns:
        The policy set.

    Raises:
        ValueError: Cedar rejects the JSON (not expected for policies it produced).
    """
    doc = {
        "staticPolicies": {p.policy_id: p.est for p in policies},
        "templates": {},
        "templateLinks": [],
    }
    return cedarpy.PolicySet.from_json_str(orjson.dumps(doc).decode())


def _reads(node: Any, found: set[str]) -> bool:
    # False: the context is used whole. Only Cedar's JSON for ``context.A`` (also
    # ``context["A"]``) and ``context has A`` names one attribute: {op: {"left": {"Var":
    # "context"}, "attr": A}}; a record literal's values are expressions, so it cannot
    # take this shape.
    if isinstance(node, list):
        return all(_reads(item, found) for item in node)
    if not isinstance(node, Mapping):
        return True
    if len(node) == 1:
        ((op, body),) = node.items()
        if (
            op in (".", "has")
            and isinstance(body, Mapping)
            and set(body) == {"left", "attr"}
            and body["left"] == {"Var": "context"}
            and isinstance(body["attr"], str)
        ):
            found.add(body["attr"])
            return True
        if op == "Var" and body == "context":
            return False
    return all(_reads(value, found) for value in node.values())


def context_reads(policy_docs: Sequence[Mapping[str, Any]]) -> frozenset[str] | None:
    """The top-level ``context`` attributes these policies can read.

    Args:
        policy_docs: each policy in Cedar's JSON policy format (all of it is walked).

    Returns:
        The attribute names, or ``None`` when one of them uses the context whole.
    """
    found: set[str] = set()
    if not all(_reads(doc, found) for doc in policy_docs):
        return None
    return frozenset(found)


class Slice(NamedTuple):
    """The policies one request is evaluated against.

    Attributes:
        policies: the pre-parsed policy set.
        reads: the ``context`` attributes they read (:func:`context_reads`); ``None``
            for the whole context.
        time_reads: the ``context.time`` fields they read; ``None`` for all of them.
    """

    policies: cedarpy.PolicySet
    reads: frozenset[str] | None
    time_reads: frozenset[str] | None = None


def _slice(policies: Sequence[CompiledPolicy]) -> Slice:
    docs = [p.est for p in policies]
    times = time_fields_read(docs)
    whole = times == frozenset(TIME_FIELDS)
    return Slice(policy_set(policies), context_reads(docs), None if whole else times)


class PolicySlices:
    """The pre-parsed policy sets a compiled bundle evaluates requests against.

    The per-action sets are built at once. A set for a pinned resource repeats the
    action's unpinned policies, so building every one of them costs (pinned resources) times
    (unpinned policies); they are built at once up to :attr:`EAGER_BUDGET` policies
    in total, and past that on first use (a one-time cost of about 8 µs per policy).

    Args:
        policies: every static policy of the bundle.
        action_groups: whether the schema declares action groups.
        sliced: ``False`` puts every policy in one set used for every request with
            the whole context (the reference the sliced evaluation is tested and
            benchmarked against).
    """

    EAGER_BUDGET = 200_000

    def __init__(self, policies: Sequence[CompiledPolicy], *, action_groups: bool, sliced: bool) -> None:
        self.sliced = sliced
        self._all = Slice(policy_set(policies), None)
        self._by_action: dict[str, Slice] = {}
        self._pinned: dict[tuple[str, str], Slice] = {}
        self._pending: dict[tuple[str, str], list[CompiledPolicy]] = {}
        self.unpinned: dict[str, int] = {}
        if not sliced:
            return
        budget = self.EAGER_BUDGET
        for action in ACTIONS:
            resource_type = RESOURCE_TYPES[action]
            unpinned: list[CompiledPolicy] = []
            pinned: dict[str, list[CompiledPolicy]] = {}
            for policy in policies:
                if action not in scope_actions(policy.est.get("action", {}), action_groups=action_groups):
                    continue
                slot = scope_resource(policy.est.get("resource", {}), resource_type)
                if slot == _ANY:
                    unpinned.append(policy)
                elif slot is not None:
                    pinned.setdefault(slot, []).append(policy)
            self._by_action[action] = _slice(unpinned)
            self.unpinned[action] = len(unpinned)
            for resource, extra in pinned.items():
                members = unpinned + extra
                if len(members) <= budget:
                    budget -= len(members)
                    self._pinned[(action, resource)] = _slice(members)
                else:
                    self._pending[(action, resource)] = members

    def for_request(self, action: str, resource: str) -> Slice:
        """The policies to evaluate a request for ``action`` on ``resource`` against.

        Args:
            action: one of the proctor actions.
            resource: the resource id.

        Returns:
            The slice (or every policy and the whole context, when not sliced).

        Raises:
            ValueError: building a deferred slice failed (not expected: Cedar built
                the same policies at compile time).
        """
        if not self.sliced:
            return self._all
        key = (action, resource)
        found = self._pinned.get(key)
        if found is not None:
            return found
        members = self._pending.get(key)
        if members is None:
            return self._by_action[action]
        # Deferred slice: build once. Two threads racing build equal sets; either wins.
        found = self._pinned[key] = _slice(members)
        return found

    @property
    def slice_count(self) -> int:
        """How many distinct policy sets there are (1 when unsliced)."""
        return 1 if not self.sliced else len(self._by_action) + len(self._pinned) + len(self._pending)
