"""Errors the backend raises; the app maps each to one HTTP status."""


class NoPrimary(Exception):
    """No writable primary could be reached (503). The message says why, without secrets."""


class Conflict(Exception):
    """An optimistic-concurrency write named a stale version (409)."""

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


class NotFound(Exception):
    """The unit or key does not exist (404)."""
