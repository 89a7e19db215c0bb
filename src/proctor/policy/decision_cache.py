"""A cache of decisions keyed by the exact request and the part of the clock policies read.

:meth:`PolicyEngine.decide <proctor.policy.engine.PolicyEngine.decide>` is a pure
function of the engine's bundle, the request and ``now``: the same three always give an
identical :class:`~proctor.policy.decision.Decision` (the engine reads no clock, no
state, nothing random). ``now`` reaches Cedar only through ``context.time`` (the
request's own validity check only needs ``now`` to be in range). So a decision can be
reused for a request whose digest is equal — the SHA-256 of its RFC 8785 form, which
covers every field Cedar sees: principal and attributes, action, resource, argv,
arguments, zone, digests, counters — at a ``now`` that agrees on every ``context.time``
field some policy reads.

Which fields are read comes from the policies' syntax trees (Cedar's JSON policy
format), never from a guess at their text:

1. every ``context.time.F`` (or ``context["time"]["F"]``) adds ``F``;
2. any other use of ``context.time`` (compared whole, tested with ``has``), or of
   ``context`` itself other than through an attribute, reads every field, as does a
   form this walk does not know — so the key is then ``now`` itself;
3. ``epoch`` determines every other field, so reading it keys on ``now`` too.

With no policy reading the time, the key is the request digest alone.

What is not cached: a decision the engine could not reach (an exception while deciding
is a deny that records it, and a transient failure must not be replayed), and requests
whose digest cannot be computed. The cache is bounded (least recently used out) and
belongs to one engine: a new bundle is a new engine with an empty cache. Hits and misses
are counted so that a benchmark reports them apart.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from proctor.policy.context import time_record
from proctor.policy.decision import Decision

__all__ = ["DECISION_CACHE_SIZE", "TIME_FIELDS", "DecisionCache", "time_fields_read"]

DECISION_CACHE_SIZE = 8192
"""How many decisions an engine keeps."""

TIME_FIELDS = ("epoch", "hour", "minute", "weekday", "date")
"""The fields of ``context.time`` (:func:`~proctor.policy.context.time_record`)."""

_ALL = frozenset(TIME_FIELDS)


def _is_var(node: Any, name: str) -> bool:
    return isinstance(node, Mapping) and node.get("Var") == name


def _walk(node: Any, found: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, found)
        return
    if not isinstance(node, Mapping):
        return
    time_node = {".": {"left": {"Var": "context"}, "attr": "time"}}
    if node == time_node or _is_var(node, "context"):
        found.add("epoch")  # 2. the record (or the whole context) used whole
        return
    if set(node) == {"."} and isinstance(node["."], Mapping):
        # {".": {"left": L, "attr": A}} is Cedar's JSON for L.A and L["A"].
        inner = node["."]
        left = inner.get("left")
        if left == time_node:
            attr = inner.get("attr")
            found.add(attr if isinstance(attr, str) and attr in _ALL else "epoch")  # 1.
            return
        if _is_var(left, "context"):
            return  # context.X for X other than time: no clock in it
        _walk(left, found)
        return
    for value in node.values():
        _walk(value, found)


def time_fields_read(policy_docs: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The ``context.time`` fields any of these policies reads (steps in the module docstring).

    Args:
        policy_docs: each policy in Cedar's JSON policy format (``conditions`` read).

    Returns:
        The field names; the whole of :data:`TIME_FIELDS` when the key must be ``now``.
    """
    found: set[str] = set()
    for doc in policy_docs:
        _walk(doc.get("conditions", []), found)
    return _ALL if "epoch" in found else frozenset(found)  # 3.


class DecisionCache:
    """A bounded, thread-safe map from (request digest, clock key) to a decision.

    Attributes:
        fields: the ``context.time`` fields that are part of the key (sorted).
        hits: lookups that found a decision.
        misses: lookups that did not.
    """

    def __init__(self, fields: frozenset[str], size: int = DECISION_CACHE_SIZE) -> None:
        if type(size) is not int or size < 0:
            raise ValueError(f"a decision cache size is a count of decisions (0: none), found {size!r}")
        self.fields = tuple(sorted(fields))
        self._by_now = fields == _ALL
        self._size = size
        self._entries: OrderedDict[tuple[str, Any], Decision] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """Whether decisions are kept at all (a size of 0 keeps none, and asks nothing)."""
        return self._size > 0

    def key(self, digest: str, now: int) -> tuple[str, Any]:
        """The key of a request with this digest decided at ``now``."""
        if self._by_now:
            return digest, now
        if not self.fields:
            return digest, None
        record = time_record(now)
        return digest, tuple(record[f] for f in self.fields)

    def get(self, key: tuple[str, Any]) -> Decision | None:
        """The decision kept under ``key``, or ``None`` (counted as a hit or a miss)."""
        with self._lock:
            decision = self._entries.get(key)
            if decision is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return decision

    def put(self, key: tuple[str, Any], decision: Decision) -> None:
        """Keep ``decision`` under ``key``, dropping the least recently used beyond the bound."""
        if not self._size:
            return
        with self._lock:
            self._entries[key] = decision
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every decision (the counts stay)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
