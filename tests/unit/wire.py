"""What every gateway error answer must look like on the wire, checked in one place."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_LEAKS = ("Traceback", 'File "', "Exception", "Error(", "httpx", "botocore", "pydantic")


def assert_error(
    status: int,
    headers: Mapping[str, str],
    body: str,
    *,
    expected_status: int,
    code: int,
    message: str | None = None,
    contains: str | None = None,
    request_id: Any = None,
) -> dict[str, Any]:
    """One well-formed JSON-RPC error object with the given status, code and message; returns `error`.

    `message` must match exactly, `contains` is a fragment. The body never carries Python
    exception text, a stack or a library's name.
    """
    assert status == expected_status, f"HTTP {status}: {body}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    for leak in _LEAKS:
        assert leak not in body, f"{leak!r} leaked into {body}"
    answer = json.loads(body)
    assert set(answer) == {"jsonrpc", "id", "error"}, answer
    assert answer["jsonrpc"] == "2.0"
    assert answer["id"] == request_id
    error = answer["error"]
    assert set(error) <= {"code", "message", "data"}, error
    assert isinstance(error["code"], int) and not isinstance(error["code"], bool)
    assert isinstance(error["message"], str) and error["message"]
    assert error["code"] == code, error
    if message is not None:
        assert error["message"] == message, error
    if contains is not None:
        assert contains in error["message"], error
    return error


def assert_http_error(response: Any, expected_status: int, code: int, **kwargs: Any) -> dict[str, Any]:
    """`assert_error` for an httpx / Starlette TestClient response."""
    return assert_error(
        response.status_code,
        response.headers,
        response.text,
        expected_status=expected_status,
        code=code,
        **kwargs,
    )
