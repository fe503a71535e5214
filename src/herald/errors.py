"""Herald's error tree.

A class's docstring is its default message. ``permanent`` says whether retrying
the same operation can ever help; transports map the classes to HTTP status
codes (``web``) and exit codes (``cli``) in one place each.
"""

from __future__ import annotations


class HeraldError(Exception):
    """Something went wrong in Herald."""

    permanent: bool = True
    exit_code: int = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(HeraldError):
    """The configuration is invalid."""

    exit_code = 2


class InvalidInput(HeraldError):
    """The input is invalid."""

    exit_code = 2


class NotFound(HeraldError):
    """No such object."""

    exit_code = 3


class Conflict(HeraldError):
    """The object is not in a state that allows this."""

    exit_code = 4


class TemplateError(InvalidInput):
    """The template cannot be used."""


class RenderError(HeraldError):
    """The template failed to render for this recipient."""


class DatabaseUnavailable(HeraldError):
    """The database cannot be reached right now."""

    permanent = False
    exit_code = 5


class Unauthorized(HeraldError):
    """Authentication is required: a valid API token or session."""

    exit_code = 6


class Forbidden(HeraldError):
    """Your role does not allow this."""

    exit_code = 6


class TooManyAttempts(HeraldError):
    """Too many failed attempts from this address; try again later."""

    permanent = False
    exit_code = 6

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RelayUnavailable(HeraldError):
    """No relay could take the message right now."""

    permanent = False
    exit_code = 5
