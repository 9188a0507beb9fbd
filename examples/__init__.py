"""Runnable examples for Tollway (demo upstream MCP servers live in examples.upstreams)."""
