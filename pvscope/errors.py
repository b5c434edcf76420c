"""Typed user errors: the message is the one line the user sees."""

from __future__ import annotations


class PvscopeError(Exception):
    """A user-facing error; ``str(e)`` is the whole message, ``exit_code`` the exit status."""

    exit_code = 1


class UsageError(PvscopeError):
    """Bad arguments or options (exit 2)."""

    exit_code = 2


class TraceError(PvscopeError):
    """A trace that is missing, corrupt, foreign or of another schema version."""


class GuestError(PvscopeError):
    """A guest image that cannot be run (missing, not ELF, wrong class, no ROM probe)."""
