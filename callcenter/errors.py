"""Domain errors. They know nothing of HTTP; `webui` maps them to 400/404/409 in one handler."""

from __future__ import annotations


class DomainError(Exception):
    """Base of the errors a user can act on. `field` names the input at fault, when there is one."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    """The request is well formed but the current state forbids it (e.g. start a running task)."""

    status = 409


class Invalid(DomainError):
    """A value is malformed (a number with a CR in it, an unknown time zone)."""

    status = 422
