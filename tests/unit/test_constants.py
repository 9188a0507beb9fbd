"""The gateway's wire constants are the SDK's: pinned here so the cold-start-friendly copies never drift."""

from __future__ import annotations

import mcp_types
from mcp.client import streamable_http as sdk_client
from mcp.shared import inbound
from mcp_types import jsonrpc
from mcp_types import version as versions
from tollway import spec as c


def test_json_rpc_error_codes_are_the_sdks() -> None:
    assert c.PARSE_ERROR == jsonrpc.PARSE_ERROR
    assert c.INVALID_REQUEST == jsonrpc.INVALID_REQUEST
    assert c.METHOD_NOT_FOUND == jsonrpc.METHOD_NOT_FOUND
    assert c.INVALID_PARAMS == jsonrpc.INVALID_PARAMS
    assert c.INTERNAL_ERROR == jsonrpc.INTERNAL_ERROR
    assert c.CONNECTION_CLOSED == jsonrpc.CONNECTION_CLOSED
    assert c.HEADER_MISMATCH == jsonrpc.HEADER_MISMATCH
    assert c.MISSING_REQUIRED_CLIENT_CAPABILITY == jsonrpc.MISSING_REQUIRED_CLIENT_CAPABILITY
    assert c.UNSUPPORTED_PROTOCOL_VERSION == jsonrpc.UNSUPPORTED_PROTOCOL_VERSION


def test_handshake_versions_are_the_sdks_except_2024_11_05() -> None:
    # 2024-11-05 is left out on purpose: its HTTP+SSE transport is not served.
    assert tuple(v for v in versions.HANDSHAKE_PROTOCOL_VERSIONS if v != "2024-11-05") == c.HANDSHAKE_VERSIONS
    assert c.LATEST_HANDSHAKE_VERSION == versions.LATEST_HANDSHAKE_VERSION
    assert c.DEFAULT_HANDSHAKE_VERSION == mcp_types.DEFAULT_NEGOTIATED_VERSION


def test_modern_versions_are_the_sdks() -> None:
    assert c.MODERN_VERSIONS == versions.MODERN_PROTOCOL_VERSIONS
    assert c.LATEST_MODERN_VERSION == versions.LATEST_MODERN_VERSION
    assert set(c.HANDSHAKE_VERSIONS + c.MODERN_VERSIONS) <= set(versions.KNOWN_PROTOCOL_VERSIONS)


def test_envelope_meta_keys_are_the_sdks() -> None:
    assert c.META_PROTOCOL_VERSION == mcp_types.PROTOCOL_VERSION_META_KEY
    assert c.META_CLIENT_INFO == mcp_types.CLIENT_INFO_META_KEY
    assert c.META_CLIENT_CAPABILITIES == mcp_types.CLIENT_CAPABILITIES_META_KEY
    assert c.META_SERVER_INFO == mcp_types.SERVER_INFO_META_KEY


def test_header_names_are_the_sdks_in_lowercase() -> None:
    assert c.PROTOCOL_VERSION_HEADER == inbound.MCP_PROTOCOL_VERSION_HEADER
    assert c.METHOD_HEADER == inbound.MCP_METHOD_HEADER
    assert c.NAME_HEADER == inbound.MCP_NAME_HEADER
    assert inbound.MCP_PARAM_HEADER_PREFIX.lower() == c.PARAM_HEADER_PREFIX
    assert c.SESSION_ID_HEADER == sdk_client.MCP_SESSION_ID
    assert c.LAST_EVENT_ID_HEADER == sdk_client.LAST_EVENT_ID


def test_name_bearing_methods_are_the_sdks() -> None:
    assert dict(inbound.NAME_BEARING_METHODS) == c.NAME_BEARING_METHODS


def test_the_2026_status_table_is_the_sdks() -> None:
    assert dict(inbound.ERROR_CODE_HTTP_STATUS) == c.MODERN_ERROR_STATUS
