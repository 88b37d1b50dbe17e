"""The in-process API that Security (auth.py) uses for replicated writes."""
from __future__ import annotations

import asyncio

import pytest
from mongosim.errors import CommandError
from mongosim.node import PRIMARY, Options
from mongosim.server import Connection, Server
from mongosim.testing import allocate_subnet, using_real_mongod

pytestmark = pytest.mark.skipif(using_real_mongod(), reason="exercises the simulator's internals")


@pytest.mark.timeout(60)
def test_apply_local_write_goes_through_the_oplog(tmp_path):
    prefix, lock = allocate_subnet("127.10")
    ip = f"{prefix}.1"

    async def scenario() -> None:
        srv = Server(Options(port=37017, bind_ips=[ip], repl_set="rs", dbpath=str(tmp_path)))
        await srv.start()
        try:
            conn = Connection((ip, 5555), (ip, 37017))
            with pytest.raises(CommandError) as e:
                await srv.node.apply_local_write("admin", "system.users", {"insert": {"_id": "admin.x"}})
            assert e.value.code_name == "NotWritablePrimary"
            await srv.repl_set_initiate(conn, "admin", {"replSetInitiate": {
                "_id": "rs", "members": [{"_id": 0, "host": f"{ip}:37017"}]}})
            assert await srv.node.wait_for(lambda: srv.node.state == PRIMARY, 10)
            r = await srv.node.apply_local_write("admin", "system.users",
                                                 {"insert": {"_id": "admin.u", "user": "u", "db": "admin"}})
            assert r["n"] == 1
            await srv.node.apply_local_write("admin", "system.users",
                                             {"update": {"_id": "admin.u"}, "u": {"$set": {"roles": ["root"]}}})
            docs = await srv.node.find_local("admin", "system.users", {"user": "u"})
            assert docs == [{"_id": "admin.u", "user": "u", "db": "admin", "roles": ["root"]}]
            assert [e["op"] for e in srv.node.oplog if e.get("ns") == "admin.system.users"] == ["i", "u"]
            assert srv.node.commit_point >= srv.node.applied
            await srv.node.apply_local_write("admin", "system.users", {"delete": {"_id": "admin.u"}})
            assert await srv.node.find_local("admin", "system.users") == []
        finally:
            await srv.stop()

    try:
        asyncio.run(scenario())
    finally:
        lock.close()
