"""Demo upstream MCP servers that Tollway can front.

Each module exposes ``build_server()`` (the SDK ``MCPServer``) and ``create_app()`` (an ASGI app
serving streamable HTTP at ``/mcp`` for both the initialize/session era and the stateless
2026-07-28 revision), and runs with ``python -m examples.upstreams.<name> --port N``.
"""
