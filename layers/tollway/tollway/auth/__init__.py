"""Authentication: JWT resource server (verifier, middleware) and the local dev issuer."""

DEV_ISSUER = "tollway-dev"
"""The local development issuer: trusted only by `tollway dev` (see auth/dev.py)."""
