"""Authentication and authorization of the simulator: SCRAM (RFC vectors), roles, keyFile, and real pymongo logins
against running members on 127.11.0.0/16."""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from bson.binary import Binary
from mongosim import auth, scram
from mongosim.testing import Cluster, allocate_subnet, server_binary
from pymongo import MongoClient
from pymongo.errors import NotPrimaryError, OperationFailure

BLOCK = "127.11"
PW = "s3cret-pw"


@pytest.fixture
def mongosim_block() -> str:
    return BLOCK


# ---- SCRAM conversations (RFC 5802 §5 and RFC 7677 §3 examples) -------------------------------------------

RFC7677 = {"salt": "W22ZaJ0SNY7soEsUEjb6gQ==", "cnonce": "rOprNGfwEbeRWgbNEkqO",
           "snonce": "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
           "proof": "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
           "verifier": "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="}
RFC5802 = {"salt": "QSXCR+Q6sek8bf92", "cnonce": "fyko+d2lbbFgONRv9qkxdawL", "snonce": "3rfcNHYJY1ZVvWVs7j",
           "proof": "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "verifier": "rmF9pqV8S7suAoZWja4dJRkFsKQ="}


@pytest.mark.parametrize(("mech", "v"), [("SCRAM-SHA-256", RFC7677), ("SCRAM-SHA-1", RFC5802)])
def test_server_conversation_matches_rfc_example(mech: str, v: dict) -> None:
    cred = scram.credentials_from_secret(mech, b"pencil", salt=base64.b64decode(v["salt"]), iterations=4096)
    conv, first = scram.ServerConversation.start(mech, cred, f"n,,n=user,r={v['cnonce']}".encode(),
                                                 server_nonce=v["snonce"])
    nonce = v["cnonce"] + v["snonce"]
    assert first.decode() == f"r={nonce},s={v['salt']},i=4096"
    final = conv.finish(f"c=biws,r={nonce},p={v['proof']}".encode())
    assert final.decode() == f"v={v['verifier']}"


@pytest.mark.parametrize(("mech", "v"), [("SCRAM-SHA-256", RFC7677), ("SCRAM-SHA-1", RFC5802)])
def test_client_conversation_matches_rfc_example(mech: str, v: dict) -> None:
    client = scram.ClientConversation(mech, "user", "", nonce=v["cnonce"], secret=b"pencil")
    assert client.first() == f"n,,n=user,r={v['cnonce']}".encode()
    nonce = v["cnonce"] + v["snonce"]
    final = client.final(f"r={nonce},s={v['salt']},i=4096".encode())
    assert final.decode() == f"c=biws,r={nonce},p={v['proof']}"
    client.verify(f"v={v['verifier']}".encode())
    with pytest.raises(scram.ScramError):
        client.verify(b"v=" + base64.b64encode(b"x" * 20))


@pytest.mark.parametrize("mech", scram.MECHANISMS)
def test_wrong_password_and_tampering_are_refused(mech: str) -> None:
    cred = scram.make_credentials(mech, "alice", "right", iterations=4096)

    def run(password: str, mangle=lambda b: b) -> None:
        client = scram.ClientConversation(mech, "alice", password)
        conv, first = scram.ServerConversation.start(mech, cred, client.first())
        client.verify(conv.finish(mangle(client.final(first))))

    run("right")
    with pytest.raises(scram.ScramError):
        run("wrong")
    with pytest.raises(scram.ScramError):  # nonce changed by a man in the middle
        run("right", lambda b: b.replace(b",r=", b",r=X", 1))
    with pytest.raises(scram.ScramError):  # channel binding data altered
        run("right", lambda b: b.replace(b"c=biws", b"c=eSws", 1))
    with pytest.raises(scram.ScramError):
        scram.ServerConversation.start(mech, cred, b"p=tls-unique,,n=alice,r=abc")


def test_mongodb_password_digests() -> None:
    # SCRAM-SHA-1 in MongoDB runs PBKDF2 over md5("user:mongo:password") in hex; SHA-256 over the SASLprepped text.
    assert scram.mongo_password("SCRAM-SHA-1", "u", "p") == hashlib.md5(b"u:mongo:p").hexdigest().encode()
    assert scram.mongo_password("SCRAM-SHA-256", "u", "p\u00adw") == b"pw"


def test_user_names_are_escaped() -> None:
    cred = scram.make_credentials("SCRAM-SHA-256", "a,b=c", "pw", iterations=4096)
    client = scram.ClientConversation("SCRAM-SHA-256", "a,b=c", "pw")
    assert b"n=a=2Cb=3Dc," in client.first()
    assert scram.parse_client_first(client.first())[2] == "a,b=c"
    conv, first = scram.ServerConversation.start("SCRAM-SHA-256", cred, client.first())
    client.verify(conv.finish(client.final(first)))


def test_saslprep_lite() -> None:
    assert scram.saslprep("plain ASCII ~!") == "plain ASCII ~!"
    assert scram.saslprep("I\u00adX") == "IX"
    assert scram.saslprep("\u2168") == "IX"
    assert scram.saslprep("a\u00a0b") == "a b"
    with pytest.raises(scram.ScramError):
        scram.saslprep("a\x07b")


# ---- keyFile rules -----------------------------------------------------------------------------------------

def _key_file(tmp: Path, text: str, mode: int = 0o600, name: str = "key") -> str:
    p = tmp / name
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


def test_key_file_rules(tmp_path: Path) -> None:
    assert auth.load_key_file(_key_file(tmp_path, "abc def\n ghi=\n")) == "abcdefghi="
    assert auth.load_key_file(_key_file(tmp_path, "a" * 1024, 0o400, "max")) == "a" * 1024
    for text, mode, words in (("abcdefgh", 0o640, "too open"), ("abcdefgh", 0o604, "too open"),
                              ("abc de", 0o600, "length 5"), ("a" * 1025, 0o600, "length 1025"),
                              ("abcdef!gh", 0o600, "invalid char")):
        with pytest.raises(auth.KeyFileError, match=words):
            auth.load_key_file(_key_file(tmp_path, text, mode, "bad"))
    with pytest.raises(auth.KeyFileError):
        auth.load_key_file(str(tmp_path / "missing"))


@pytest.mark.parametrize(("text", "mode"), [("abcdefghijkl", 0o644), ("abc", 0o600)])
def test_bad_key_file_stops_startup(tmp_path: Path, text: str, mode: int) -> None:
    key = _key_file(tmp_path, text, mode)
    (tmp_path / "db").mkdir()
    prefix, lock = allocate_subnet(BLOCK)
    try:
        proc = subprocess.run([server_binary(), "--replSet", "rs", "--port", "37017", "--bind_ip", f"{prefix}.1",
                               "--dbpath", str(tmp_path / "db"), "--keyFile", key],
                              check=False, capture_output=True, text=True, timeout=30)
    finally:
        lock.close()
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr  # the message names the file


# ---- roles ----------------------------------------------------------------------------------------------------

def _privs(*roles: tuple[str, str]) -> set:
    out: set = set()
    for r, d in roles:
        out |= auth.role_privileges(r, d)
    return out


def _may(privs: set, command: str, db: str) -> bool:
    return auth.allowed(privs, *auth.required_privilege(command, db))


def test_role_matrix() -> None:
    read = _privs(("read", "app"))
    assert _may(read, "find", "app") and _may(read, "aggregate", "app")
    assert not _may(read, "insert", "app") and not _may(read, "find", "other")
    rw = _privs(("readWrite", "app"))
    assert _may(rw, "insert", "app") and _may(rw, "update", "app") and not _may(rw, "dropDatabase", "app")
    mon = _privs(("clusterMonitor", "admin"))
    assert _may(mon, "replSetGetStatus", "admin") and _may(mon, "serverStatus", "x")
    assert not _may(mon, "replSetReconfig", "admin") and not _may(mon, "insert", "app")
    adm = _privs(("clusterAdmin", "admin"))
    assert _may(adm, "replSetReconfig", "admin") and _may(adm, "replSetStepDown", "admin")
    assert not _may(adm, "insert", "app")
    ua = _privs(("userAdminAnyDatabase", "admin"))
    assert auth.allowed(ua, "app", auth.USER_ADMIN) and not _may(ua, "find", "app")
    root = _privs(("root", "admin"))
    assert all(_may(root, c, "app") for c in ("find", "insert", "replSetReconfig", "dropDatabase", "shutdown"))
    assert not _may(root, "replSetHeartbeat", "admin")  # member traffic is for __system only
    assert not auth.role_exists("root", "app") and not auth.role_exists("clusterAdmin", "app")
    assert not auth.role_exists("__system", "admin") and not auth.role_exists("nosuch", "admin")


def test_credentials_collection_is_guarded() -> None:
    def may(privs: set, command: str) -> bool:
        return auth.privileges_cover(privs, command, "admin", {command: "system.users"})

    read_admin, ua, root = _privs(("read", "admin")), _privs(("userAdminAnyDatabase", "admin")), _privs(
        ("root", "admin"))
    assert not may(read_admin, "find") and may(ua, "find") and may(root, "find")
    assert not may(ua, "insert") and not may(_privs(("readWrite", "admin")), "insert") and may(root, "insert")
    assert auth.privileges_cover(read_admin, "find", "admin", {"find": "other"})


def test_loopback_detection() -> None:
    assert auth.is_loopback("127.11.3.4") and auth.is_loopback("::1") and auth.is_loopback("::ffff:127.0.0.1")
    assert not auth.is_loopback("10.1.2.3") and not auth.is_loopback("example.org")


# ---- real members, real pymongo ----------------------------------------------------------------------------

def _login(member, user: str = "admin", password: str = PW, **kw) -> MongoClient:
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return MongoClient(member.ip, member.port, directConnection=True, username=user, password=password,
                       authSource=kw.pop("authSource", "admin"), **kw)


def _code(fn) -> tuple[int, str]:
    with pytest.raises(OperationFailure) as ei:
        fn()
    return ei.value.code, (ei.value.details or {}).get("codeName", "")


@pytest.fixture
def auth_set(mongosim_cluster):
    """A one-member set started with --auth and initiated through the localhost exception (no users yet)."""
    return mongosim_cluster(1, auth=True)


def test_localhost_exception_opens_then_closes(auth_set: Cluster) -> None:
    m = auth_set.members[0]
    anon = m.client()
    try:
        assert _code(lambda: anon.test.t.find_one()) == (13, "Unauthorized")
        assert _code(lambda: anon.test.command("createUser", "u", pwd=PW, roles=["read"])) == (13, "Unauthorized")
        anon.admin.command("createUser", "admin", pwd=PW, roles=["root"])
        assert _code(lambda: anon.admin.command("createUser", "second", pwd=PW, roles=["root"])) == (
            13, "Unauthorized")
        assert _code(lambda: anon.admin.command("replSetGetStatus")) == (13, "Unauthorized")
    finally:
        anon.close()
    admin = _login(m)
    try:
        users = admin.admin.command("usersInfo", 1)["users"]
        assert [(u["user"], u["db"], u["roles"]) for u in users] == [("admin", "admin",
                                                                       [{"role": "root", "db": "admin"}])]
        assert sorted(users[0]["mechanisms"]) == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
        # mongod remembers that users existed: dropping the last one does not reopen the exception.
        admin.admin.command("dropUser", "admin")
    finally:
        admin.close()
    anon = m.client()
    try:
        assert _code(lambda: anon.admin.command("createUser", "again", pwd=PW, roles=["root"])) == (
            13, "Unauthorized")
    finally:
        anon.close()


def test_login_success_and_failure(auth_set: Cluster) -> None:
    m = auth_set.members[0]
    boot = m.client()
    boot.admin.command("createUser", "admin", pwd=PW, roles=["root"])
    boot.close()
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1", None):
        kw = {"authMechanism": mech} if mech else {}
        c = _login(m, **kw)
        try:
            st = c.admin.command("connectionStatus")["authInfo"]
            assert st["authenticatedUsers"] == [{"user": "admin", "db": "admin"}]
            c.app.items.insert_one({"_id": mech or "default"})
        finally:
            c.close()
    for user, pw, src in (("admin", "wrong", "admin"), ("nobody", PW, "admin"), ("admin", PW, "app")):
        c = _login(m, user, pw, authSource=src)
        try:
            assert _code(lambda c=c: c.app.items.find_one()) == (18, "AuthenticationFailed")
        finally:
            c.close()


def test_handshake_advertises_mechanisms_and_speculative_login(auth_set: Cluster) -> None:
    m = auth_set.members[0]
    anon = m.client(maxPoolSize=1)
    try:
        anon.admin.command("createUser", "admin", pwd=PW, roles=["root"], mechanisms=["SCRAM-SHA-256"])
        hello = anon.admin.command("hello", saslSupportedMechs="admin.admin")
        assert hello["saslSupportedMechs"] == ["SCRAM-SHA-256"]
        assert "saslSupportedMechs" not in anon.admin.command("hello", saslSupportedMechs="admin.nobody")
        # A speculative saslStart inside hello, finished with saslContinue on the same connection.
        client = scram.ClientConversation("SCRAM-SHA-256", "admin", PW)
        hello = anon.admin.command("hello", speculativeAuthenticate={
            "saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": Binary(client.first()), "db": "admin",
            "options": {"skipEmptyExchange": True}})
        spec = hello["speculativeAuthenticate"]
        r = anon.admin.command("saslContinue", conversationId=spec["conversationId"],
                               payload=Binary(client.final(spec["payload"])))
        assert r["done"] is True
        client.verify(r["payload"])
        assert anon.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"] == [
            {"user": "admin", "db": "admin"}]
        assert anon.app.items.count_documents({}) == 0
    finally:
        anon.close()


def test_roles_are_enforced(auth_set: Cluster) -> None:
    m = auth_set.members[0]
    boot = m.client()
    boot.admin.command("createUser", "useradmin", pwd=PW, roles=["userAdminAnyDatabase"])
    boot.close()
    ua = _login(m, "useradmin")
    try:
        ua.app.command("createUser", "reader", pwd=PW, roles=["read"])
        ua.app.command("createUser", "writer", pwd=PW, roles=[{"role": "readWrite", "db": "app"}])
        ua.admin.command("createUser", "monitor", pwd=PW, roles=["clusterMonitor"])
        ua.admin.command("createUser", "admin", pwd=PW, roles=["root"])
        assert _code(lambda: ua.app.command("createUser", "x", pwd=PW, roles=["root"]))[1] == "RoleNotFound"
        assert _code(lambda: ua.app.items.find_one()) == (13, "Unauthorized")
    finally:
        ua.close()
    writer, reader, monitor = (_login(m, u, authSource=s) for u, s in (("writer", "app"), ("reader", "app"),
                                                                         ("monitor", "admin")))
    try:
        writer.app.items.insert_one({"_id": 1})
        assert reader.app.items.find_one() == {"_id": 1}
        assert _code(lambda: reader.app.items.insert_one({"_id": 2})) == (13, "Unauthorized")
        assert _code(lambda: reader.other.items.find_one()) == (13, "Unauthorized")
        assert _code(lambda: writer.admin.command("replSetGetStatus")) == (13, "Unauthorized")
        assert monitor.admin.command("replSetGetStatus")["myState"] == 1
        assert _code(lambda: monitor.app.items.insert_one({"_id": 3})) == (13, "Unauthorized")
        cfg = monitor.admin.command("replSetGetConfig")["config"]
        cfg["version"] += 1
        assert _code(lambda: monitor.admin.command("replSetReconfig", cfg)) == (13, "Unauthorized")
        # Role changes apply to connections that are already logged in.
        admin = _login(m)
        admin.app.command("grantRolesToUser", "reader", roles=["readWrite"])
        reader.app.items.insert_one({"_id": 2})
        admin.app.command("dropUser", "reader")
        assert _code(lambda: reader.app.items.find_one()) == (13, "Unauthorized")
        admin.close()
    finally:
        for c in (writer, reader, monitor):
            c.close()


def test_update_user_changes_password_and_mechanisms(auth_set: Cluster) -> None:
    m = auth_set.members[0]
    boot = m.client()
    boot.admin.command("createUser", "admin", pwd=PW, roles=["root"])
    boot.close()
    admin = _login(m)
    try:
        admin.app.command("createUser", "svc", pwd="old-pw", roles=["read"])
        admin.app.command("updateUser", "svc", pwd="new-pw", mechanisms=["SCRAM-SHA-256"])
        info = admin.app.command("usersInfo", "svc")["users"]
        assert [(u["user"], u["mechanisms"]) for u in info] == [("svc", ["SCRAM-SHA-256"])]
        assert _code(lambda: admin.app.command("updateUser", "ghost", pwd="x"))[1] == "UserNotFound"
        assert _code(lambda: admin.app.command("createUser", "svc", pwd="x", roles=[]))[0] == 51003
    finally:
        admin.close()
    for pw, mech, ok in (("old-pw", "SCRAM-SHA-256", False), ("new-pw", "SCRAM-SHA-1", False),
                         ("new-pw", "SCRAM-SHA-256", True)):
        c = _login(m, "svc", pw, authSource="app", authMechanism=mech)
        try:
            if ok:
                # A user may look at itself without userAdmin.
                assert c.app.command("usersInfo", "svc")["users"][0]["roles"] == [{"role": "read", "db": "app"}]
                assert _code(lambda c=c: c.app.command("usersInfo", 1)) == (13, "Unauthorized")
            else:
                assert _code(lambda c=c: c.app.items.find_one()) == (18, "AuthenticationFailed")
        finally:
            c.close()


def _set_with_key(mongosim_cluster, tmp_path: Path, n: int) -> Cluster:
    key = _key_file(tmp_path, base64.b64encode(os.urandom(60)).decode())
    c = mongosim_cluster(n, key_file=key)
    p = c.wait_for_primary()
    boot = p.client()
    boot.admin.command("createUser", "admin", pwd=PW, roles=["root"])
    boot.close()
    return c


def test_users_replicate_and_survive_failover(mongosim_cluster, tmp_path: Path) -> None:
    c = _set_with_key(mongosim_cluster, tmp_path, 3)
    old = c.wait_for_primary()
    anon = old.client()
    try:  # a keyFile implies authorization
        assert _code(lambda: anon.app.items.find_one()) == (13, "Unauthorized")
    finally:
        anon.close()
    rs = c.client(username="admin", password=PW, authSource="admin")
    rs.admin.command("createUser", "app", pwd=PW, roles=[{"role": "readWrite", "db": "app"}, "clusterMonitor"])
    secondary = next(x for x in c.members if x is not old)
    on_secondary = _login(secondary)
    try:  # user writes go through the primary's oplog, like every write
        with pytest.raises(NotPrimaryError) as ei:
            on_secondary.admin.command("createUser", "x", pwd=PW, roles=[])
        assert ei.value.details["codeName"] == "NotWritablePrimary"
    finally:
        on_secondary.close()
    c.kill(old)
    new = c.wait_for_primary(timeout=30, exclude=[old])
    app = _login(new, "app")
    try:
        app.app.items.insert_one({"_id": "after-failover"})
        assert app.app.items.find_one() == {"_id": "after-failover"}
        assert app.admin.command("replSetGetStatus")["myState"] == 1
    finally:
        app.close()


def test_member_with_wrong_key_cannot_join(mongosim_cluster, tmp_path: Path) -> None:
    good = _key_file(tmp_path, "goodkey" + "A" * 40, name="good")
    bad = _key_file(tmp_path, "badkey" + "B" * 40, name="bad")
    c = mongosim_cluster(3, initiate=False, key_file=good)
    c.terminate(2)
    c.key_file = bad
    c.start(2)
    c.key_file = good
    c.initiate(members=[0, 1])
    p = c.wait_for_primary()
    boot = p.client()
    boot.admin.command("createUser", "admin", pwd=PW, roles=["root"])
    boot.close()
    admin = c.client(username="admin", password=PW, authSource="admin")
    cfg = admin.admin.command("replSetGetConfig")["config"]
    cfg["version"] += 1
    cfg["members"].append({"_id": 2, "host": c.members[2].address, "priority": 0, "votes": 0})
    admin.admin.command("replSetReconfig", cfg)
    admin.app.items.insert_one({"_id": 1})
    stranger = c.members[2]
    # For 15 heartbeat intervals the outsider must stay out: never healthy in the primary's view, never handed the
    # config (its hello has no setName).
    deadline = time.monotonic() + 15 * c.heartbeat_interval_ms / 1000 + 2
    while time.monotonic() < deadline:
        st = admin.admin.command("replSetGetStatus")
        me = next(x for x in st["members"] if x["name"] == stranger.address)
        assert me["health"] != 1 and me["stateStr"] != "SECONDARY"
        assert "setName" not in (stranger.hello() or {})
        time.sleep(0.2)
    # Control: the same member with the right key joins and replicates.
    c.terminate(2)
    c.start(2)

    def joined() -> bool:
        st = admin.admin.command("replSetGetStatus")
        return any(x["name"] == stranger.address and x["stateStr"] == "SECONDARY" for x in st["members"])

    c.wait_for(joined, timeout=30, what="re-keyed member is SECONDARY")
    direct = _login(stranger)
    try:
        c.wait_for(lambda: direct.app.items.find_one({"_id": 1}) is not None, timeout=30,
                   what="replicated document on the re-keyed member")
    finally:
        direct.close()
