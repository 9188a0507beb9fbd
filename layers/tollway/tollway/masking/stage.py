"""The masking stage of the pipeline: what leaves the gateway in either direction is cleaned.

  request:  tools/call arguments -> detectors (minus the tool's `allow_detectors`) -> field rules
  response: results, resource contents, prompt messages, relayed notifications and upstream
            error messages -> detectors -> field rules (structured results) -> projection
            (JMESPath) -> size limit with a truncation marker
Findings are counted and logged by detector name only, never with the values.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from typing import TYPE_CHECKING, Any

from tollway.config import GatewayConfig, MaskingConfig, ToolMasking
from tollway.masking.fields import check_field_rules, default_hash_key

if TYPE_CHECKING:
    from tollway.masking.redact import Redactor

from tollway.telemetry import count, logger

DETECTORS = MaskingConfig().detectors
"""The default detector list (config.py); any other list is checked against the detectors at load
(not this one: importing the detectors compiles their patterns, a cold-start cost)."""

TRUNCATION_MARKER = "\n…[truncated by Tollway: {shown} of {total} bytes; ask for less]"


class MaskingStage:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config.masking
        self._redactor: Redactor | None = None
        self._gateway_name = config.name
        self._key: bytes | None = None
        # A typo in a detector, a tool's allowances or a field path fails at load, not per call.
        if self.config.detectors != DETECTORS:
            from tollway.masking.redact import check_detectors

            check_detectors(self.config.detectors, "masking.detectors")
        for pattern, rules in self.config.tools.items():
            from tollway.masking.redact import check_detectors

            check_detectors(rules.allow_detectors, f"masking.tools.{pattern}.allow_detectors")
            check_field_rules(rules.arguments, f"masking.tools.{pattern}.arguments")
            check_field_rules(rules.results, f"masking.tools.{pattern}.results")

    def publish_tool(self, tool: dict[str, Any]) -> dict[str, Any]:
        """A tool whose structured results the gateway reshapes (field rules, projection) is
        listed without its outputSchema: the upstream's schema no longer describes them."""
        name = str(tool.get("name", ""))
        if "outputSchema" in tool and any(r.results or r.projection for r in self.rules(name)):
            return {k: v for k, v in tool.items() if k != "outputSchema"}
        return tool

    def rules(self, tool: str) -> list[ToolMasking]:
        return [rules for pattern, rules in self.config.tools.items() if fnmatch.fnmatchcase(tool, pattern)]

    # --- requests --------------------------------------------------------------------------------
    def arguments(self, tenant: str, tool: str, arguments: Any) -> Any:
        if not self.config.enabled or not isinstance(arguments, dict):
            return arguments
        rules = self.rules(tool)
        skip = {d for r in rules for d in r.allow_detectors}
        field_rules = [f for r in rules for f in r.arguments]
        if field_rules:  # first: a `hash` sees the raw value
            from tollway.masking.fields import apply_field_rules

            arguments = apply_field_rules(arguments, field_rules, self._hash_key, tenant)
        masked, findings = self.redactor.redact_value(arguments, skip=skip)
        self._count("arguments", tool, findings)
        return masked

    # --- responses -------------------------------------------------------------------------------
    def message(self, tenant: str, method: str, name: str, message: dict[str, Any]) -> dict[str, Any]:
        """One JSON-RPC message on its way back to the agent (a response or a notification)."""
        if not self.config.enabled:
            return message
        if "method" in message:  # relayed notification (progress text, log data)
            params, findings = self.redactor.redact_value(message.get("params"))
            self._count("notification", name, findings)
            return {**message, "params": params} if findings else message
        if isinstance(message.get("error"), dict):
            error, findings = self.redactor.redact_value(message["error"])
            self._count("error", name, findings)
            return {**message, "error": error}
        result = message.get("result")
        if not isinstance(result, dict):
            return message
        rules = self.rules(name) if method == "tools/call" else []  # matched once per message
        field_rules = [f for r in rules for f in r.results]
        if field_rules:
            from tollway.masking.fields import apply_result_field_rules

            # First: a `hash` must see the raw identifier, not its masked form. Both copies are
            # ruled: structuredContent and its JSON mirror in the text content.
            result = apply_result_field_rules(result, field_rules, self._hash_key, tenant)
        result, findings = self.redactor.redact_mcp_result(result)
        self._count("result", name, findings)
        return {**message, "result": self._shape(rules, result)}

    @staticmethod
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

    @property
    def redactor(self) -> Redactor:
        """Built on first use: compiling the detectors costs ~20 ms that a cold start need not pay."""
        if self._redactor is None:
            from tollway.masking.redact import Redactor

            self._redactor = Redactor(self.config.detectors)
        return self._redactor

    @property
    def _hash_key(self) -> bytes:
        """Key of `hash` rules: from Secrets Manager (`masking.hash_key_secret`) when set, read once
        per warm instance; else derived from the gateway name (fine locally only)."""
        if self._key is None:
            secret = self.config.hash_key_secret
            if secret:
                from aws_lambda_powertools.utilities import parameters

                self._key = hashlib.sha256(str(parameters.get_secret(secret, max_age=3600)).encode()).digest()
            else:
                self._key = default_hash_key(self._gateway_name)
        return self._key

    @staticmethod
    def _count(where: str, item: str, findings: Any) -> None:
        if findings:
            logger.info("masked", extra={"where": where, "item": item, "detectors": dict(findings)})
            count("MaskedValues", sum(dict(findings).values()))


def _truncate(result: dict[str, Any], limit: int) -> dict[str, Any]:
    """Cut text content so the result's text stays within `limit` bytes, with a clear marker.
    The first text block that does not fit is cut (to the marker alone if nothing is left of the
    budget) and later text blocks are dropped; other blocks (images, resources) are kept."""
    total = sum(len(b.get("text", "").encode()) for b in result.get("content") or [] if isinstance(b, dict))
    if total <= limit:
        return result
    budget, cut, content = limit, False, []
    for block in result.get("content") or []:
        if not isinstance(block, dict) or block.get("type") != "text":
            content.append(block)
            continue
        if cut:
            continue
        data = block.get("text", "").encode()
        if len(data) <= budget:
            budget -= len(data)
            content.append(block)
            continue
        # total > limit, so some text block gets here: the marker is always shown.
        cut = True
        text = data[:budget].decode(errors="ignore") + TRUNCATION_MARKER.format(shown=limit, total=total)
        content.append({**block, "text": text})
    # structuredContent stays: a client validates it against the tool's outputSchema.
    return {**result, "content": content}
