"""Upstream tools that ask the client for input, through the gateway, with the official SDK client.

A 2025-era client answers the upstream's elicitation/create and sampling/createMessage requests,
which the gateway relays on the call's SSE stream and routes back to the upstream session. A
2026-07-28 client answers input_required results: the gateway passes them through and forwards
the client's retry (inputResponses + requestState) to the upstream.

The upstream is tests/fixtures/conformance_upstream.py, mounted as `conf` (the gateway speaks the
client's era to it), `old` (2025 era only), `new` (2026-07-28 only) and `brief` (short upstream
timeout).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    LoggingMessageNotificationParams,
    TextContent,
)

if TYPE_CHECKING:
    from tests.e2e.conftest import InteractiveGateway

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

TIMEOUT = 30  # seconds per test body


class User:
    """Stands in for the person and the model behind a client: answers and remembers every question."""

    def __init__(self, answers: dict[str, dict[str, Any]] | None = None, model_says: str = "Paris") -> None:
        self.answers = answers or {}
        self.model_says = model_says
        self.questions: list[str] = []
        self.prompts: list[str] = []

    async def elicit(self, context: Any, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        self.questions.append(params.message)
        for fragment, content in self.answers.items():
            if fragment in params.message:
                if content.get("action") == "decline":
                    return ElicitResult(action="decline")
                if content.get("action") == "error":
                    return ErrorData(code=-32603, message="user closed the dialog")
                return ElicitResult(action="accept", content=content)
        return ElicitResult(action="cancel")

    async def sample(self, context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        content = params.messages[0].content
        assert isinstance(content, TextContent)
        self.prompts.append(content.text)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=self.model_says), model="test-model"
        )


def client(gateway: InteractiveGateway, mode: str, user: User) -> Client:
    return Client(
        gateway.url,
        mode=mode,
        read_timeout_seconds=15,
        elicitation_callback=user.elicit,
        sampling_callback=user.sample,
    )


def text_of(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


# --- 2025 era: server-to-client requests relayed on the session ----------------------------------
async def test_a_2025_client_answers_an_upstream_elicitation_and_the_tool_uses_the_answer(
    interactive_gateway: InteractiveGateway,
) -> None:
    user = User({"Who are you?": {"username": "ada", "email": "ada@example.com"}})
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "legacy", user) as session:
            result = await session.call_tool("conf__test_elicitation", {"message": "Who are you?"})

    assert user.questions == ["Who are you?"]
    assert not result.is_error
    assert text_of(result) == 'User response: action=accept, content={"username": "ada", "email": "ada@example.com"}'


async def test_a_2025_clients_declined_elicitation_reaches_the_tool_as_a_decline(
    interactive_gateway: InteractiveGateway,
) -> None:
    user = User({"Share your email?": {"action": "decline"}})
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "legacy", user) as session:
            result = await session.call_tool("conf__test_elicitation", {"message": "Share your email?"})

    assert user.questions == ["Share your email?"]
    assert text_of(result) == "User response: action=decline, content={}"


async def test_a_2025_clients_refusal_to_answer_fails_the_call_with_its_reason(
    interactive_gateway: InteractiveGateway,
) -> None:
    user = User({"Anyone there?": {"action": "error"}})
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "legacy", user) as session:
            with pytest.raises(MCPError, match="user closed the dialog"):
                await session.call_tool("conf__test_elicitation", {"message": "Anyone there?"})
            # The session is still good afterwards.
            after = await session.call_tool("conf__test_simple_text", {})

    assert user.questions == ["Anyone there?"]
    assert text_of(after) == "This is a simple text response for testing."


async def test_a_2025_client_answers_an_upstream_sampling_request_and_the_tool_uses_the_completion(
    interactive_gateway: InteractiveGateway,
) -> None:
    user = User(model_says="Canberra")
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "legacy", user) as session:
            result = await session.call_tool("conf__test_sampling", {"prompt": "Capital of Australia?"})

    assert user.prompts == ["Capital of Australia?"]
    assert not result.is_error
    assert text_of(result) == "LLM response: Canberra"


async def test_concurrent_elicitations_in_one_2025_session_are_answered_to_the_right_calls(
    interactive_gateway: InteractiveGateway,
) -> None:
    names = ["ada", "grace", "alan"]
    user = User({f"name {n}?": {"username": n, "email": f"{n}@example.com"} for n in names})
    results: dict[str, str] = {}

    async def ask(session: Client, name: str) -> None:
        results[name] = text_of(await session.call_tool("conf__test_elicitation", {"message": f"name {name}?"}))

    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "legacy", user) as session, anyio.create_task_group() as tasks:
            for name in names:
                tasks.start_soon(ask, session, name)

    assert sorted(user.questions) == sorted(f"name {n}?" for n in names)
    assert results == {
        n: f'User response: action=accept, content={{"username": "{n}", "email": "{n}@example.com"}}' for n in names
    }


# --- 2026-07-28: input_required round trips -----------------------------------------------------------
async def test_a_2026_client_answers_an_input_required_elicitation_and_the_tool_uses_the_answer(
    interactive_gateway: InteractiveGateway,
) -> None:
    user = User({"What is your name?": {"name": "Grace"}})
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "2026-07-28", user) as session:
            result = await session.call_tool("conf__test_input_required_result_elicitation", {})

    assert user.questions == ["What is your name?"]
    assert not result.is_error
    assert text_of(result) == "Hello, Grace!"


async def test_a_2026_client_answers_an_input_required_sampling_request_and_the_tool_uses_the_completion(
    interactive_gateway: InteractiveGateway,
) -> None:
    user = User(model_says="Paris, of course")
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "2026-07-28", user) as session:
            result = await session.call_tool("conf__test_input_required_result_sampling", {})

    assert user.prompts == ["What is the capital of France?"]
    assert text_of(result) == "Model said: Paris, of course"


async def test_a_2026_client_goes_through_several_input_rounds_carried_by_request_state(
    interactive_gateway: InteractiveGateway,
) -> None:
    user = User({"name?": {"name": "Alan"}, "color?": {"color": "teal"}})
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "2026-07-28", user) as session:
            rounds = await session.call_tool("conf__test_input_required_result_multi_round", {})
            confirmed = await session.call_tool("conf__test_input_required_result_request_state", {})

    assert user.questions == ["Step 1: What is your name?", "Step 2: What is your favorite color?", "Please confirm"]
    assert text_of(rounds) == "Alan likes teal."
    # The upstream sees its own requestState again only if the gateway forwarded it byte for byte.
    assert text_of(confirmed) == "state-ok: confirmation received"


async def test_a_2026_client_answers_input_required_on_a_prompt(interactive_gateway: InteractiveGateway) -> None:
    user = User({"What context": {"context": "quarterly review"}})
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "2026-07-28", user) as session:
            prompt = await session.get_prompt("conf__test_input_required_result_prompt", {})

    assert user.questions == ["What context should the prompt use?"]
    [message] = prompt.messages
    assert isinstance(message.content, TextContent)
    assert message.content.text == "Use the following context: quarterly review"


async def test_a_2026_client_reaches_an_upstream_spoken_to_only_at_2026_07_28(
    interactive_gateway: InteractiveGateway,
) -> None:
    user = User({"What is your name?": {"name": "Grace"}})
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "2026-07-28", user) as session:
            result = await session.call_tool("new__test_input_required_result_elicitation", {})

    assert text_of(result) == "Hello, Grace!"


# --- across eras ----------------------------------------------------------------------------------------
async def test_a_2026_client_is_told_a_2025_only_upstream_cannot_ask_it_anything(
    interactive_gateway: InteractiveGateway,
) -> None:
    """By design: a stateless client has no stream on which a mid-call server request could reach it,
    and the upstream's call cannot be held open across the client's input_required retries (each
    retry may land on another Lambda instance). The gateway declines the request for the client."""
    user = User({"Who are you?": {"username": "ada", "email": "ada@example.com"}})
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "2026-07-28", user) as session:
            with pytest.raises(MCPError, match="Client requests are not available through the gateway"):
                await session.call_tool("old__test_elicitation", {"message": "Who are you?"})
            after = await session.call_tool("old__test_simple_text", {})

    assert user.questions == []
    assert text_of(after) == "This is a simple text response for testing."


async def test_a_2025_client_is_told_when_a_2026_only_upstream_needs_input_it_cannot_relay(
    interactive_gateway: InteractiveGateway,
) -> None:
    """The upstream answers input_required, a result a 2025-era client cannot parse: the client gets
    a JSON-RPC error saying why, never the 2026-only result shape."""
    user = User({"What is your name?": {"name": "Grace"}})
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "legacy", user) as session:
            with pytest.raises(MCPError, match="cannot be relayed to a 2025-era session"):
                await session.call_tool("new__test_input_required_result_elicitation", {})
            after = await session.call_tool("new__test_simple_text", {})

    assert user.questions == []
    assert text_of(after) == "This is a simple text response for testing."


@pytest.mark.parametrize(
    ("log_level", "expected"),
    [
        (None, []),
        ("info", ["Tool execution started", "Tool processing data", "Tool execution completed"]),
        ("error", []),
    ],
)
async def test_a_2026_client_gets_a_2025_only_upstreams_log_messages_only_at_the_level_it_opted_in_to(
    interactive_gateway: InteractiveGateway, log_level: str | None, expected: list[str]
) -> None:
    logs: list[Any] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    opt_in = {"log_level": log_level} if log_level else {}
    with anyio.fail_after(TIMEOUT):
        async with Client(
            interactive_gateway.url, mode="2026-07-28", read_timeout_seconds=15, logging_callback=on_log, **opt_in
        ) as session:
            result = await session.call_tool("old__test_tool_with_logging", {})

    assert text_of(result) == "Tool with logging executed successfully"
    assert logs == expected


# --- resilience ----------------------------------------------------------------------------------------
async def test_a_2025_session_survives_an_upstream_restart_and_can_still_be_asked(
    interactive_gateway: InteractiveGateway,
) -> None:
    user = User({"Still there?": {"username": "ada", "email": "ada@example.com"}})
    with anyio.fail_after(TIMEOUT):
        async with client(interactive_gateway, "legacy", user) as session:
            before = await session.call_tool("conf__test_simple_text", {})
            # The upstream forgets every session it had; the gateway must open a new one for this client.
            await anyio.to_thread.run_sync(interactive_gateway.upstream.restart)
            after = await session.call_tool("conf__test_elicitation", {"message": "Still there?"})

    assert text_of(before) == "This is a simple text response for testing."
    assert user.questions == ["Still there?"]
    assert text_of(after) == 'User response: action=accept, content={"username": "ada", "email": "ada@example.com"}'


async def test_a_person_may_take_longer_than_the_upstream_timeout_to_answer_an_elicitation(
    interactive_gateway: InteractiveGateway,
) -> None:
    """`timeout_seconds` bounds the upstream's own work, not the time a person spends on a form."""
    user = User({"Take your time": {"username": "slow", "email": "slow@example.com"}})

    async def slow_person(context: Any, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        await anyio.sleep(interactive_gateway.short_timeout + 1.5)
        return await user.elicit(context, params)

    with anyio.fail_after(TIMEOUT):
        async with Client(
            interactive_gateway.url, mode="legacy", read_timeout_seconds=15, elicitation_callback=slow_person
        ) as session:
            result = await session.call_tool("brief__test_elicitation", {"message": "Take your time"})

    assert user.questions == ["Take your time"]
    assert text_of(result) == 'User response: action=accept, content={"username": "slow", "email": "slow@example.com"}'


async def test_a_2025_call_whose_upstream_closes_its_stream_before_answering_is_resumed_and_answered(
    interactive_gateway: InteractiveGateway,
) -> None:
    """The fixture's test_reconnection closes its event stream mid-call (SEP-1699 polling): the
    gateway resumes it from the upstream with GET and Last-Event-ID, closes the caller's stream
    there too, and the SDK client resumes that one the same way and gets the result."""
    log = interactive_gateway.gateway.log
    resumed_before = log.read_text().count("request stream resumed")
    logs: list[str] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    with anyio.fail_after(TIMEOUT):
        async with Client(
            interactive_gateway.url, mode="legacy", read_timeout_seconds=15, logging_callback=on_log
        ) as session:
            result = await session.call_tool("conf__test_reconnection", {})

    assert not result.is_error
    assert text_of(result) == "Reconnection test completed"
    assert logs == ["Before disconnect", "After reconnect"]
    assert log.read_text().count("request stream resumed") == resumed_before + 1  # by the client's GET


# --- 2025 era: a request stream the gateway closes mid-call, resumed by raw HTTP ------------------
RESUMABLE = "2025-11-25"
STREAM_ID = re.compile(r"^(\d{16}-[0-9a-f]{8})/\1$")


def sse_events(body: str) -> list[tuple[str | None, str]]:
    """(id, data) of each event of an event-stream body, in order; `retry` and comments left out."""
    events: list[tuple[str | None, str]] = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = block.split("\n")
        data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
        ids = [line[3:].removeprefix(" ") for line in lines if line.startswith("id:")]
        if data or ids:
            events.append((ids[-1] if ids else None, "\n".join(data)))
    return events


def open_raw_session(http: httpx.Client, url: str, version: str) -> dict[str, str]:
    """The headers of a fresh 2025-era session at `version` (initialize + initialized)."""
    init = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    answer = http.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
    assert answer.status_code == 200, answer.text
    headers = {"mcp-session-id": answer.headers["mcp-session-id"], "mcp-protocol-version": version}
    done = http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert done.status_code == 202, done.text
    return headers


def reconnection_call(http: httpx.Client, url: str, session: dict[str, str], accept: str) -> httpx.Response:
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "conf__test_reconnection"}}
    return http.post(url, json=call, headers={**session, "accept": accept})


def test_a_paused_request_stream_is_resumed_with_last_event_id_and_replayed_again_after_a_drop(
    interactive_gateway: InteractiveGateway,
) -> None:
    url = interactive_gateway.url
    with httpx.Client(timeout=TIMEOUT, headers={"accept": "application/json, text/event-stream"}) as http:
        session = open_raw_session(http, url, RESUMABLE)
        posted = reconnection_call(http, url, session, "application/json, text/event-stream")

        assert posted.headers["content-type"].startswith("text/event-stream")
        (stream_id, priming), *live = sse_events(posted.text)
        assert stream_id is not None and STREAM_ID.fullmatch(stream_id), posted.text  # the priming event: first
        assert priming == ""
        assert "retry: 2000" in posted.text
        # The upstream paused its stream: so did the gateway, before the response.
        assert all("id" not in json.loads(data) for _, data in live)

        resumed = http.get(url, headers={**session, "accept": "text/event-stream", "last-event-id": stream_id})
        assert resumed.status_code == 200
        *notes, (answer_id, answer_data) = sse_events(resumed.text)
        answer = json.loads(answer_data)
        assert answer["id"] == 7
        assert answer["result"]["content"] == [{"type": "text", "text": "Reconnection test completed"}]
        # Each log once, in order, on whichever stream the upstream sent it.
        logs = [json.loads(data)["params"]["data"] for _, data in [*live, *notes]]
        assert logs == ["Before disconnect", "After reconnect"]
        prefix = stream_id.split("/")[0] + "/"
        assert all(event_id is not None and event_id.startswith(prefix) for event_id, _ in [*notes, (answer_id, "")])

        # That stream dropped before the answer: from the last id it saw, only what came after it.
        again = http.get(url, headers={**session, "accept": "text/event-stream", "last-event-id": notes[-1][0]})
        assert [json.loads(data)["id"] for _, data in sse_events(again.text)] == [7]

        # Another session cannot read it: to it, there is nothing to resume.
        other = open_raw_session(http, url, RESUMABLE)
        foreign = http.get(url, headers={**other, "accept": "text/event-stream", "last-event-id": stream_id})
        assert foreign.status_code == 200
        assert sse_events(foreign.text) == []


@pytest.mark.parametrize(
    ("version", "accept"),
    [("2025-06-18", "application/json, text/event-stream"), (RESUMABLE, "application/json")],
    ids=["a-2025-06-18-session", "a-json-only-client"],
)
def test_a_client_that_cannot_resume_gets_the_whole_answer_on_its_request(
    interactive_gateway: InteractiveGateway, version: str, accept: str
) -> None:
    """Before 2025-11-25 a client does not resume streams, and a JSON-only one has none: the
    gateway resumes the upstream's stream itself and answers on the request."""
    url = interactive_gateway.url
    with httpx.Client(timeout=TIMEOUT, headers={"accept": accept}) as http:
        posted = reconnection_call(http, url, open_raw_session(http, url, version), accept)

    assert posted.status_code == 200
    if accept == "application/json":
        assert posted.headers["content-type"].startswith("application/json")
        answer = posted.json()
    else:
        events = sse_events(posted.text)
        assert all(event_id is None for event_id, _ in events)  # nothing to resume from
        answer = json.loads(events[-1][1])
    assert answer["result"]["content"] == [{"type": "text", "text": "Reconnection test completed"}]
