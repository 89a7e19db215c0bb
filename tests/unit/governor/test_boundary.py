"""The HTTP error boundary's table (proctor.governor.boundary): every exception class
lives in proctor.errors and has its own row; the most specific row wins; anything else
is a plain 500 that is logged and says nothing."""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from typing import Any

import orjson
import pytest

import proctor
import proctor.errors
from proctor.errors import (
    AuthenticationError,
    BodyTooLargeError,
    CanonicalizationError,
    EventSizeError,
    ExecutionConflictError,
    HeadTooLargeError,
    LogAppendError,
    NoSuchTargetError,
    PolicyValidationError,
    PrincipalError,
    ProctorError,
    ProofRequestError,
    QuotaError,
    RequestLimitError,
    RequestShapeError,
    StoreConflictError,
    StreamLimitError,
    WarrantError,
)
from proctor.governor.boundary import STATUS, envelope, explain, refusal


def test_every_exception_class_is_defined_in_errors() -> None:
    outside = []
    for info in pkgutil.walk_packages(proctor.__path__, "proctor."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue  # a private module's exceptions never leave it
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not name.startswith("_")
                and info.name != "proctor.errors"
            ):
                outside.append(f"{info.name}.{name}")
    assert outside == []


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("proctor.governor.model", "RequestShapeError"),
        ("proctor.governor.limits", "RequestLimitError"),
        ("proctor.governor.limits", "BodyTooLargeError"),
        ("proctor.governor.limits", "HeadTooLargeError"),
        ("proctor.governor.stream", "StreamLimitError"),
        ("proctor.governor.executions", "ExecutionConflictError"),
        ("proctor.governor.admin", "NoSuchTargetError"),
        ("proctor.client", "GovernorError"),
    ],
)
def test_the_old_import_paths_name_the_same_classes(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is getattr(proctor.errors, name)


def test_every_exception_class_has_its_own_row() -> None:
    classes = {getattr(proctor.errors, name) for name in proctor.errors.__all__}
    assert set(STATUS) == classes


@pytest.mark.parametrize(
    ("exc", "status", "code", "evidence"),
    [
        (AuthenticationError("x", reason="stale"), 401, "unauthenticated", {"reason": "stale"}),
        (PrincipalError("x"), 403, "forbidden", {}),
        (NoSuchTargetError("x"), 404, "not-found", {}),
        (WarrantError("x", reason="expired"), 403, "warrant-rejected", {"reason": "expired"}),
        (QuotaError("x", quota="max_running", limit=2, found=2), 429, "quota",
         {"quota": "max_running", "limit": 2, "found": 2}),
        (QuotaError("x", quota="q", limit=1, found=1, retry_after=0.12345), 429, "quota", {"retry_after": 0.123}),
        (RequestShapeError("x"), 422, "bad-request", {}),
        (CanonicalizationError("x"), 422, "bad-request", {}),
        (EventSizeError("x"), 413, "too-large", {}),
        (RequestLimitError("x"), 400, "bad-request", {}),
        (BodyTooLargeError("x"), 413, "too-large", {}),
        (HeadTooLargeError("x"), 431, "head-too-large", {}),
        (StreamLimitError("x"), 429, "too-many-streams", {}),
        (ExecutionConflictError("x"), 409, "conflict", {}),
        (ProofRequestError("x"), 400, "bad-request", {}),
        (PolicyValidationError("x", diagnostics=("a", "b")), 422, "policy-invalid", {"diagnostics": ["a", "b"]}),
        (LogAppendError("x"), 503, "unavailable", {}),
        (StoreConflictError("x"), 503, "unavailable", {}),
        (ProctorError("x"), 503, "unavailable", {}),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)  # fmt: skip
def test_the_most_specific_row_answers(
    exc: ProctorError, status: int, code: str, evidence: dict[str, Any]
) -> None:
    got, payload = refusal(exc)
    body = orjson.loads(payload)
    assert got == status
    assert body["error"] == code
    assert body["message"] == "x"
    for key, value in evidence.items():
        assert body[key] == value
    assert body["detail"] == {k: v for k, v in body.items() if k != "detail"}


def test_a_subclass_without_a_row_takes_its_parents() -> None:
    class UnlistedError(NoSuchTargetError):
        pass

    assert refusal(UnlistedError("x"))[0] == 404


def test_an_exception_outside_the_tree_is_a_plain_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="proctor.governor"):
        status, payload = refusal(KeyError("secret"), where="GET /v1/x")
    assert status == 500
    assert orjson.loads(payload) == envelope("internal", "internal error")
    assert b"secret" not in payload
    [record] = caplog.records
    assert record.name == "proctor.governor"
    assert record.exc_info is not None
    assert "GET /v1/x" in record.getMessage()


def test_envelope_repeats_itself_under_detail() -> None:
    assert envelope("quota", "m", limit=1) == {
        "error": "quota",
        "message": "m",
        "limit": 1,
        "detail": {"error": "quota", "message": "m", "limit": 1},
    }


def test_parameter_errors_say_what_was_expected_and_found() -> None:
    errors: list[dict[str, Any]] = [
        {
            "type": "int_parsing",
            "loc": ("query", "since"),
            "msg": "Input should be a valid integer",
            "input": "abc",
        },
        {"type": "missing", "loc": ("query", "index"), "msg": "Field required", "input": None},
    ]
    assert (
        explain(errors)
        == "query.since: expected an integer, found 'abc'; query.index: expected a value, found nothing"
    )
