"""The masking stage of the pipeline: what leaves the gateway, in either direction, is cleaned.

  to upstreams: tools/call arguments (detectors minus the tool's `allow_detectors`, then field
                rules), prompt arguments, and every answer a client gives to an upstream's
                question (2026-07-28 `inputResponses`, 2025-era responses to relayed requests)
  to agents:    results, resource contents, prompt messages, notifications, relayed server
                requests (sampling, elicitation) and `input_required` questions, and upstream
                error messages -> detectors; tool results also -> field rules (first, so a
                `hash` sees the raw value) -> projection (JMESPath) -> size limit with a marker
Findings are counted and logged by detector name only, never with the values. Pure: the key of
`hash` rules is handed in (`hash_key`), not read here.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tollway import shapes
from tollway.config import GatewayConfig, MaskingConfig, ToolMasking
from tollway.errors import ConfigError
from tollway.masking.fields import check_field_rules
from tollway.telemetry import count, logger

if TYPE_CHECKING:
    from tollway.masking.redact import Redactor

DETECTORS = MaskingConfig().detectors
"""The default detector list (config.py); any other list is checked against the detectors at load
(not this one: importing the detectors compiles their patterns, a cold-start cost that a config
naming none is spared; the first masked message, or the warm-up, imports them)."""

TRUNCATION_MARKER = "\n…[truncated by Tollway: {shown} of {total} bytes; ask for less]"


class MaskingStage:
    def __init__(self, config: GatewayConfig, hash_key: Callable[[], bytes]) -> None:
        """`hash_key`: the key of `hash` field rules, asked for on first use."""
        self.config = config.masking
        self._redactor: Redactor | None = None
        self._hash_key_source = hash_key
        self._key: bytes | None = None
        # A typo in a detector, a tool's allowances, a field path or a projection fails at load.
        if self.config.detectors != DETECTORS:
            _check_detectors(self.config.detectors, "masking.detectors")
        for pattern, rules in self.config.tools.items():
            where = f"masking.tools.{pattern}"
            if rules.allow_detectors:
                _check_detectors(rules.allow_detectors, f"{where}.allow_detectors")
            check_field_rules(rules.arguments, f"{where}.arguments")
            check_field_rules(rules.results, f"{where}.results")
            if rules.projection is not None:
                _check_projection(rules.projection, f"{where}.projection")

    def publish_tool(self, tool: dict[str, Any]) -> dict[str, Any]:
        """A tool whose structured results the gateway may reshape (field rules, projection) or
        drop (a size limit) is listed without its outputSchema: it no longer describes them."""
        name = str(tool.get("name", ""))
        if "outputSchema" in tool and any(r.results or r.projection or r.max_result_bytes for r in self.rules(name)):
            return {k: v for k, v in tool.items() if k != "outputSchema"}
        return tool

    def rules(self, tool: str) -> list[ToolMasking]:
        return [rules for pattern, rules in self.config.tools.items() if fnmatch.fnmatchcase(tool, pattern)]

    # --- towards upstreams -------------------------------------------------------------------------
    def request(self, tenant: str, method: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """The params of a routed request as the upstream may see them."""
        if not self.config.enabled:
            return params
        changes: list[tuple[shapes.Path, Any]] = []
        arguments = params.get("arguments")
        if isinstance(arguments, dict):
            rules = self.rules(name) if method == "tools/call" else []
            skip = {d for r in rules for d in r.allow_detectors}
            field_rules = [f for r in rules for f in r.arguments]
            if field_rules:  # first: a `hash` sees the raw value
                from tollway.masking.fields import apply_field_rules

                arguments = apply_field_rules(arguments, field_rules, self._hash_key, tenant)
            masked, findings = self.redactor.redact_value(arguments, skip=skip)
            self._count("arguments", name, findings)
            changes.append((("arguments",), masked))
        if "inputResponses" in params:
            masked, findings = self.redactor.redact_value(params["inputResponses"])
            self._count("client answer", name, findings)
            changes.append((("inputResponses",), masked))
        return shapes.replace(params, changes) if changes else params

    def client_answer(self, message: dict[str, Any]) -> dict[str, Any]:
        """A 2025-era client's response to a relayed server request (an elicitation's form)."""
        if not self.config.enabled:
            return message
        masked, findings = self.redactor.redact_value({k: v for k, v in message.items() if k in ("result", "error")})
        self._count("client answer", "", findings)
        return {**message, **masked}

    # --- towards agents ----------------------------------------------------------------------------
    def message(self, tenant: str, method: str, name: str, message: dict[str, Any]) -> dict[str, Any]:
        """One JSON-RPC message on its way to the agent: a response, a notification, or a server
        request relayed from the upstream."""
        if not self.config.enabled:
            return message
        if "method" in message:  # notification (progress, logs) or server request (sampling, elicitation)
            params, findings = self.redactor.redact_value(message.get("params"))
            self._count("upstream message", name, findings)
            return {**message, "params": params} if findings else message
        if isinstance(message.get("error"), dict):
            error, findings = self.redactor.redact_value(message["error"])
            self._count("error", name, findings)
            return {**message, "error": error}
        result = message["result"]
        if result.get("resultType") == "input_required":
            questions, findings = self.redactor.redact_value(result.get("inputRequests"))
            self._count("upstream question", name, findings)
            return {**message, "result": {**result, "inputRequests": questions}} if findings else message
        rules = self.rules(name) if method == "tools/call" else []  # matched once per message
        field_rules = [f for r in rules for f in r.results]
        if field_rules:
            from tollway.masking.fields import apply_result_field_rules

            # First: a `hash` must see the raw identifier, not its masked form. Both copies are
            # ruled: structuredContent and its JSON mirror in the text content.
            result = apply_result_field_rules(result, field_rules, self._hash_key, tenant)
        result, findings = self.redactor.redact_mcp_result(result)
        self._count("result", name, findings)
        return {**message, "result": _shape(rules, result)}

    @property
    def redactor(self) -> Redactor:
        """Built on first use: compiling the detectors costs ~20 ms that a cold start need not pay."""
        if self._redactor is None:
            from tollway.masking.redact import Redactor

            self._redactor = Redactor(self.config.detectors)
        return self._redactor

    def needs_hash_key(self, tool: str) -> bool:
        """Whether a call of `tool` needs the `hash` key and it is not loaded yet: the caller loads
        it first (`load_hash_key`, blocking: the source may read Secrets Manager)."""
        return self._key is None and any(
            f.action == "hash" for r in self.rules(tool) for f in (*r.arguments, *r.results)
        )

    def load_hash_key(self) -> None:
        if self._key is None:
            self._key = self._hash_key_source()

    @property
    def _hash_key(self) -> bytes:
        self.load_hash_key()
        assert self._key is not None
        return self._key

    @staticmethod
    def _count(where: str, item: str, findings: Any) -> None:
        if findings:
            logger.debug("masked", extra={"where": where, "item": item, "detectors": dict(findings)})
            count("MaskedValues", sum(dict(findings).values()))


def _check_projection(expression: str, where: str) -> None:
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        jmespath.compile(expression)
    except JMESPathError:
        raise ConfigError(f"{where}: not a valid JMESPath expression") from None


def _shape(matching: list[ToolMasking], result: dict[str, Any]) -> dict[str, Any]:
    for rules in matching:
        if rules.projection and result.get("structuredContent") is not None:
            from aws_lambda_powertools.utilities.jmespath_utils import query

            structured = query(result["structuredContent"], rules.projection)
            # The text mirror of a projected result must not carry what was projected away.
            text = {"type": "text", "text": json.dumps(structured)}
            result = {**result, "structuredContent": structured, "content": [text]}
        if rules.max_result_bytes:
            result = _truncate(result, rules.max_result_bytes)
    return result


def _size(value: Any) -> int:
    return len(value.encode()) if isinstance(value, str) else len(json.dumps(value, ensure_ascii=False).encode())


def _truncate(result: dict[str, Any], limit: int) -> dict[str, Any]:
    """Hold what the agent reads to `limit` bytes: text, embedded resources, images and structured
    content all count. Over the limit, structured content goes first (the tool is listed without
    its outputSchema, see `publish_tool`), then blocks are kept in order while they fit, the first
    text that does not fit is cut, and a marker says how much was shown."""
    blocks = [block for _, block in shapes.blocks(result)]
    sizes = [_size(block.get("text") if block.get("type") == "text" else block) for block in blocks]
    structured = _size(result["structuredContent"]) if result.get("structuredContent") is not None else 0
    total = sum(sizes) + structured
    if total <= limit:
        return result
    # Room for the marker is kept first (its `shown` written as `limit`: never shorter).
    budget = max(0, limit - len(TRUNCATION_MARKER.format(shown=limit, total=total).encode()))
    room = budget
    content: list[dict[str, Any]] = []
    for block, size in zip(blocks, sizes, strict=True):
        if size <= budget:
            content.append(block)
            budget -= size
        elif block.get("type") == "text" and budget > 0:
            content.append({**block, "text": block["text"].encode()[:budget].decode(errors="ignore")})
            budget = 0
    marker = TRUNCATION_MARKER.format(shown=room - budget, total=total)
    if content and content[-1].get("type") == "text":
        content[-1] = {**content[-1], "text": content[-1]["text"] + marker}
    else:
        content.append({"type": "text", "text": marker.lstrip("\n")})
    return {k: v for k, v in {**result, "content": content}.items() if k != "structuredContent"}


def _check_detectors(names: list[str], where: str) -> None:
    from tollway.masking.redact import check_detectors  # compiles the patterns: only when a list is named

    check_detectors(names, where)
