"""MongoDB wire protocol framing: OP_MSG (with optional CRC-32C checksum), legacy OP_QUERY and OP_REPLY."""
from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

import bson

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013
CHECKSUM_PRESENT = 1
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16
MAX_MESSAGE = 48_000_000


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class ProtocolError(Exception):
    pass


@dataclass
class Request:
    request_id: int
    op_code: int
    flags: int = 0
    body: dict = field(default_factory=dict)
    db: str = "admin"
    legacy: bool = False


async def read_request(reader: asyncio.StreamReader) -> Request:
    header = await reader.readexactly(16)
    length, request_id, _response_to, op_code = struct.unpack("<iiii", header)
    if length < 16 or length > MAX_MESSAGE:
        raise ProtocolError(f"bad message length {length}")
    payload = await reader.readexactly(length - 16)
    if op_code == OP_MSG:
        return _parse_msg(request_id, header, payload)
    if op_code == OP_QUERY:
        return _parse_query(request_id, payload)
    raise ProtocolError(f"unsupported opCode {op_code}")


def _parse_msg(request_id: int, header: bytes, payload: bytes) -> Request:
    (flags,) = struct.unpack_from("<I", payload, 0)
    end = len(payload)
    if flags & CHECKSUM_PRESENT:
        end -= 4
        (want,) = struct.unpack_from("<I", payload, end)
        if crc32c(header + payload[:end]) != want:
            raise ProtocolError("OP_MSG checksum mismatch")
    pos = 4
    body: dict | None = None
    seqs: dict[str, list] = {}
    while pos < end:
        kind = payload[pos]
        pos += 1
        if kind == 0:
            (size,) = struct.unpack_from("<i", payload, pos)
            body = bson.decode(payload[pos:pos + size])
            pos += size
        elif kind == 1:
            (size,) = struct.unpack_from("<i", payload, pos)
            sec_end = pos + size
            nul = payload.index(b"\x00", pos + 4)
            ident = payload[pos + 4:nul].decode()
            docs = list(bson.decode_all(payload[nul + 1:sec_end]))
            seqs.setdefault(ident, []).extend(docs)
            pos = sec_end
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if body is None:
        raise ProtocolError("OP_MSG without a body section")
    for ident, docs in seqs.items():
        body[ident] = docs
    return Request(request_id, OP_MSG, flags, body, body.get("$db", "admin"))


def _parse_query(request_id: int, payload: bytes) -> Request:
    (flags,) = struct.unpack_from("<i", payload, 0)
    nul = payload.index(b"\x00", 4)
    ns = payload[4:nul].decode()
    pos = nul + 1 + 8
    (size,) = struct.unpack_from("<i", payload, pos)
    query = bson.decode(payload[pos:pos + size])
    if "$query" in query:
        query = query["$query"]
    db = ns.split(".", 1)[0]
    return Request(request_id, OP_QUERY, flags, query, db, legacy=True)


_next_id = 0


def _new_id() -> int:
    global _next_id
    _next_id = (_next_id + 1) & 0x7FFFFFFF
    return _next_id


def encode_msg(doc: dict, response_to: int, flags: int = 0) -> bytes:
    body = bson.encode(doc)
    payload = struct.pack("<I", flags) + b"\x00" + body
    return struct.pack("<iiii", 16 + len(payload), _new_id(), response_to, OP_MSG) + payload


def encode_reply(doc: dict, response_to: int) -> bytes:
    body = bson.encode(doc)
    payload = struct.pack("<iqii", 8, 0, 0, 1) + body  # flags: AwaitCapable
    return struct.pack("<iiii", 16 + len(payload), _new_id(), response_to, OP_REPLY) + payload


def encode_command(doc: dict) -> tuple[int, bytes]:
    """An OP_MSG request (used for member-to-member traffic)."""
    rid = _new_id()
    body = bson.encode(doc)
    payload = struct.pack("<I", 0) + b"\x00" + body
    return rid, struct.pack("<iiii", 16 + len(payload), rid, 0, OP_MSG) + payload


async def read_reply(reader: asyncio.StreamReader) -> dict:
    header = await reader.readexactly(16)
    length, _rid, _to, op_code = struct.unpack("<iiii", header)
    payload = await reader.readexactly(length - 16)
    if op_code != OP_MSG:
        raise ProtocolError(f"unexpected reply opCode {op_code}")
    return bson.decode(payload[5:])
