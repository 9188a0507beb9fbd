"""The masking stage on tools/call, as the agent and the upstream receive it: an oversized result is
held to its byte limit (text, images and structured content alike, the marker included) with a
marker saying so, and the field rules of every matching entry apply in config order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tollway.config import parse_config
from tollway.errors import ConfigError
from tollway.masking.stage import MaskingStage

KEY = b"k" * 32
IMAGE = {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"}


def _stage(max_result_bytes: int) -> MaskingStage:
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "upstreams": [{"name": "docs", "url": "http://127.0.0.1:9/mcp"}],
            "masking": {"tools": {"docs__read": {"max_result_bytes": max_result_bytes}}},
        }
    )
    return MaskingStage(config, hash_key=lambda: KEY)


def _agent_sees(limit: int, result: dict[str, Any]) -> dict[str, Any]:
    message = {"jsonrpc": "2.0", "id": 1, "result": result}
    return _stage(limit).message("acme", "tools/call", "docs__read", message)["result"]


def _bytes(result: dict[str, Any]) -> int:
    """What the agent reads, as the limit counts it."""
    size = sum(len((b["text"] if b["type"] == "text" else json.dumps(b)).encode()) for b in result["content"])
    return size + (len(json.dumps(result["structuredContent"]).encode()) if "structuredContent" in result else 0)


TEXT = "abcdefghij" * 20  # 200 bytes
MARKER = "\n…[truncated by Tollway: {shown} of {total} bytes; ask for less]"


def test_a_result_within_the_limit_is_left_whole() -> None:
    result = {"content": [{"type": "text", "text": TEXT}, IMAGE], "structuredContent": {"a": 1}}

    assert _agent_sees(_bytes(result), result) == result


def test_text_over_the_limit_is_cut_and_the_marker_fits_within_the_limit() -> None:
    seen = _agent_sees(150, {"content": [{"type": "text", "text": TEXT}, {"type": "text", "text": "klm"}]})

    (block,) = seen["content"]
    kept = block["text"].split("\n…")[0]
    assert TEXT.startswith(kept) and block["text"] == kept + MARKER.format(shown=len(kept), total=203)
    assert len(block["text"].encode()) <= 150


def test_structured_content_that_does_not_fit_is_dropped_with_the_marker_in_the_text() -> None:
    structured = {"rows": ["x" * 50] * 20}  # ~1 KB: five times the limit
    seen = _agent_sees(300, {"content": [{"type": "text", "text": "42 rows"}], "structuredContent": structured})

    assert "structuredContent" not in seen
    assert seen["content"][0]["text"].startswith("42 rows\n…[truncated by Tollway:")
    assert _bytes(seen) <= 300


def test_a_block_that_does_not_fit_is_dropped_and_what_follows_it_too_is_counted() -> None:
    big_image = {**IMAGE, "data": "A" * 400}
    seen = _agent_sees(300, {"content": [{"type": "text", "text": "caption"}, big_image, IMAGE]})

    assert seen["content"][0]["text"].startswith("caption\n…[truncated by Tollway:") or seen["content"][-1][
        "text"
    ].startswith("…[truncated by Tollway:")
    assert big_image not in seen["content"]
    assert _bytes(seen) <= 300


def test_a_text_block_using_up_the_budget_exactly_still_shows_the_marker_for_what_follows() -> None:
    limit = 100 + len(MARKER.format(shown=200, total=200).encode())  # room kept for the marker
    content = [{"type": "text", "text": TEXT[:100]}, {"type": "text", "text": TEXT[:100]}]

    seen = _agent_sees(limit, {"content": content})

    assert seen["content"] == [{"type": "text", "text": TEXT[:100] + MARKER.format(shown=100, total=200)}]


def test_a_tool_with_a_size_limit_is_listed_without_its_output_schema() -> None:
    tool = {"name": "docs__read", "inputSchema": {"type": "object"}, "outputSchema": {"type": "object"}}

    assert "outputSchema" not in _stage(1000).publish_tool(tool)


def test_an_invalid_projection_is_refused_at_load_naming_its_path() -> None:
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "upstreams": [{"name": "docs", "url": "http://127.0.0.1:9/mcp"}],
            "masking": {"tools": {"docs__read": {"projection": "rows[?amount >"}}},
        }
    )

    with pytest.raises(ConfigError, match=r"^masking\.tools\.docs__read\.projection: not a valid JMESPath expression$"):
        MaskingStage(config, hash_key=lambda: KEY)


# --- field rules of several matching entries ----------------------------------------------------
RULED = {
    "docs__*": {
        "arguments": [{"path": "account", "action": "hash"}],
        "results": [{"path": "account", "action": "hash"}],
    },
    "docs__read": {
        "arguments": [{"path": "account", "action": "mask"}, {"path": "page", "action": "round", "digits": -1}],
        "results": [{"path": "account", "action": "mask"}, {"path": "pages", "action": "remove"}],
        "projection": "{account: account}",
    },
}


def _ruled_stage() -> MaskingStage:
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "upstreams": [{"name": "docs", "url": "http://127.0.0.1:9/mcp"}],
            "masking": {"tools": RULED},
        }
    )
    return MaskingStage(config, hash_key=lambda: KEY)


def _one_by_one(stage: MaskingStage, key: str, value: Any, apply: Any) -> Any:
    """Each matching entry's rules applied in turn, as the stage once did."""
    for pattern in RULED:
        value = apply(value, getattr(stage.config.tools[pattern], key))
    return value


def test_the_field_rules_of_every_matching_entry_apply_in_order_to_arguments() -> None:
    from tollway.masking.fields import apply_field_rules

    stage = _ruled_stage()
    arguments = {"account": "ACC-7781", "page": 1234}

    expected = _one_by_one(stage, "arguments", arguments, lambda v, r: apply_field_rules(v, r, stage._hash_key, "acme"))
    assert stage.request("acme", "tools/call", "docs__read", {"name": "read", "arguments": arguments}) == {
        "name": "read",
        "arguments": expected,
    }
    assert expected["page"] == 1230 and expected["account"].startswith("*")
    assert arguments == {"account": "ACC-7781", "page": 1234}  # not modified


def test_the_field_rules_of_every_matching_entry_apply_in_order_to_both_copies_of_a_result() -> None:
    from tollway.masking.fields import apply_result_field_rules

    stage = _ruled_stage()
    structured = {"account": "ACC-7781", "pages": 3}
    result = {"content": [{"type": "text", "text": json.dumps(structured)}], "structuredContent": structured}
    message = {"jsonrpc": "2.0", "id": 1, "result": result}
    calls: list[str] = []
    matching = stage.rules
    stage.rules = lambda tool: calls.append(tool) or matching(tool)  # type: ignore[method-assign]

    seen = stage.message("acme", "tools/call", "docs__read", message)["result"]

    ruled = _one_by_one(stage, "results", result, lambda v, r: apply_result_field_rules(v, r, stage._hash_key, "acme"))
    assert ruled["structuredContent"]["account"].startswith("*") and "pages" not in ruled["structuredContent"]
    projected = {"account": ruled["structuredContent"]["account"]}
    assert seen == {"content": [{"type": "text", "text": json.dumps(projected)}], "structuredContent": projected}
    assert calls == ["docs__read"]  # the patterns are matched once per message
