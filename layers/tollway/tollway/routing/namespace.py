"""Namespacing: how upstream names and URIs are mounted under one endpoint.

Tools and prompts become `<prefix>__<name>`; resource URIs become `<prefix>+<uri>` (a
scheme prefix, so the result is still a URI). Prefixes are `[a-z][a-z0-9-]*`, so neither
separator can occur inside one and every public name maps back to exactly one upstream.
An upstream with an empty prefix is mounted as is; names that would read as another
upstream's are withheld from it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tollway.config import PREFIX_SEPARATOR, URI_PREFIX_SEPARATOR, UpstreamConfig

_NAMED = ("tools", "prompts")
"""List keys whose items are named; the others (resources, resourceTemplates) are URIs."""
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
"""MCP tool names (2025-11-25): 1-128 chars of letters, digits, '_', '-', '.'."""


class Namespace:
    def __init__(self, upstreams: Sequence[UpstreamConfig]) -> None:
        # Longest prefix first, so the most specific mount wins.
        self._prefixed = sorted((u for u in upstreams if u.namespace), key=lambda u: -len(u.namespace))
        self._bare = next((u for u in upstreams if not u.namespace), None)

    # names (tools, prompts) ------------------------------------------------------------------
    def public_name(self, upstream: UpstreamConfig, name: str) -> str | None:
        """The name a client sees, or None when it cannot be mounted (invalid or ambiguous)."""
        if upstream.namespace:
            public = f"{upstream.namespace}{PREFIX_SEPARATOR}{name}"
        else:
            public = name
            if self._claimed_by_prefix(name, PREFIX_SEPARATOR):
                return None
        return public if TOOL_NAME_RE.match(public) else None

    def resolve_name(self, public: str) -> tuple[UpstreamConfig, str] | None:
        return self._resolve(public, PREFIX_SEPARATOR)

    # resource URIs -------------------------------------------------------------------------
    def public_uri(self, upstream: UpstreamConfig, uri: str) -> str | None:
        if upstream.namespace:
            return f"{upstream.namespace}{URI_PREFIX_SEPARATOR}{uri}"
        return None if self._claimed_by_prefix(uri, URI_PREFIX_SEPARATOR) else uri

    def resolve_uri(self, public: str) -> tuple[UpstreamConfig, str] | None:
        return self._resolve(public, URI_PREFIX_SEPARATOR)

    # either, by the list an item comes from ----------------------------------------------------
    def public(self, upstream: UpstreamConfig, list_key: str, own: str) -> str | None:
        """The public form of an upstream's own tool/prompt name or resource URI (template)."""
        return self.public_name(upstream, own) if list_key in _NAMED else self.public_uri(upstream, own)

    def resolve(self, list_key: str, public: str) -> tuple[UpstreamConfig, str] | None:
        return self.resolve_name(public) if list_key in _NAMED else self.resolve_uri(public)

    def _resolve(self, public: str, separator: str) -> tuple[UpstreamConfig, str] | None:
        """The upstream a public name or URI belongs to, and its own name for it."""
        for upstream in self._prefixed:
            head = f"{upstream.namespace}{separator}"
            if public.startswith(head) and len(public) > len(head):
                return upstream, public[len(head) :]
        if self._bare is not None and public:
            return self._bare, public
        return None

    def _claimed_by_prefix(self, value: str, separator: str) -> bool:
        return any(value.startswith(f"{u.namespace}{separator}") for u in self._prefixed)
