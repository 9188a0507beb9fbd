"""What upstreams list: fan-out of list pages under one cursor, and the definitions an instance
has seen, so a call can be checked against the definition of what it names.

A list fans out to every upstream that offers the capability, concurrently; an upstream that
fails is left out (logged) unless all fail. The gateway's cursor is the upstreams' own cursors,
base64 JSON `{upstream: cursor}`, validated on the way back in.

Every definition fetched, by a list or by a call, is remembered per upstream: the latest one
seen is what the next call is checked against. A call refreshes an upstream's whole catalog when
it has not been fetched for `definitions.cache_seconds`, or when the name is missing (at most
every `MIN_REFRESH_SECONDS`, so a flood of unknown names costs the upstream nothing).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from tollway import shapes
from tollway.context import RequestContext
from tollway.errors import GatewayError, MalformedParams, NoUpstreamAvailable, UpstreamError, UpstreamUnavailable
from tollway.routing.publish import NAME_FIELD
from tollway.routing.upstream import drain
from tollway.telemetry import logger

if TYPE_CHECKING:
    from tollway.routing.router import Router

CAPABILITY = {"tools": "tools", "prompts": "prompts", "resources": "resources", "resourceTemplates": "resources"}
"""List key -> the capability an upstream must offer to be asked for that list."""
METHOD = {key: method for method, key in shapes.LIST_KEYS.items()}
MIN_REFRESH_SECONDS = 5.0
MAX_PAGES = 50
MAX_CURSOR_CHARS = 8192


class Listed(NamedTuple):
    """One definition an upstream lists, with the name a caller knows it by."""

    upstream: str
    list_key: str
    """`tools`, `prompts`, `resources` or `resourceTemplates`."""
    item: dict[str, Any]
    """As the upstream serves it (its own name)."""
    public: str


class _Known(NamedTuple):
    fetched_at: float
    items: dict[str, dict[str, Any]]
    """Own name (URI, URI template) -> the latest definition seen."""


class Catalog:
    def __init__(self, router: Router, cache_seconds: float) -> None:
        self.router = router
        self.max_age = cache_seconds
        self._known: dict[tuple[str, str], _Known] = {}

    # --- lists ------------------------------------------------------------------------------------
    async def page(self, ctx: RequestContext, method: str, cursor: Any) -> tuple[list[Listed], str | None]:
        """One page of a list method across upstreams, and the cursor of the next one."""
        list_key = shapes.LIST_KEYS[method]
        if cursor is None:
            infos = await self.router.reachable(ctx)
            pending: dict[str, str | None] = {
                n: None for n, i in infos.items() if CAPABILITY[list_key] in i.capabilities
            }
            if not infos:
                raise NoUpstreamAvailable(data={"retryable": True})
        else:
            pending = dict(_decode_cursor(cursor, self.router.clients))
        names = list(pending)
        pages = await asyncio.gather(
            *(self._fetch_page(ctx, name, method, pending[name]) for name in names), return_exceptions=True
        )
        listed: list[Listed] = []
        next_state: dict[str, str] = {}
        for name, page in zip(names, pages, strict=True):
            if isinstance(page, BaseException):
                log_skip(name, page)
                continue
            items, next_cursor = page
            self._observe(name, list_key, items, whole=cursor is None and next_cursor is None)
            listed.extend(self._listed(name, list_key, items))
            if next_cursor is not None:
                next_state[name] = next_cursor
        if names and all(isinstance(page, BaseException) for page in pages):
            raise NoUpstreamAvailable(data={"retryable": True})
        return listed, _encode_cursor(next_state) if next_state else None

    async def _fetch_page(
        self, ctx: RequestContext, name: str, method: str, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        params: dict[str, Any] = {"cursor": cursor} if cursor else {}
        reply = await drain(self.router.call(ctx, name, method, params, request_id=0, retry_safe=True))
        if "error" in reply:
            raise UpstreamUnavailable(name, f"Upstream '{name}' refused {method}")
        result = reply["result"]  # a valid list result: checked on the wire
        items = [item for item in result[shapes.LIST_KEYS[method]] if isinstance(item, dict)]
        return items, result.get("nextCursor")

    def _listed(self, name: str, list_key: str, items: list[dict[str, Any]]) -> list[Listed]:
        upstream = self.router.upstream(name)
        found = []
        for item in items:
            own = item.get(NAME_FIELD[list_key])
            public = self.router.namespace.public(upstream, list_key, own) if isinstance(own, str) else None
            if public is None:
                logger.warning("definition withheld: it cannot be named", extra={"upstream": name, "kind": list_key})
                continue
            found.append(Listed(name, list_key, item, public))
        return found

    def _observe(self, name: str, list_key: str, items: list[dict[str, Any]], whole: bool) -> None:
        """Remember what a list page showed: the whole catalog when it was one page, else the
        latest definition of each item the instance already knows of."""
        named = {item[NAME_FIELD[list_key]]: item for item in items if isinstance(item.get(NAME_FIELD[list_key]), str)}
        known = self._known.get((name, list_key))
        if whole:
            self._known[(name, list_key)] = _Known(time.monotonic(), named)
        elif known is not None:
            known.items.update(named)

    def known_count(self, name: str, list_key: str) -> int | None:
        """How many definitions of `list_key` this instance last saw upstream `name` list whole."""
        known = self._known.get((name, list_key))
        return len(known.items) if known is not None else None

    async def whole(self, ctx: RequestContext, name: str, list_key: str) -> list[Listed]:
        """Every definition of one upstream's list as this instance last saw it whole, fetched
        again when that is `definitions.cache_seconds` old (how a listen stream watches lists
        without asking the upstreams at every check)."""
        known = self._known.get((name, list_key))
        if known is not None and time.monotonic() - known.fetched_at < self.max_age:
            items = known.items
        else:
            items = await self.refresh(ctx, name, list_key)
        return self._listed(name, list_key, list(items.values()))

    # --- what a call names ------------------------------------------------------------------------
    async def find(self, ctx: RequestContext, name: str, list_key: str, own: str) -> Listed | None:
        """The definition upstream `name` serves under its own name (or URI) `own`: a tool or a
        prompt; for resources, the resource with that URI, else the template it matches (or is)."""
        info = await self.router.info(name, ctx)
        if CAPABILITY[list_key] not in info.capabilities:
            return None
        item = await self._lookup(ctx, name, list_key, lambda items: items.get(own))
        if item is None and list_key == "resources":
            list_key = "resourceTemplates"
            item = await self._lookup(ctx, name, list_key, lambda items: _template_for(own, items))
        if item is None:
            return None
        public = self.router.namespace.public(self.router.upstream(name), list_key, item[NAME_FIELD[list_key]])
        return Listed(name, list_key, item, public) if public is not None else None

    async def _lookup(
        self,
        ctx: RequestContext,
        name: str,
        list_key: str,
        pick: Callable[[dict[str, dict[str, Any]]], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        known = self._known.get((name, list_key))
        if known is not None:
            age = time.monotonic() - known.fetched_at
            found = pick(known.items)
            if (found is not None and age < self.max_age) or (found is None and age < MIN_REFRESH_SECONDS):
                return found
        return pick(await self.refresh(ctx, name, list_key))

    async def refresh(self, ctx: RequestContext, name: str, list_key: str) -> dict[str, dict[str, Any]]:
        """Every page of one upstream's list. An upstream error raises: caching an empty catalog
        would answer "unknown" after it recovers."""
        fetched_at, items, cursor = time.monotonic(), {}, None
        for _ in range(MAX_PAGES):
            page, cursor = await self._fetch_page(ctx, name, METHOD[list_key], cursor)
            items.update(
                (item[NAME_FIELD[list_key]], item) for item in page if isinstance(item.get(NAME_FIELD[list_key]), str)
            )
            if cursor is None:
                break
        self._known[(name, list_key)] = _Known(fetched_at, items)
        return items


def _template_for(uri: str, templates: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if uri in templates:
        return templates[uri]  # a completion names the template itself
    return next((t for template, t in templates.items() if _template_regex(template).fullmatch(uri)), None)


@lru_cache(maxsize=512)
def _template_regex(template: str) -> re.Pattern[str]:
    """RFC 6570 URI template -> a pattern of the URIs it expands to (values of simple expressions
    hold no `/`, `?` or `#`; reserved and fragment ones may; query forms are optional)."""
    pattern, last = [], 0
    for match in re.finditer(r"\{([+#./;?&]?)[^}]*\}", template):
        pattern.append(re.escape(template[last : match.start()]))
        operator = match.group(1)
        pattern.append(
            {
                "": r"[^/?#]+",
                "+": r".*",
                "#": r"(?:#.*)?",
                ".": r"(?:\.[^/?#]*)*",
                "/": r"(?:/[^/?#]*)*",
            }.get(operator, r"(?:[;?&][^#]*)?")
        )
        last = match.end()
    pattern.append(re.escape(template[last:]))
    return re.compile("".join(pattern))


def _encode_cursor(state: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def _decode_cursor(cursor: Any, upstreams: Any) -> dict[str, str]:
    """A cursor this gateway issued, or MalformedParams: a client must not make it parse
    anything else (it is base64 JSON, so it is read with care)."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_CHARS:
        raise MalformedParams("Invalid params: cursor is not one this gateway issued")
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, RecursionError, binascii.Error, UnicodeError):
        state = None
    if (
        not isinstance(state, dict)
        or not state
        or not all(name in upstreams and isinstance(value, str) for name, value in state.items())
    ):
        raise MalformedParams("Invalid params: cursor is not one this gateway issued")
    return state


def log_skip(name: str, error: BaseException) -> None:
    if isinstance(error, GatewayError):
        reason = error.message if isinstance(error, UpstreamError) else type(error).__name__
        logger.warning("upstream skipped", extra={"upstream": name, "reason": reason})
    else:
        logger.error("upstream skipped after an unexpected error", extra={"upstream": name}, exc_info=error)
