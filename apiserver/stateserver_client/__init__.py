"""Client for units: dial any of the API servers, sticky-first, and survive losing one."""

from .client import (
           AddressCache,
           BadName,
           ClientConfig,
           ClientError,
           StateClient,
           Unavailable,
           VersionConflict,
)
from .dial import DialError, dial_first, dial_order

__all__ = ["AddressCache", "BadName", "ClientConfig", "ClientError", "DialError", "StateClient", "Unavailable",
           "VersionConflict", "dial_first", "dial_order"]
