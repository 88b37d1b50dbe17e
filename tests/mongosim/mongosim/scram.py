"""SCRAM (RFC 5802) with SHA-1 and SHA-256 (RFC 7677) as MongoDB uses it: server and client conversations.

MongoDB specifics: SCRAM-SHA-1 hashes ``"<user>:mongo:<password>"`` with MD5 (hex) before PBKDF2 and does not
SASLprep; SCRAM-SHA-256 SASLpreps the password. No channel binding (gs2 header ``n,,`` or ``y,,``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
from dataclasses import dataclass

MECHANISMS = ("SCRAM-SHA-1", "SCRAM-SHA-256")
_HASH = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
# mongod's defaults (scramIterationCount / scramSHA256IterationCount).
DEFAULT_ITERATIONS = {"SCRAM-SHA-1": 10000, "SCRAM-SHA-256": 15000}
_SALT_LEN = {"SCRAM-SHA-1": 16, "SCRAM-SHA-256": 28}


class ScramError(Exception):
    """The conversation failed; the server answers AuthenticationFailed (never says why to the client)."""


def saslprep(s: str) -> str:
    """RFC 4013 for the cases that matter here: ASCII passes unchanged (control characters are refused); other
    text gets the non-ASCII-space mapping, removal of "mapped to nothing" characters and NFKC."""
    if s.isascii():
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in s):
            raise ScramError("SASLprep: prohibited control character")
        return s
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in s
                     if c not in "\u00ad\u034f\u1806\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufe00\ufeff")
    out = unicodedata.normalize("NFKC", mapped)
    for c in out:
        if unicodedata.category(c) in ("Cc", "Co", "Cs", "Cn") or c in "\ufffe\uffff":
            raise ScramError("SASLprep: prohibited character")
    return out


def mongo_password(mechanism: str, user: str, password: str) -> bytes:
    """The secret fed to PBKDF2 for ``mechanism``."""
    if mechanism == "SCRAM-SHA-1":
        return hashlib.md5(f"{user}:mongo:{password}".encode(), usedforsecurity=False).hexdigest().encode()
    if mechanism == "SCRAM-SHA-256":
        return saslprep(password).encode()
    raise ScramError(f"unsupported mechanism {mechanism}")


def _hmac(name: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, name).digest()


def salted_password(mechanism: str, secret: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(_HASH[mechanism], secret, salt, iterations)


def make_credentials(mechanism: str, user: str, password: str, *, salt: bytes | None = None,
                     iterations: int | None = None) -> dict:
    """What mongod stores for a user under ``credentials.<mechanism>`` (never the password itself)."""
    return credentials_from_secret(mechanism, mongo_password(mechanism, user, password), salt=salt,
                                   iterations=iterations)


def credentials_from_secret(mechanism: str, secret: bytes, *, salt: bytes | None = None,
                            iterations: int | None = None) -> dict:
    """Stored credentials for an already-prepared secret (RFC test vectors use the plain password)."""
    name = _HASH[mechanism]
    salt = salt if salt is not None else os.urandom(_SALT_LEN[mechanism])
    iterations = iterations or DEFAULT_ITERATIONS[mechanism]
    sp = salted_password(mechanism, secret, salt, iterations)
    client_key = _hmac(name, sp, b"Client Key")
    return {"iterationCount": iterations, "salt": base64.b64encode(salt).decode(),
            "storedKey": base64.b64encode(hashlib.new(name, client_key).digest()).decode(),
            "serverKey": base64.b64encode(_hmac(name, sp, b"Server Key")).decode()}


def _attrs(msg: str) -> list[tuple[str, str]]:
    out = []
    for part in msg.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError(f"malformed SCRAM attribute {part!r}")
        out.append((part[0], part[2:]))
    return out


def _decode_name(s: str) -> str:
    # RFC 5802 §5.1: ',' and '=' travel as =2C and =3D; any other '=' is an error.
    out, i = [], 0
    while i < len(s):
        if s[i] == "=":
            code = s[i:i + 3]
            if code == "=2C":
                out.append(",")
            elif code == "=3D":
                out.append("=")
            else:
                raise ScramError("invalid escape in user name")
            i += 3
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def encode_name(s: str) -> str:
    return s.replace("=", "=3D").replace(",", "=2C")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(s: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except ValueError as e:
        raise ScramError("invalid base64") from e


def parse_client_first(payload: bytes) -> tuple[str, str, str, str]:
    """(gs2 header, client-first-bare, user name, client nonce)."""
    try:
        msg = payload.decode()
    except UnicodeDecodeError as e:
        raise ScramError("client-first-message is not UTF-8") from e
    parts = msg.split(",", 2)
    if len(parts) != 3:
        raise ScramError("malformed client-first-message")
    cbind, authzid, bare = parts
    if cbind not in ("n", "y"):
        raise ScramError("channel binding is not supported")
    if authzid and not authzid.startswith("a="):
        raise ScramError("malformed authzid")
    attrs = _attrs(bare)
    if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
        raise ScramError("client-first-message must start with n= and r=")
    if any(k == "m" for k, _ in attrs):
        raise ScramError("mandatory extensions are not supported")
    if not attrs[1][1]:
        raise ScramError("empty client nonce")
    return f"{cbind},{authzid},", bare, _decode_name(attrs[0][1]), attrs[1][1]


@dataclass
class ServerConversation:
    """One server side of SCRAM; ``credential`` is a stored ``make_credentials`` document for the user."""
    mechanism: str
    credential: dict
    gs2_header: str
    client_first_bare: str
    client_nonce: str
    server_first: str = ""
    nonce: str = ""
    done: bool = False

    @classmethod
    def start(cls, mechanism: str, credential: dict, client_first: bytes, *,
              server_nonce: str | None = None) -> tuple[ServerConversation, bytes]:
        """Begin with the client-first-message; returns the conversation and the server-first-message."""
        if mechanism not in _HASH:
            raise ScramError(f"unsupported mechanism {mechanism}")
        gs2, bare, _user, cnonce = parse_client_first(client_first)
        conv = cls(mechanism, credential, gs2, bare, cnonce)
        conv.nonce = cnonce + (server_nonce or _b64(os.urandom(24)))
        conv.server_first = f"r={conv.nonce},s={credential['salt']},i={int(credential['iterationCount'])}"
        return conv, conv.server_first.encode()

    def finish(self, client_final: bytes) -> bytes:
        """Check the client proof; returns the server-final-message (``v=<signature>``)."""
        if self.done:
            raise ScramError("conversation already finished")
        try:
            msg = client_final.decode()
        except UnicodeDecodeError as e:
            raise ScramError("client-final-message is not UTF-8") from e
        attrs = _attrs(msg)
        if len(attrs) < 3 or attrs[0][0] != "c" or attrs[1][0] != "r" or attrs[-1][0] != "p":
            raise ScramError("malformed client-final-message")
        if _unb64(attrs[0][1]) != self.gs2_header.encode():
            raise ScramError("channel binding data does not match")
        if attrs[1][1] != self.nonce:
            raise ScramError("nonce mismatch")
        without_proof = msg[:msg.rindex(",p=")]
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        name = _HASH[self.mechanism]
        stored_key = _unb64(self.credential["storedKey"])
        proof = _unb64(attrs[-1][1])
        signature = _hmac(name, stored_key, auth_message)
        if len(proof) != len(signature):
            raise ScramError("bad proof length")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(name, client_key).digest(), stored_key):
            raise ScramError("proof mismatch")
        self.done = True
        server_sig = _hmac(name, _unb64(self.credential["serverKey"]), auth_message)
        return f"v={_b64(server_sig)}".encode()


class ClientConversation:
    """The client side (used by members to log in to each other as ``__system``)."""

    def __init__(self, mechanism: str, user: str, password: str, *, nonce: str | None = None,
                 cache: dict | None = None, secret: bytes | None = None) -> None:
        if mechanism not in _HASH:
            raise ScramError(f"unsupported mechanism {mechanism}")
        self.mechanism = mechanism
        self.user = user
        self.secret = secret if secret is not None else mongo_password(mechanism, user, password)
        self.nonce = nonce or _b64(os.urandom(24))
        self.first_bare = f"n={encode_name(user)},r={self.nonce}"
        self.cache = cache if cache is not None else {}
        self.server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self.first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        msg = server_first.decode()
        attrs = dict(_attrs(msg))
        rnonce, salt, iters = attrs.get("r", ""), _unb64(attrs.get("s", "")), int(attrs.get("i", "0"))
        if not rnonce.startswith(self.nonce) or len(rnonce) == len(self.nonce):
            raise ScramError("server nonce does not extend the client nonce")
        if iters < 4096:
            raise ScramError("iteration count too low")
        key = (self.mechanism, self.secret, salt, iters)
        sp = self.cache.get(key)
        if sp is None:
            sp = self.cache[key] = salted_password(self.mechanism, self.secret, salt, iters)
        name = _HASH[self.mechanism]
        without_proof = f"c={_b64(b'n,,')},r={rnonce}"
        auth_message = f"{self.first_bare},{msg},{without_proof}".encode()
        client_key = _hmac(name, sp, b"Client Key")
        signature = _hmac(name, hashlib.new(name, client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = _hmac(name, _hmac(name, sp, b"Server Key"), auth_message)
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        attrs = dict(_attrs(server_final.decode()))
        if "e" in attrs:
            raise ScramError(f"server error: {attrs['e']}")
        if not hmac.compare_digest(_unb64(attrs.get("v", "")), self.server_signature):
            raise ScramError("server signature mismatch")
