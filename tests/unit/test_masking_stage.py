"""The masking stage on tools/call, as the agent and the upstream receive it: an oversized result is
cut with a marker whatever block uses up the budget, non-text blocks are kept, and the field rules
of every matching entry apply in config order."""

from __future__ import annotations

import json
from typing import Any

from tollway.config import parse_config
from tollway.masking.stage import MaskingStage

IMAGE = {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"}


def _stage(max_result_bytes: int) -> MaskingStage:
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "upstreams": [{"name": "docs", "url": "http://127.0.0.1:9/mcp"}],
            "masking": {"tools": {"docs__read": {"max_result_bytes": max_result_bytes}}},
        }
    )
    return MaskingStage(config)


def _agent_sees(limit: int, content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    message = {"jsonrpc": "2.0", "id": 1, "result": {"content": content}}
    return _stage(limit).message("acme", "tools/call", "docs__read", message)["result"]["content"]


def test_a_text_block_using_up_the_budget_exactly_still_shows_the_marker_for_what_follows() -> None:
    seen = _agent_sees(10, [{"type": "text", "text": "abcdefghij"}, {"type": "text", "text": "klm"}])

    assert seen == [
        {"type": "text", "text": "abcdefghij"},
        {"type": "text", "text": "\n…[truncated by Tollway: 10 of 13 bytes; ask for less]"},
    ]


def test_an_image_after_the_cut_is_kept_and_later_text_is_dropped() -> None:
    seen = _agent_sees(
        8,
        [
            {"type": "text", "text": "abcdefghij"},
            IMAGE,
            {"type": "text", "text": "klm"},
            IMAGE,
        ],
    )

    assert seen == [
        {"type": "text", "text": "abcdefgh\n…[truncated by Tollway: 8 of 13 bytes; ask for less]"},
        IMAGE,
        IMAGE,
    ]


def test_an_image_after_a_block_that_fills_the_budget_is_kept() -> None:
    seen = _agent_sees(10, [{"type": "text", "text": "abcdefghij"}, IMAGE, {"type": "text", "text": "klm"}])

    assert seen == [
        {"type": "text", "text": "abcdefghij"},
        IMAGE,
        {"type": "text", "text": "\n…[truncated by Tollway: 10 of 13 bytes; ask for less]"},
    ]


def test_a_result_within_the_limit_is_left_whole() -> None:
    content = [{"type": "text", "text": "abcdefghij"}, IMAGE, {"type": "text", "text": "klm"}]

    assert _agent_sees(13, content) == content


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
    return MaskingStage(config)


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
    assert stage.arguments("acme", "docs__read", arguments) == expected
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
