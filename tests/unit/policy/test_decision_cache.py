"""The decision cache: a kept decision is exactly the one deciding afresh would give.

The key is the request's digest and the ``context.time`` fields the policies read
(found in their syntax trees); a transient failure is never kept; the cache is bounded.
"""

from __future__ import annotations

import random
from typing import Any

import cedarpy
import orjson
import pytest

from proctor.policy import DEFAULT_SCHEMA, PolicyBundle, PolicyEngine, PolicyRequest, _cedar
from proctor.policy.decision_cache import TIME_FIELDS, DecisionCache, time_fields_read

NOW = 1767225600  # 2026-01-01T00:00:00Z, a Thursday
HOUR = 3600

OFFICE_HOURS = (
    '@id("office") permit(principal, action == Proctor::Action::"exec", resource) '
    "when { context.time.hour >= 8 && context.time.hour < 18 };"
)


def engine(*texts: str, cache: int = 8192) -> PolicyEngine:
    files = {f"p{i}.cedar": text for i, text in enumerate(texts)}
    return PolicyEngine.compile(PolicyBundle(files, DEFAULT_SCHEMA), decision_cache=cache)


def request(*argv: str, **kw: Any) -> PolicyRequest:
    attrs = kw.pop("principal_attrs", {"role": "dev", "zone": "prod"})
    return PolicyRequest("alice", attrs, "exec", "/bin/id", argv or ("id",), **kw)


def fields(text: str) -> frozenset[str]:
    est = orjson.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
    return time_fields_read(est.values())


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('context.argv.contains("x")', set()),
        ("context.time.hour >= 8", {"hour"}),
        ('context["time"]["weekday"] < 5 && context.time.date like "2026-*"', {"weekday", "date"}),
        ("context.time.minute == 0 || context.time.hour == 1", {"minute", "hour"}),
        ("context.time.epoch > 0", set(TIME_FIELDS)),
        ('context.time == {"epoch": 0, "hour": 0, "minute": 0, "weekday": 3, "date": "1970-01-01"}', None),
        ("context.time has hour", None),
        ("context has time", None),
        ("(if context.argc > 1 then context.time else context.time).hour == 3", None),
    ],
    ids=["none", "hour", "indexed", "two", "epoch", "whole-record", "has", "context-whole", "if-record"],
)
def test_the_clock_fields_a_policy_reads_come_from_its_syntax_tree(
    condition: str, expected: set[str] | None
) -> None:
    """Each field read is found; any other use of the record (or the context) reads all of it."""
    text = f"permit(principal, action, resource) when {{ {condition} }};"
    assert fields(text) == (frozenset(TIME_FIELDS) if expected is None else frozenset(expected))


def test_a_decision_is_not_reused_across_a_clock_field_the_policy_reads() -> None:
    eng = engine(OFFICE_HOURS)
    assert eng.cache.fields == ("hour",)
    req = request()
    assert not eng.decide(req, now=NOW + 7 * HOUR + 3599).allow  # 07:59:59
    assert eng.decide(req, now=NOW + 8 * HOUR).allow  # 08:00:00: a miss, not the kept deny
    assert eng.decide(req, now=NOW + 8 * HOUR + 1800).allow  # same hour: kept
    assert not eng.decide(req, now=NOW + 18 * HOUR).allow
    assert (eng.cache.hits, eng.cache.misses) == (1, 3)


def test_kept_decisions_equal_fresh_ones_on_random_requests_and_times() -> None:
    """Against an engine that keeps nothing: identical decisions, whatever the order."""
    texts = (
        OFFICE_HOURS,
        '@id("weekend") forbid(principal, action, resource) when { context.time.weekday >= 5 };',
        '@id("db") permit(principal, action, resource) when { context.args has a1 && context.args.a1 == "db1" };',
        '@id("ops") permit(principal, action, resource) when { principal.role == "ops" && context.counters.rate_1m < 3 };',
    )
    cached, fresh = engine(*texts), engine(*texts, cache=0)
    rng = random.Random(20261204)
    seed = rng.getstate()
    times = [NOW + rng.randrange(14 * 86400) for _ in range(40)]
    for _ in range(600):
        req = request(
            "id",
            rng.choice(["db1", "db2"]),
            principal_attrs={"role": rng.choice(["dev", "ops"]), "zone": "prod"},
            counters={"rate_1m": rng.randrange(5)},
        )
        now = rng.choice(times)
        assert cached.decide(req, now=now) == fresh.decide(req, now=now), seed
    assert cached.cache.hits > 100  # the comparison covered kept decisions, not only misses
    assert len(fresh.cache) == 0


def test_a_malformed_request_is_judged_before_the_cache() -> None:
    """A request with a kept allow is still denied at a ``now`` outside the valid range."""
    eng = engine("permit(principal, action, resource) when { context.argc == 1 };")
    assert eng.cache.fields == ()  # the key is the digest alone
    req = request("id")
    assert eng.decide(req, now=NOW).allow
    for now in (-1, 2**63):
        decision = eng.decide(req, now=now)
        assert not decision.allow
        assert "now must be integer unix seconds" in decision.reason


def test_a_failure_while_deciding_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = engine(OFFICE_HOURS)
    req = request()
    real = _cedar._ask_one

    def explode(*_: Any, **__: Any) -> Any:
        raise RuntimeError("cedar exploded")

    monkeypatch.setattr(_cedar, "_ask_one", explode)
    failed = eng.decide(req, now=NOW + 9 * HOUR)
    assert not failed.allow
    assert failed.errors == ("RuntimeError: cedar exploded",)
    assert len(eng.cache) == 0
    monkeypatch.setattr(_cedar, "_ask_one", real)
    assert eng.decide(req, now=NOW + 9 * HOUR).allow


def test_the_cache_is_bounded_least_recently_used_out() -> None:
    eng = engine(OFFICE_HOURS, cache=2)
    a, b, c = request("id", "a"), request("id", "b"), request("id", "c")
    for req in (a, b, a, c):  # b is the least recently used when c arrives
        eng.decide(req, now=NOW)
    assert len(eng.cache) == 2
    hits = eng.cache.hits
    eng.decide(a, now=NOW)
    assert eng.cache.hits == hits + 1
    eng.decide(b, now=NOW)
    assert eng.cache.hits == hits + 1  # b was dropped: a miss


def test_a_new_bundle_starts_with_an_empty_cache() -> None:
    req = request()
    first = engine(OFFICE_HOURS)
    assert first.decide(req, now=NOW + 9 * HOUR).allow
    second = engine("forbid(principal, action, resource);", OFFICE_HOURS)
    assert not second.decide(req, now=NOW + 9 * HOUR).allow


@pytest.mark.parametrize("size", [-1, 1.5, "8"])
def test_a_cache_size_must_be_a_count(size: Any) -> None:
    with pytest.raises(ValueError, match="count of decisions"):
        DecisionCache(frozenset(), size)
