"""The one place the engine asks Cedar for a decision, and reads its answer.

cedarpy's public ``is_authorized`` is a Python wrapper around a compiled function: it
copies the request, serialises a context given as a dict with ``json.dumps``, and turns
the compiled function's JSON answer into ``AuthzResult`` and ``Diagnostics`` objects with
``json.loads``. The engine already hands the context serialised (orjson, the fields its
policies read), so this module calls the compiled function, ``cedarpy._internal``'s
``is_authorized`` and ``is_authorized_batch``, and reads the answer with orjson itself:
a quarter of what a decision costs Cedar when several requests alternate (ADR 0025).

That function is not cedarpy's public API, so:

1. it is called only when cedarpy has it and its ``Entities`` handle the compiled handle
   it wraps (``_inner``), checked once at import; otherwise the public functions are
   called and their ``AuthzResult`` read into the same answer (:data:`DIRECT` says
   which; the tests run the engine's decisions through both and compare);
2. the answer is read strictly (:func:`read_answer`): anything but the shape below is
   an error, which the engine turns into a deny. So a binding that changed how it
   answers denies everything; it cannot allow what Cedar did not.

The shape read, from cedarpy 4.12's ``AuthzResult`` and its Rust source::

    {"decision": "Allow" | "Deny" | "NoDecision",
     "diagnostics": {"reason": [policy id, ...], "errors": [message, ...], ...}, ...}

``NoDecision`` (the request could not be built) may come without ``reason``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import cedarpy
import orjson

from proctor.errors import PolicyError

__all__ = ["DIRECT", "CedarAnswer", "ask", "ask_batch", "read_answer", "reraise_interrupts"]

VERDICTS = ("Allow", "Deny", "NoDecision")
_UNEXPECTED = "unexpected answer from Cedar"


class CedarAnswer(NamedTuple):
    """Cedar's answer to one request.

    Attributes:
        decision: ``"Allow"``, ``"Deny"`` or ``"NoDecision"``.
        reasons: the ids of the policies that determined it (Cedar's positional ids).
        errors: evaluation errors, as Cedar words them.
    """

    decision: str
    reasons: tuple[str, ...]
    errors: tuple[str, ...]


def reraise_interrupts(error: BaseException) -> None:
    """Raise ``error`` again unless deciding should turn it into a deny.

    A Rust panic in cedarpy is pyo3's ``PanicException``, a ``BaseException`` (so
    ``except Exception`` misses it): it must still become a deny. Interrupts and exits
    must not.
    """
    if not isinstance(error, Exception) and type(error).__name__ != "PanicException":
        raise error


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if type(value) is not list or any(type(item) is not str for item in value):
        raise PolicyError(f"{_UNEXPECTED}: expected {what} as a list of strings, found {value!r}")
    return tuple(value)


def read_answer(doc: Any) -> CedarAnswer:
    """Read one answer of the compiled binding, already parsed from its JSON.

    Args:
        doc: the parsed answer.

    Returns:
        The answer.

    Raises:
        PolicyError: the answer is not of the shape in the module docstring.
    """
    # 1. An object whose "decision" is one of the three verdicts.
    if type(doc) is not dict:
        raise PolicyError(f"{_UNEXPECTED}: expected a JSON object, found {doc!r}")
    decision = doc.get("decision")
    if decision not in VERDICTS:
        raise PolicyError(f"{_UNEXPECTED}: expected a decision in {VERDICTS}, found {decision!r}")
    # 2. Diagnostics: an object with the errors, and the reasons unless no decision was reached.
    diagnostics = doc.get("diagnostics")
    if type(diagnostics) is not dict or "errors" not in diagnostics:
        raise PolicyError(f"{_UNEXPECTED}: expected diagnostics with errors, found {diagnostics!r}")
    if decision != "NoDecision" and "reason" not in diagnostics:
        raise PolicyError(f"{_UNEXPECTED}: decision {decision!r} came without its reasons")
    reasons = _strings(diagnostics.get("reason", []), "reasons")
    errors = _strings(diagnostics["errors"], "errors")
    return CedarAnswer(decision, reasons, errors)


def _direct_available() -> bool:
    # 1. The compiled functions exist, an Entities handle wraps the compiled handle they
    # take, and one trivial request (no policy: Cedar's default deny) reads as expected.
    internal = getattr(cedarpy, "_internal", None)
    one = getattr(internal, "is_authorized", None)
    if not callable(one) or not callable(getattr(internal, "is_authorized_batch", None)):
        return False
    try:
        cedar_entities = cedarpy.Entities.from_json_str("[]")
        uid = {"type": "Probe", "id": "probe"}
        action = {"type": "Action", "id": "probe"}
        request = {"principal": uid, "action": action, "resource": uid, "context": "{}"}
        text = one(request, cedarpy.PolicySet.from_str(""), cedar_entities._inner, None, False)
        answer = read_answer(orjson.loads(text))
    except Exception:  # noqa: BLE001 -- any surprise: the public functions are used
        return False
    return answer == CedarAnswer("Deny", (), ())


DIRECT = _direct_available()
"""Whether the compiled function is called directly (else cedarpy's public functions)."""


def _public_text(result: cedarpy.AuthzResult) -> bytes:
    # The public objects, written back as the compiled function's JSON, read the same way.
    diagnostics = result.diagnostics
    doc = {
        "decision": result.decision.value,
        "diagnostics": {"reason": list(diagnostics.reasons), "errors": list(diagnostics.errors)},
    }
    return orjson.dumps(doc)


def _direct_one(
    request: dict[str, Any], policies: cedarpy.PolicySet, cedar_entities: cedarpy.Entities
) -> Any:
    return cedarpy._internal.is_authorized(request, policies, cedar_entities._inner, None, False)


def _public_one(request: dict[str, Any], policies: cedarpy.PolicySet, entities: cedarpy.Entities) -> Any:
    return _public_text(cedarpy.is_authorized(request, policies, entities))


def _direct_many(
    requests: list[dict[str, Any]], policies: cedarpy.PolicySet, cedar_entities: cedarpy.Entities
) -> list[str | bytes]:
    return list(cedarpy._internal.is_authorized_batch(requests, policies, cedar_entities._inner, None, False))


def _public_many(
    requests: list[dict[str, Any]], policies: cedarpy.PolicySet, entities: cedarpy.Entities
) -> list[str | bytes]:
    return [_public_text(r) for r in cedarpy.is_authorized_batch(requests, policies, entities)]


_ask_one: Callable[[dict[str, Any], cedarpy.PolicySet, cedarpy.Entities], str | bytes] = (
    _direct_one if DIRECT else _public_one
)
_ask_many: Callable[[list[dict[str, Any]], cedarpy.PolicySet, cedarpy.Entities], list[str | bytes]] = (
    _direct_many if DIRECT else _public_many
)


def ask(request: dict[str, Any], policies: cedarpy.PolicySet, entities: cedarpy.Entities) -> CedarAnswer:
    """Ask Cedar to decide one request.

    Args:
        request: principal, action and resource as ``{"type", "id"}``, and the context
            as a JSON string.
        policies: the pre-parsed policy set.
        entities: the pre-parsed entities.

    Returns:
        Cedar's answer.

    Raises:
        PolicyError: Cedar's answer is not of the expected shape. Whatever the binding
            raises is passed on (the engine denies on any exception).
    """
    return read_answer(orjson.loads(_ask_one(request, policies, entities)))


def ask_batch(
    requests: Sequence[dict[str, Any]], policies: cedarpy.PolicySet, entities: cedarpy.Entities
) -> list[CedarAnswer]:
    """Ask Cedar to decide several requests against the same policies and entities.

    Returns:
        One answer per request, in order.

    Raises:
        PolicyError: an answer is not of the expected shape, or their number is not the
            number of requests.
    """
    texts = _ask_many(list(requests), policies, entities)
    if len(texts) != len(requests):
        raise PolicyError(f"expected {len(requests)} answers from Cedar, found {len(texts)}")
    return [read_answer(orjson.loads(text)) for text in texts]
