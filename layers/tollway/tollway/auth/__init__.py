"""Authentication: JWT resource server (verifier, middleware) and the local dev issuer."""

DEV_ISSUER = "tollway-dev"
"""How a config names the local development issuer: trusted only by `tollway dev`, which serves
it under its own URL, `http://127.0.0.1:PORT` (see auth/dev.py)."""
