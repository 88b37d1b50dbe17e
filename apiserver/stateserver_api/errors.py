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


class Unreadable(Exception):
    """A stored document cannot be served (corrupt, or written by a buggy or foreign writer). The key exists, so
    this is neither 404 nor a retryable 5xx: the app answers 409 naming the key, the problem and the repair."""

    def __init__(self, message: str, current_version: int | None) -> None:
        super().__init__(message)
        self.current_version = current_version
