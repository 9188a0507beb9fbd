"""Masking and sanitization: what reaches agents and upstreams, and what upstreams may say.

- `detectors`: PII and secret detectors (regex candidates, format validators).
- `redact`: `Redactor` masks detector findings in text, any JSON value and MCP results.
- `fields`: configured field rules (`mask`, `remove`, `hash`, `round`, `bucket`) on paths.
- `scanner`: poisoning checks for upstream definitions, injection checks for results.

The modules are imported where they are used, so importing this package stays free.
"""
