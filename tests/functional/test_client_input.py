"""Malformed client input is answered as the client's mistake, in both eras, never as an internal error.

Each case sends a raw body (lone UTF-16 surrogates, NaN and Infinity, deep nesting, params of
the wrong shape or missing, cursors the gateway never issued, session ids no store could hold)
and checks the exact JSON-RPC code, the HTTP status (400, or 404 for a session), the request id
where the gateway could read it, and that no Python exception text (not even a `None`) reaches
the caller. The gateway runs in-process in front of a real loopback upstream; the last tests send
a few of the same inputs through the Lambda handler (Mangum, API Gateway v2 events, DynamoDB in
moto).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import GatewayConfig, parse_config
from tollway.http import create_app
from tollway.store.sessions import MemorySessionStore

from tests.fixtures.recording_upstream import LEGACY, MODERN, Caller, RecordingUpstream
from tests.functional.lambda_harness import LambdaGateway, assert_lambda_error, load_event
from tests.unit.wire import assert_http_error

ACCEPT_BOTH = "application/json, text/event-stream"
ERAS = ("legacy", "modern")
CURSOR_MESSAGE = "Invalid params: cursor is not one this gateway issued"
SURROGATE = "@@SURROGATE@@"
"""Stands in a JSON text for `\\ud800` (an escape json.dumps would never write alone)."""


# --- the gateway ----------------------------------------------------------------------------------
def _config(upstream_url: str) -> GatewayConfig:
    return parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "rec", "url": upstream_url}],
            "masking": {"enabled": False},
        }
    )


class Client:
    """Raw bodies to the gateway, in either era (a 2025 session is opened once)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.caller = Caller(client, None)
        self.session = self.caller.open_session()

    def legacy_headers(self, **extra: str) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "accept": ACCEPT_BOTH,
            "mcp-session-id": self.session,
            "mcp-protocol-version": LEGACY,
            **extra,
        }

    @staticmethod
    def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": ACCEPT_BOTH,
            "mcp-protocol-version": MODERN,
            "mcp-method": method,
        }
        if name is not None:
            headers["mcp-name"] = name
        return headers

    def send(self, era: str, method: str, params: dict[str, Any], *, request_id: Any = 7, raw: Any = None) -> Any:
        """One request; `raw` (a str) replaces the JSON text of the whole body."""
        body = _body(era, method, params, request_id)
        text = raw(json.dumps(body)) if callable(raw) else json.dumps(body)
        name = params.get("name") if isinstance(params.get("name"), str) else None
        headers = self.legacy_headers() if era == "legacy" else self.modern_headers(method, name)
        return self.client.post("/mcp", content=text.encode(), headers=headers)


def _body(era: str, method: str, params: dict[str, Any], request_id: Any) -> dict[str, Any]:
    if era == "modern":
        meta = {
            c.META_PROTOCOL_VERSION: MODERN,
            c.META_CLIENT_CAPABILITIES: {},
            c.META_CLIENT_INFO: {"name": "client-input-tests", "version": "1"},
        }
        if "_meta" not in params:
            params = {**params, "_meta": meta}
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


@pytest.fixture(scope="module")
def gateway(recorder: RecordingUpstream) -> Iterator[Client]:
    app = create_app(_config(recorder.url), store=MemorySessionStore(), streaming=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Client(client)


def _with_surrogate(text: str) -> str:
    return text.replace(SURROGATE, "\\ud800")


DEEP = "@@DEEP@@"


def _deep(levels: int) -> Callable[[str], str]:
    """Puts an array nested `levels` deep where `DEEP` is (json.dumps itself would recurse)."""
    return lambda text: text.replace(f'"{DEEP}"', "[" * levels + "]" * levels)


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).decode()


# --- JSON itself ----------------------------------------------------------------------------------
SURROGATE_PLACES: dict[str, tuple[str, dict[str, Any]]] = {
    "method": (f"tools/{SURROGATE}", {}),
    "tool-name": ("tools/call", {"name": f"rec__{SURROGATE}", "arguments": {}}),
    "argument-value": ("tools/call", {"name": "rec__echo", "arguments": {"text": f"a{SURROGATE}b"}}),
    "object-key": ("tools/call", {"name": "rec__echo", "arguments": {f"k{SURROGATE}": "v"}}),
}


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("place", list(SURROGATE_PLACES))
def test_a_lone_surrogate_anywhere_in_the_body_is_a_parse_error(gateway: Client, era: str, place: str) -> None:
    method, params = SURROGATE_PLACES[place]

    response = gateway.send(era, method, params, raw=_with_surrogate)

    assert "\\ud800" in response.request.content.decode()
    assert_http_error(response, 400, c.PARSE_ERROR, message="Parse error: body is not valid JSON", request_id=None)


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["argument", "id", "meta"])
def test_nan_and_infinity_anywhere_in_the_body_are_a_parse_error(
    gateway: Client, era: str, constant: str, where: str
) -> None:
    params = {"name": "rec__echo", "arguments": {"n": "@@CONST@@"}}
    if where == "meta":
        params["_meta"] = {"progressToken": "@@CONST@@"}
        if era == "modern":
            params["_meta"].update({c.META_PROTOCOL_VERSION: MODERN, c.META_CLIENT_CAPABILITIES: {}})
    request_id: Any = "@@CONST@@" if where == "id" else 7

    response = gateway.send(
        era, "tools/call", params, request_id=request_id, raw=lambda text: text.replace('"@@CONST@@"', constant)
    )

    assert constant in response.request.content.decode()
    assert_http_error(response, 400, c.PARSE_ERROR, message="Parse error: body is not valid JSON", request_id=None)


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("levels", [101, 300, 600])
def test_a_body_nested_deeper_than_100_levels_is_an_invalid_request(gateway: Client, era: str, levels: int) -> None:
    response = gateway.send(era, "tools/call", {"name": "rec__echo", "arguments": {"deep": DEEP}}, raw=_deep(levels))

    assert_http_error(
        response, 400, c.INVALID_REQUEST, message="Invalid request: nested deeper than 100 levels", request_id=None
    )


@pytest.mark.parametrize("era", ERAS)
def test_a_body_nested_beyond_what_the_parser_recurses_is_the_same_invalid_request(gateway: Client, era: str) -> None:
    response = gateway.send(era, "tools/call", {"name": "rec__echo", "arguments": {"deep": DEEP}}, raw=_deep(100_000))

    assert_http_error(
        response, 400, c.INVALID_REQUEST, message="Invalid request: nested deeper than 100 levels", request_id=None
    )


# --- params of the wrong shape --------------------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("meta", ["envelope", 5, ["a"], True], ids=["string", "number", "array", "boolean"])
def test_params_meta_that_is_not_an_object_is_invalid_params(gateway: Client, era: str, meta: Any) -> None:
    response = gateway.send(era, "tools/list", {"_meta": meta})

    error = assert_http_error(response, 400, c.INVALID_PARAMS, request_id=7)
    assert "_meta" in error["message"]


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("arguments", [["a", "b"], "x=1", 5, True], ids=["array", "string", "number", "boolean"])
def test_tool_arguments_that_are_not_an_object_are_invalid_params(gateway: Client, era: str, arguments: Any) -> None:
    response = gateway.send(era, "tools/call", {"name": "rec__echo", "arguments": arguments})

    assert_http_error(
        response, 400, c.INVALID_PARAMS, message="Invalid params: params.arguments must be an object", request_id=7
    )
    assert "x=1" not in response.text


GOOD_ARGUMENT = {"name": "city", "value": "Par"}
BAD_COMPLETIONS: dict[str, dict[str, Any]] = {
    "ref-missing": {"argument": GOOD_ARGUMENT},
    "ref-not-an-object": {"ref": "ref/prompt:greet", "argument": GOOD_ARGUMENT},
    "ref-of-type-tool": {"ref": {"type": "ref/tool", "name": "rec__echo"}, "argument": GOOD_ARGUMENT},
    "prompt-ref-without-name": {"ref": {"type": "ref/prompt"}, "argument": GOOD_ARGUMENT},
    "argument-without-value": {"ref": {"type": "ref/prompt", "name": "rec__p"}, "argument": {"name": "city"}},
    "argument-value-not-a-string": {
        "ref": {"type": "ref/prompt", "name": "rec__p"},
        "argument": {"name": "city", "value": 5},
    },
}


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("case", list(BAD_COMPLETIONS))
def test_a_malformed_completion_request_is_invalid_params(gateway: Client, era: str, case: str) -> None:
    response = gateway.send(era, "completion/complete", BAD_COMPLETIONS[case])

    error = assert_http_error(response, 400, c.INVALID_PARAMS, request_id=7)
    assert error["message"].startswith("Invalid params: params.")


@pytest.mark.parametrize("level", ["verbose", 7, None, ["debug"]], ids=["unknown-name", "number", "null", "array"])
def test_set_level_with_a_level_that_is_not_one_of_the_eight_is_invalid_params(gateway: Client, level: Any) -> None:
    response = gateway.send("legacy", "logging/setLevel", {"level": level})

    error = assert_http_error(response, 400, c.INVALID_PARAMS, request_id=7)
    assert error["message"].startswith("Invalid params: params.level must be one of debug, info")


def test_set_level_debug_succeeds(gateway: Client) -> None:
    response = gateway.send("legacy", "logging/setLevel", {"level": "debug"})

    assert response.status_code == 200, response.text
    assert response.json() == {"jsonrpc": "2.0", "id": 7, "result": {}}


# --- cursors --------------------------------------------------------------------------------------
BAD_CURSORS: dict[str, Any] = {
    "number": 5,
    "object": {"rec": "x"},
    "array": ["rec"],
    "boolean": True,
    "empty-string": "",
    "json-10000-deep": _b64("[" * 10_000 + "]" * 10_000),
    "json-3000-deep-under-the-length-limit": _b64("[" * 3_000 + "]" * 3_000),
    "object-3000-deep": _b64('{"rec":' * 3_000 + '"x"' + "}" * 3_000),
    "garbage-bytes": _b64(bytes(range(256))),
    "garbage-text": _b64("this is not json at all"),
    "not-base64": "%%%***",
    "non-ascii": "cürsor",
}


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("case", list(BAD_CURSORS))
def test_a_list_cursor_the_gateway_did_not_issue_is_invalid_params(gateway: Client, era: str, case: str) -> None:
    response = gateway.send(era, "tools/list", {"cursor": BAD_CURSORS[case]})

    assert_http_error(response, 400, c.INVALID_PARAMS, message=CURSOR_MESSAGE, request_id=7)


# --- session ids ----------------------------------------------------------------------------------
BAD_SESSION_IDS: dict[str, bytes] = {
    "10000-characters": b"s" * 10_000,
    "space": b"sess ion",
    "tab": b"sess\tion",
    "delete-character": b"sess\x7fion",
    "latin-1": b"sess\xefion",
}


@pytest.mark.parametrize("case", list(BAD_SESSION_IDS))
def test_a_session_id_no_gateway_could_have_issued_is_session_not_found(gateway: Client, case: str) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}})
    headers: dict[str, Any] = {**gateway.legacy_headers(), "mcp-session-id": BAD_SESSION_IDS[case]}

    response = gateway.client.post("/mcp", content=body, headers=headers)

    assert_http_error(response, 404, c.INVALID_REQUEST, message="Session not found", request_id=7)


@pytest.mark.parametrize("case", ["10000-characters", "space", "latin-1"])
def test_deleting_a_session_id_no_gateway_could_have_issued_is_session_not_found(gateway: Client, case: str) -> None:
    headers: dict[str, Any] = {**gateway.legacy_headers(), "mcp-session-id": BAD_SESSION_IDS[case]}

    response = gateway.client.delete("/mcp", headers=headers)

    assert_http_error(response, 404, c.INVALID_REQUEST, message="Session not found")


def test_the_session_still_works_after_all_of_that(gateway: Client) -> None:
    response = gateway.send("legacy", "tools/call", {"name": "rec__echo", "arguments": {"ok": True}})

    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"][0]["text"] == '{"ok": true}'


# --- the same through the Lambda handler ----------------------------------------------------------
@pytest.fixture(scope="module")
def lambda_gateway(
    recorder: RecordingUpstream, start_gateway: Callable[[GatewayConfig], LambdaGateway]
) -> LambdaGateway:
    return start_gateway(_config(recorder.url))


def _lambda_modern(gateway: LambdaGateway, method: str, params: dict[str, Any], raw: Any = None) -> Any:
    text = json.dumps(_body("modern", method, params, 7))
    headers = {c.PROTOCOL_VERSION_HEADER: MODERN, c.METHOD_HEADER: method}
    if isinstance(params.get("name"), str):
        headers[c.NAME_HEADER] = params["name"]
    return gateway.invoke(load_event("tools_list_modern", body=raw(text) if raw else text, headers=headers))


def _lambda_legacy(gateway: LambdaGateway, session: str, method: str, params: dict[str, Any], raw: Any = None) -> Any:
    text = json.dumps(_body("legacy", method, params, 7))
    event = load_event("tools_list_legacy", body=raw(text) if raw else text, headers={c.SESSION_ID_HEADER: session})
    return gateway.invoke(event)


def test_through_lambda_a_lone_surrogate_is_a_parse_error_in_both_eras(lambda_gateway: LambdaGateway) -> None:
    session = lambda_gateway.initialize()
    params = {"name": "rec__echo", "arguments": {"text": f"a{SURROGATE}b"}}

    modern = _lambda_modern(lambda_gateway, "tools/call", params, raw=_with_surrogate)
    legacy = _lambda_legacy(lambda_gateway, session, "tools/call", params, raw=_with_surrogate)

    for answer in (modern, legacy):
        assert_lambda_error(answer, 400, c.PARSE_ERROR, message="Parse error: body is not valid JSON", request_id=None)


@pytest.mark.parametrize("constant", ["NaN", "-Infinity"])
def test_through_lambda_nan_and_infinity_are_a_parse_error(lambda_gateway: LambdaGateway, constant: str) -> None:
    params = {"name": "rec__echo", "arguments": {"n": "@@CONST@@"}}

    answer = _lambda_modern(lambda_gateway, "tools/call", params, raw=lambda t: t.replace('"@@CONST@@"', constant))

    assert_lambda_error(answer, 400, c.PARSE_ERROR, message="Parse error: body is not valid JSON", request_id=None)


def test_through_lambda_a_deep_body_is_an_invalid_request(lambda_gateway: LambdaGateway) -> None:
    params = {"name": "rec__echo", "arguments": {"d": DEEP}}

    answer = _lambda_modern(lambda_gateway, "tools/call", params, raw=_deep(300))

    assert_lambda_error(answer, 400, c.INVALID_REQUEST, message="Invalid request: nested deeper than 100 levels")


@pytest.mark.parametrize("case", ["json-10000-deep", "json-3000-deep-under-the-length-limit", "garbage-bytes"])
def test_through_lambda_a_forged_cursor_is_invalid_params(lambda_gateway: LambdaGateway, case: str) -> None:
    answer = _lambda_modern(lambda_gateway, "tools/list", {"cursor": BAD_CURSORS[case]})

    assert_lambda_error(answer, 400, c.INVALID_PARAMS, message=CURSOR_MESSAGE, request_id=7)


def test_through_lambda_arguments_that_are_not_an_object_are_invalid_params(lambda_gateway: LambdaGateway) -> None:
    session = lambda_gateway.initialize()
    params = {"name": "rec__echo", "arguments": ["a"]}

    for answer in (
        _lambda_modern(lambda_gateway, "tools/call", params),
        _lambda_legacy(lambda_gateway, session, "tools/call", params),
    ):
        assert_lambda_error(
            answer, 400, c.INVALID_PARAMS, message="Invalid params: params.arguments must be an object", request_id=7
        )


def test_a_tool_call_without_a_name_does_not_show_a_python_none(lambda_gateway: LambdaGateway) -> None:
    answer = lambda_gateway.modern("tools/call", {"arguments": {}}, request_id=3)

    error = assert_lambda_error(answer, 400, c.INVALID_PARAMS, request_id=3)
    assert "None" not in error["message"], error


@pytest.mark.parametrize("session", ["s" * 10_000, "sess ion", "sess\x7fion"], ids=["10000-characters", "space", "del"])
def test_through_lambda_a_session_id_dynamodb_could_not_hold_is_session_not_found_not_503(
    lambda_gateway: LambdaGateway, session: str
) -> None:
    calls_before = len(lambda_gateway.dynamodb_calls)

    answer = _lambda_legacy(lambda_gateway, session, "tools/list", {})
    deleted = lambda_gateway.delete(session)

    assert_lambda_error(answer, 404, c.INVALID_REQUEST, message="Session not found", request_id=7)
    assert_lambda_error(deleted, 404, c.INVALID_REQUEST, message="Session not found")
    assert lambda_gateway.dynamodb_calls[calls_before:] == []
