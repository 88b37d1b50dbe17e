"""MongoDB error codes and the exception command handlers raise to answer ``ok: 0``."""
from __future__ import annotations

CODES: dict[str, int] = {
    "InternalError": 1,
    "BadValue": 2,
    "NoSuchKey": 4,
    "Unauthorized": 13,
    "TypeMismatch": 14,
    "AuthenticationFailed": 18,
    "IllegalOperation": 20,
    "AlreadyInitialized": 23,
    "NamespaceNotFound": 26,
    "CursorNotFound": 43,
    "MaxTimeMSExpired": 50,
    "CommandNotFound": 59,
    "WriteConcernFailed": 64,
    "NodeNotFound": 74,
    "NoReplicationEnabled": 76,
    "ShutdownInProgress": 91,
    "InvalidReplicaSetConfig": 93,
    "NotYetInitialized": 94,
    "NewReplicaSetConfigurationIncompatible": 103,
    "ConflictingOperationInProgress": 117,
    "NotSecondary": 95,
    "NodeNotElectable": 104,
    "ConfigurationInProgress": 109,
    "InvalidOptions": 72,
    "NamespaceExists": 48,
    "PrimarySteppedDown": 189,
    "ExceededTimeLimit": 262,
    "CurrentConfigNotCommittedYet": 308,
    "IncompatibleWithUpgradedServer": 334,
    "InvalidNamespace": 73,
    "ImmutableField": 66,
    "FailedToParse": 9,
    "Location40352": 40352,
    "DuplicateKey": 11000,
    "InterruptedDueToReplStateChange": 11602,
    "NotPrimaryNoSecondaryOk": 13435,
    "NotPrimaryOrSecondary": 13436,
    "NotWritablePrimary": 10107,
    "OplogStartMissing": 120,
    "HostUnreachable": 6,
}
NAMES: dict[int, str] = {v: k for k, v in CODES.items()}

# Codes after which MongoDB labels a retryable write "RetryableWriteError" (retryable-writes spec).
RETRYABLE_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}


class CommandError(Exception):
    """A command failure answered as ``{ok: 0, code, codeName, errmsg}``."""

    def __init__(self, code_name: str, message: str, *, extra: dict | None = None,
                 labels: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = CODES[code_name]
        self.code_name = code_name
        self.message = message
        self.extra = extra or {}
        self.labels = labels or []

    def to_doc(self) -> dict:
        doc = {"ok": 0.0, "errmsg": self.message, "code": self.code, "codeName": self.code_name}
        doc.update(self.extra)
        if self.labels:
            doc["errorLabels"] = list(self.labels)
        return doc


class WriteError(Exception):
    """A per-document write error (goes into ``writeErrors``)."""

    def __init__(self, code_name: str, message: str, *, extra: dict | None = None) -> None:
        super().__init__(message)
        self.code = CODES[code_name]
        self.code_name = code_name
        self.message = message
        self.extra = extra or {}

    def to_doc(self, index: int) -> dict:
        doc = {"index": index, "code": self.code, "codeName": self.code_name, "errmsg": self.message}
        doc.update(self.extra)
        return doc
