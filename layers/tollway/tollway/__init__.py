"""Tollway: a serverless MCP gateway for AWS."""

__version__ = "0.1.0"
