"""Errors raised by a department's connector.

    ConnectorError
     ├── InvalidIdentifier      an identity number or credit code fails the standard
     ├── UnknownKeyEpoch        a request names a federation key epoch this connector does not hold
     ├── KeyringError           the federation keyring file or variable is missing or malformed
     ├── ConfigError            a connector configuration file is wrong (names the file and key)
     ├── SourceError            the department's database or files cannot be read
     └── RequestRefused         a request is refused; carries the HTTP status and a fixed code

Messages never carry raw identifiers, secrets or data-dependent numbers.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every connector error."""


class InvalidIdentifier(ConnectorError, ValueError):
    """An identifier fails validation; the reason never includes the raw value."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"invalid {kind}: {reason}")


class UnknownKeyEpoch(ConnectorError):
    """The federation key epoch is not held here (never issued, or revoked)."""


class KeyringError(ConnectorError):
    """The federation keyring cannot be loaded."""


class ConfigError(ConnectorError):
    """A connector configuration is invalid; the message names the file, the key and what is expected."""


class SourceError(ConnectorError):
    """The department's source cannot be read."""


class RequestRefused(ConnectorError):
    """A request is refused with an HTTP status and one of the fixed error codes."""

    def __init__(self, status: int, code: str, message: str, extra: dict[str, int] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}
        super().__init__(f"{status} {code}: {message}")
