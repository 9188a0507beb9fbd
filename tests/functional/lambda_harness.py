"""Drive functions/gateway/app.py the way Lambda does: API Gateway HTTP API (payload v2) events in,
response dicts out, against an in-process moto DynamoDB.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import importlib.util
import itertools
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tollway import spec as c
from tollway.routing.upstream import http_client

from tests.unit.wire import assert_error

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS = REPO_ROOT / "tests" / "events"
HANDLER_PATH = REPO_ROOT / "functions" / "gateway" / "app.py"
TABLE = "tollway-functional"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
_UNSET: Any = object()
_loaded = itertools.count(1)


def load_event(
    name: str,
    *,
    body: Any = _UNSET,
    headers: dict[str, str] | None = None,
    without: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An event from tests/events/<name>.json; `body` (JSON-encoded unless a string) and
    `headers` replace the fixture's, as API Gateway would have delivered them."""
    event = json.loads((EVENTS / f"{name}.json").read_text())
    if body is not _UNSET:
        raw = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        event["body"] = raw
        event["isBase64Encoded"] = False
        event["headers"]["content-length"] = str(len(raw.encode()))
    for key, value in (headers or {}).items():
        event["headers"][key.lower()] = value
    for key in without:
        event["headers"].pop(key, None)
    return event


def event_body(event: dict[str, Any]) -> dict[str, Any]:
    raw = event["body"]
    if event.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    return json.loads(raw)


@dataclass
class FakeLambdaContext:
    function_name: str = "tollway-gateway"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:tollway-gateway"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/tollway-gateway"
    log_stream_name: str = "2026/11/23/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass
class Answer:
    """What API Gateway would send back, decoded."""

    status: int
    headers: dict[str, str]
    body: str
    raw: dict[str, Any]

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def messages(self) -> list[dict[str, Any]]:
        """Every JSON-RPC message of the answer, whether sent as JSON or as SSE."""
        if self.content_type != c.CONTENT_TYPE_SSE:
            return [self.json()]
        messages = []
        for block in self.body.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in block.split("\n") if line.startswith("data:"))
            if data:
                messages.append(json.loads(data))
        return messages

    def final(self) -> dict[str, Any]:
        """The JSON-RPC response (the last message)."""
        return self.messages()[-1]

    def result(self) -> dict[str, Any]:
        final = self.final()
        assert "result" in final, final
        return final["result"]


def assert_lambda_error(answer: Answer, status: int, code: int, **kwargs: Any) -> dict[str, Any]:
    """`assert_error` (tests/unit/wire.py) for what the handler answered; returns `error`."""
    return assert_error(answer.status, answer.headers, answer.body, expected_status=status, code=code, **kwargs)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_handler(config_path: Path | str, table: str = TABLE, env: dict[str, str] | None = None) -> ModuleType:
    """Import functions/gateway/app.py afresh, as a new Lambda instance would (cold start).
    `config_path`: its TOLLWAY_CONFIG (a path, or e.g. `ssm:/name`); `env`: more of its environment."""
    spec = importlib.util.spec_from_file_location(f"tollway_gateway_app_{next(_loaded)}", HANDLER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    values = {"TOLLWAY_CONFIG": str(config_path), "TOLLWAY_TABLE": table, "AWS_LAMBDA_FUNCTION_NAME": "tollway-gateway"}
    with _environment({**values, **(env or {})}):
        spec.loader.exec_module(module)
    return module


class LambdaGateway:
    """One warm Lambda instance: the handler module, its event loop, and a count of its DynamoDB calls."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.app = module.app
        self.store = self.app.state.endpoint.store
        self.dynamodb_calls: list[str] = []
        """The session store's DynamoDB requests (`GetItem`, ...): the stores share one client,
        so they are counted where the session store makes them."""
        sessions = getattr(self.store, "inner", self.store)  # under its cache, if any
        request = sessions._request

        def counted(operation: str, **kwargs: Any) -> Any:
            self.dynamodb_calls.append("".join(part.title() for part in operation.split("_")))
            return request(operation, **kwargs)

        sessions._request = counted
        self.loop = asyncio.new_event_loop()

    def invoke(self, event: dict[str, Any]) -> Answer:
        # Lambda's runtime keeps one loop per instance; other tests may have cleared the thread's.
        asyncio.set_event_loop(self.loop)
        raw = self.module.handler(copy.deepcopy(event), FakeLambdaContext())
        body = raw.get("body", "")
        if raw.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        headers = {k.lower(): v for k, v in (raw.get("headers") or {}).items()}
        return Answer(status=raw["statusCode"], headers=headers, body=body, raw=raw)

    def close(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(_close_pool())
        # Lambda never closes its loop; closing it here, finalize the generators httpx leaves
        # suspended in a stream read up to our response (its response itself is closed).
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    # --- 2025 era ------------------------------------------------------------------------------
    def initialize(self) -> str:
        answer = self.invoke(load_event("initialize"))
        assert answer.status == 200, answer.body
        session = answer.headers[c.SESSION_ID_HEADER]
        initialized = load_event("initialized_notification", headers={c.SESSION_ID_HEADER: session})
        assert self.invoke(initialized).status == 202
        return session

    def legacy(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None,
        request_id: Any = 1,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        event = load_event("tools_list_legacy", body=body, headers=headers)
        if session is None:
            event["headers"].pop(c.SESSION_ID_HEADER)
        else:
            event["headers"][c.SESSION_ID_HEADER] = session
        return self.invoke(event)

    def delete(self, session: str) -> Answer:
        return self.invoke(load_event("delete_session", headers={c.SESSION_ID_HEADER: session}))

    # --- 2026-07-28 ----------------------------------------------------------------------------
    def modern(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        request_id: Any = 1,
        version: str = MODERN,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        meta = {
            c.META_PROTOCOL_VERSION: version,
            c.META_CLIENT_CAPABILITIES: {},
            c.META_CLIENT_INFO: {"name": "agent-under-test", "version": "1.4.0"},
        }
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**(params or {}), "_meta": meta}}
        routing = {c.PROTOCOL_VERSION_HEADER: version, c.METHOD_HEADER: method}
        name_key = c.NAME_BEARING_METHODS.get(method)
        if name_key and params and name_key in params:
            routing[c.NAME_HEADER] = params[name_key]
        return self.invoke(load_event("tools_list_modern", body=body, headers={**routing, **(headers or {})}))


async def _close_pool() -> None:
    await http_client().aclose()
