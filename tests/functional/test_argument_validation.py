"""tools/call arguments are checked against the tool's inputSchema before anything goes upstream.

A refusal names the field and the rule, never the value the caller sent (arguments carry PII).
Callers speaking 2025-11-25 or later (both eras' current revisions) get it as a tool execution
error, a result with `isError` a model can read and correct (SEP-1303); a 2025-06-18 session a
400 with -32602, as its revision says. Arguments that are no object at all, or a schema that
cannot be applied, are -32602 in every revision. A refused call reaches no upstream and costs no
quota; a schema `$ref` to a URL is never fetched; valid arguments reach the upstream exactly as sent.
The upstream is a real MCP server on 127.0.0.1 whose tools/list serves the schemas below.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import GatewayConfig, parse_config
from tollway.http import create_app
from tollway.store import Stores

from tests.fixtures.recording_upstream import Caller, RecordingUpstream, serve_in_thread
from tests.unit.wire import assert_http_error

ERAS = ("legacy", "modern")
OLDER = "2025-06-18"
"""A 2025-era session of the revision before SEP-1303: refused arguments are -32602 there."""
REVISIONS = (*ERAS, OLDER)
EMAIL = "jane.doe@example.com"
LOOKUP_SCHEMA = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "enum": ["EMEA", "AMER", "APAC"]},
        "contact": {"type": "string"},
        "count": {"type": "integer"},
    },
    "required": ["region"],
    "additionalProperties": False,
}


class SchemaServer:
    """Serves a JSON Schema at any path over real HTTP and counts every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.url = ""
        self.app = Starlette(routes=[Route("/{path:path}", self._serve, methods=["GET", "POST"])])

    @contextlib.contextmanager
    def running(self) -> Iterator[SchemaServer]:
        with serve_in_thread(self.app) as base:
            self.url = f"{base}/schemas/remote.json"
            yield self

    async def _serve(self, request: Request) -> Response:
        self.hits.append(request.url.path)
        return JSONResponse({"type": "object", "properties": {"x": {"type": "string"}}})


class SchemaUpstream(RecordingUpstream):
    """A recording MCP server whose tools carry the input schemas of these tests; every call
    answers with its arguments as JSON text."""

    def __init__(self, remote_schema_url: str) -> None:
        super().__init__()
        self.schemas = {
            "lookup": LOOKUP_SCHEMA,
            "remote": {"type": "object", "allOf": [{"$ref": remote_schema_url}]},
        }

    def _answer(
        self, method: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[dict[str, Any] | None, dict[str, str]]:
        if method == "tools/list":
            tools = [{"name": n, "description": f"the {n} tool", "inputSchema": s} for n, s in self.schemas.items()]
            return {"tools": tools}, {}
        if method == "tools/call":
            text = json.dumps(params.get("arguments") or {}, sort_keys=True)
            return {"content": [{"type": "text", "text": text}], "isError": False}, {}
        return super()._answer(method, params, headers)


@pytest.fixture(scope="module")
def schema_server() -> Iterator[SchemaServer]:
    with SchemaServer().running() as server:
        yield server


@pytest.fixture(scope="module")
def upstream(schema_server: SchemaServer) -> Iterator[SchemaUpstream]:
    with SchemaUpstream(schema_server.url).running() as running:
        yield running  # type: ignore[misc]


def _config(url: str, **sections: Any) -> GatewayConfig:
    return parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "rec", "url": url}],
            "masking": {"enabled": False},
            **sections,
        }
    )


def _this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.stores = Stores.memory()
        self.client = TestClient(create_app(config, stores=self.stores, streaming=False), raise_server_exceptions=False)
        self.caller = Caller(self.client, None)
        self._sessions: dict[str, str] = {}

    def call(self, era: str, tool: str, arguments: Any) -> Any:
        """`era`: "modern", "legacy" (a 2025-11-25 session) or a 2025-era revision."""
        params = {"name": tool, "arguments": arguments}
        if era == "modern":
            return self.caller.modern("tools/call", params, request_id=11)
        version = c.LATEST_HANDSHAKE_VERSION if era == "legacy" else era
        if version not in self._sessions:
            self._sessions[version] = self.caller.open_session(version)
        return self.caller.legacy("tools/call", params, session=self._sessions[version], request_id=11, version=version)


@pytest.fixture
def gateway(upstream: SchemaUpstream) -> Iterator[Gateway]:
    gateway = Gateway(_config(upstream.url))
    with gateway.client:
        yield gateway


def _refused(response: Any, era: str, detail: str, *, upstream: RecordingUpstream) -> None:
    """Arguments the schema refuses, answered as `era`'s revision says; `detail`: where and which rule."""
    if era == OLDER:
        message = f"Invalid params: arguments of tool 'rec__lookup': {detail}"
        assert_http_error(response, 400, c.INVALID_PARAMS, message=message, request_id=11)
    else:
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["id"] == 11
        assert answer["result"]["isError"] is True
        assert answer["result"]["content"] == [
            {"type": "text", "text": f"Invalid arguments for tool 'rec__lookup': {detail}"}
        ]
    _nothing_leaked_or_sent(response, upstream)


def _malformed(response: Any, message: str, *, upstream: RecordingUpstream) -> None:
    """A request no revision lets through: -32602 whatever the caller speaks."""
    assert_http_error(response, 400, c.INVALID_PARAMS, message=message, request_id=11)
    _nothing_leaked_or_sent(response, upstream)


def _nothing_leaked_or_sent(response: Any, upstream: RecordingUpstream) -> None:
    assert EMAIL not in response.text
    assert "jane.doe" not in response.text
    assert upstream.calls("tools/call") == []


# --- what a refusal says ------------------------------------------------------------------------
@pytest.mark.parametrize("era", REVISIONS)
def test_a_missing_required_field_is_named_without_the_values_sent(
    gateway: Gateway, upstream: SchemaUpstream, era: str
) -> None:
    upstream.clear()

    response = gateway.call(era, "rec__lookup", {"contact": EMAIL})

    _refused(response, era, "arguments: missing required field 'region'", upstream=upstream)


@pytest.mark.parametrize("era", REVISIONS)
def test_a_field_of_the_wrong_type_is_named_with_its_type_not_its_value(
    gateway: Gateway, upstream: SchemaUpstream, era: str
) -> None:
    upstream.clear()

    response = gateway.call(era, "rec__lookup", {"region": "EMEA", "count": EMAIL})

    _refused(response, era, "arguments.count: must be of type integer", upstream=upstream)


@pytest.mark.parametrize("era", REVISIONS)
def test_a_value_outside_an_enum_names_the_rule_not_the_value(
    gateway: Gateway, upstream: SchemaUpstream, era: str
) -> None:
    upstream.clear()

    response = gateway.call(era, "rec__lookup", {"region": EMAIL})

    _refused(response, era, "arguments.region: fails the schema's 'enum' rule", upstream=upstream)


@pytest.mark.parametrize("era", REVISIONS)
def test_a_field_the_schema_does_not_allow_is_refused_without_naming_it(
    gateway: Gateway, upstream: SchemaUpstream, era: str
) -> None:
    upstream.clear()

    response = gateway.call(era, "rec__lookup", {"region": "EMEA", EMAIL: "x"})

    _refused(response, era, "arguments: has a field the schema does not allow", upstream=upstream)


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("arguments", [[EMAIL], EMAIL, 42], ids=["array", "string", "number"])
def test_arguments_that_are_not_an_object_are_refused_with_400(
    gateway: Gateway, upstream: SchemaUpstream, era: str, arguments: Any
) -> None:
    upstream.clear()

    response = gateway.call(era, "rec__lookup", arguments)

    _malformed(response, "Invalid params: params.arguments must be an object", upstream=upstream)


# --- a refused call costs nothing -----------------------------------------------------------------
@pytest.mark.parametrize("era", REVISIONS)
def test_a_refused_call_consumes_no_quota_and_records_no_usage(upstream: SchemaUpstream, era: str) -> None:
    quotas = {"plans": {"one-a-minute": {"tenant": {"per_minute": 1}}}, "default_plan": "one-a-minute"}
    gateway = Gateway(_config(upstream.url, quotas=quotas))
    upstream.clear()

    with gateway.client:
        refused = gateway.call(era, "rec__lookup", {"contact": EMAIL})
        usage_after_refusal = gateway.stores.usage.month(_this_month())
        admitted = gateway.call(era, "rec__lookup", {"region": "EMEA"})
        over = gateway.call(era, "rec__lookup", {"region": "EMEA"})

    if era == OLDER:
        assert_http_error(refused, 400, c.INVALID_PARAMS, contains="missing required field 'region'", request_id=11)
    else:
        assert refused.json()["result"]["isError"] is True
    assert usage_after_refusal == []
    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["result"]["isError"] is False
    assert_http_error(over, 429, c.RATE_LIMITED, request_id=11)
    assert len(upstream.calls("tools/call")) == 1
    usage = gateway.stores.usage.month(_this_month())  # the refusal's count is written at shutdown at the latest
    assert [(r.tool, r.calls, r.rejected) for r in usage] == [("rec__lookup", 1, 1)]


# --- no schema is fetched -------------------------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_a_schema_ref_to_a_url_is_never_fetched_and_the_call_is_refused_cleanly(
    gateway: Gateway, upstream: SchemaUpstream, schema_server: SchemaServer, era: str
) -> None:
    upstream.clear()
    schema_server.hits.clear()

    response = gateway.call(era, "rec__remote", {"x": 1})

    _malformed(response, "Invalid params: the input schema of tool 'rec__remote' cannot be checked", upstream=upstream)
    assert schema_server.hits == []


def test_a_tool_whose_schema_refers_to_a_url_is_still_listed(gateway: Gateway, schema_server: SchemaServer) -> None:
    schema_server.hits.clear()

    response = gateway.caller.modern("tools/list")

    assert response.status_code == 200, response.text
    tools = {tool["name"]: tool for tool in response.json()["result"]["tools"]}
    assert set(tools) == {"rec__lookup", "rec__remote"}
    assert tools["rec__remote"]["inputSchema"]["allOf"] == [{"$ref": schema_server.url}]
    assert schema_server.hits == []


# --- valid arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_valid_arguments_reach_the_upstream_unchanged(gateway: Gateway, upstream: SchemaUpstream, era: str) -> None:
    upstream.clear()
    arguments = {"region": "APAC", "contact": EMAIL, "count": 3}

    response = gateway.call(era, "rec__lookup", arguments)

    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"][0]["text"] == json.dumps(arguments, sort_keys=True)
    [sent] = upstream.calls("tools/call")
    params = json.loads(sent.body)["params"]
    assert params["name"] == "lookup"
    assert params["arguments"] == arguments


@pytest.mark.parametrize("era", ERAS)
def test_omitted_arguments_are_checked_as_an_empty_object(gateway: Gateway, upstream: SchemaUpstream, era: str) -> None:
    upstream.clear()
    params: dict[str, Any] = {"name": "rec__lookup"}

    if era == "modern":
        response = gateway.caller.modern("tools/call", params, request_id=11)
    else:
        response = gateway.caller.legacy("tools/call", params, session=gateway.caller.open_session(), request_id=11)

    _refused(response, era, "arguments: missing required field 'region'", upstream=upstream)
