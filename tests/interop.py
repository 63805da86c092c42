"""interop.py: an independent msgpack-rpc client of sidecard, written from
protocol/PROTOCOL.md alone (no code from libclient), to prove the wire
contract is enough for any language.

Usage: python3 interop.py SOCKET   (needs python3-msgpack; Debian's
/usr/bin/python3 has it). Exits non-zero on the first failed assertion and
prints "N passed, 0 failed" at the end.
"""
import socket
import sys

import msgpack

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
USD = 1_000_000


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.msgid = 0

    def request(self, method, args=None):
        """Packs one request; args None sends an empty params array."""
        self.msgid += 1
        params = [] if args is None else [args]
        return self.msgid, msgpack.packb([REQUEST, self.msgid, method, params])

    def read(self):
        """The next whole message from the daemon."""
        while True:
            for msg in self.unpacker:
                return msg
            data = self.sock.recv(65536)
            assert data, "the daemon closed the connection"
            self.unpacker.feed(data)

    def call(self, method, args=None):
        """One round trip: returns (error, result)."""
        msgid, data = self.request(method, args)
        self.sock.sendall(data)
        msg = self.read()
        assert msg[0] == RESPONSE and msg[1] == msgid, msg
        error, result = msg[2], msg[3]
        assert (error is None) != (result is None), msg
        return error, result

    def ok(self, method, args=None):
        error, result = self.call(method, args)
        assert error is None, (method, args, error)
        return result


passed = 0


def ok(what):
    global passed
    passed += 1
    print("ok %d - %s" % (passed, what))


def main(path):
    c = Client(path)

    hello = c.ok("hello")
    assert hello["server"] == "sidecard" and hello["protocol"] == 1, hello
    assert hello["limits"]["max_message"] >= 65536, hello
    ok("hello: %s %s" % (hello["server"], hello["version"]))

    org = c.ok("orgs.create", {"name": "interop"})
    assert org["name"] == "interop" and org["id"] > 0 and org["agents"] == 0, org
    ok("orgs.create")

    agent = c.ok("agents.create", {
        "org": "interop", "name": "py-bot", "priority": "normal",
        "wallet": {"balance": 5000 * USD, "max_per_txn": 100 * USD},
        "rules": [{"name": "OpenAI cap", "match": "openai.*",
                   "max_cost_per_txn": 5 * USD, "hourly_rate_limit": 1000}],
    })
    assert agent["org_id"] == org["id"] and agent["org"] == "interop", agent
    assert agent["wallet"]["balance"] == 5000 * USD, agent
    assert agent["rules"][0]["match"] == "openai.*", agent
    aid = agent["id"]
    ok("agents.create with a wallet and a rule")

    allowed = c.ok("check", {"agent_id": aid, "action": "openai.chat",
                             "estimated_cost": 2500000})
    assert allowed["status"] == "allowed" and allowed["replayed"] is False, allowed
    assert allowed["available"] == 5000 * USD - 2500000, allowed
    assert allowed["warnings"] == [] and allowed.get("block_reason") is None, allowed
    ok("check allowed, transaction %d" % allowed["transaction_id"])

    blocked = c.ok("check", {"agent_id": aid, "action": "openai.chat",
                             "estimated_cost": 6 * USD, "type": "api_call",
                             "metadata": {"model": "gpt-4o"}})
    assert blocked["status"] == "blocked", blocked
    assert blocked["block_reason"] == "rule:OpenAI cap:max_cost_per_txn", blocked
    ok("check blocked: %s" % blocked["block_reason"])

    settled = c.ok("report", {"transaction_id": allowed["transaction_id"],
                              "outcome": "success", "actual_cost": 2400000})
    assert settled["status"] == "settled" and settled["charged"] == 2400000, settled
    assert settled["balance"] == 5000 * USD - 2400000 and settled["debt"] == 0, settled
    ok("report")

    # 100 checks in one write; responses come back in order, matched by msgid.
    batch, ids = b"", []
    for i in range(100):
        msgid, data = c.request("check", {"agent_id": aid, "action": "tool.run",
                                          "estimated_cost": 10000 + i})
        ids.append(msgid)
        batch += data
    c.sock.sendall(batch)
    answers = {}
    order = []
    for _ in ids:
        msg = c.read()
        assert msg[0] == RESPONSE and msg[2] is None, msg
        answers[msg[1]] = msg[3]
        order.append(msg[1])
    assert sorted(answers) == ids and order == ids, order
    assert all(answers[m]["status"] == "allowed" for m in ids)
    txns = {answers[m]["transaction_id"] for m in ids}
    assert len(txns) == 100, "transaction ids are not unique"
    wallet = c.ok("wallets.get", {"agent_id": aid})
    assert wallet["held"] == sum(10000 + i for i in range(100)), wallet
    ok("100 pipelined checks, responses matched by msgid")

    error, result = c.call("check", {"agent_id": aid, "action": "openai.chat",
                                     "estimated_cost": 2.5})
    assert result is None and error["name"] == "invalid_argument", error
    assert error["code"] == -1001 and "estimated_cost" in error["message"], error
    ok("float estimated_cost: invalid_argument: %s" % error["message"])

    error, _ = c.call("check", {"agent_id": aid, "action": "openai.chat",
                                "estimated_cost": 1, "estimatedCost": 1})
    assert error["name"] == "invalid_argument" and "estimatedCost" in error["message"], error
    error, _ = c.call("check", {"agent_id": aid, "action": "openai.chat", "estimatedCost": 1})
    assert error["message"] == "unknown field 'estimatedCost'", error
    error, _ = c.call("agents.create", {"org": "interop", "name": "y", "wallet": {"balanse": 1}})
    assert error["message"] == "unknown field 'wallet.balanse'", error
    error, _ = c.call("check", {"agent_id": aid, "action": "x", "estimated_cost": "1"})
    assert error["name"] == "invalid_argument" and "estimated_cost" in error["message"], error
    error, _ = c.call("no.such.method", {})
    assert error["name"] == "unsupported" and error["code"] == -1005, error
    error, _ = c.call("agents.get", {"agent_id": 999999})
    assert error["name"] == "not_found" and error["code"] == -1002, error
    ok("unknown field, string money, unknown method, not_found")

    # Pricing: a rate per million tokens, and a report priced from token counts.
    price = c.ok("pricing.set", {"model": "py-model", "input": 2500000, "output": 10000000,
                                 "effective_from": 1})
    assert price["version"] == 1 and price["cached_input"] == 2500000, price
    held = c.ok("check", {"agent_id": aid, "action": "openai.chat", "estimated_cost": USD})
    error, _ = c.call("report", {"transaction_id": held["transaction_id"], "outcome": "success",
                                 "model": "py-model", "input_tokens": 1, "actual_cost": 5})
    assert error["name"] == "invalid_argument", error
    assert "model" in error["message"] and "actual_cost" in error["message"], error
    error, _ = c.call("report", {"transaction_id": held["transaction_id"], "outcome": "success",
                                 "input_tokens": 1})
    assert error["name"] == "invalid_argument" and "model" in error["message"], error
    priced = c.ok("report", {"transaction_id": held["transaction_id"], "outcome": "success",
                             "model": "py-model", "input_tokens": 5000, "output_tokens": 1500})
    assert priced["charged"] == 27500 and priced["model"] == "py-model", priced
    assert priced["rate_version"] == 1 and priced["replayed"] is False, priced
    txn = c.ok("transactions.list", {"agent_id": aid, "limit": 200})
    txn = [t for t in txn if t["id"] == held["transaction_id"]][0]
    assert (txn["model"], txn["rate_version"], txn["input_tokens"], txn["output_tokens"],
            txn["cached_input_tokens"], txn["charged"]) == ("py-model", 1, 5000, 1500, 0,
                                                            27500), txn
    ok("pricing.set and a report priced from token counts")

    # A notification is executed and never answered.
    c.sock.sendall(msgpack.packb([NOTIFICATION, "orgs.create", [{"name": "notified"}]]))
    orgs = c.ok("orgs.list", {})
    assert [o["name"] for o in orgs] == ["interop", "notified"], orgs
    ok("a client notification is executed, not answered")

    # Alerts are pushed as notifications to a connection that subscribed.
    sub = Client(path)
    sub_result = sub.ok("alerts.subscribe")
    assert sub_result["subscribed"] is True and sub_result["last_alert_id"] == 0, sub_result
    low = c.ok("agents.create", {"org": "interop", "name": "low-bot",
                                 "wallet": {"balance": 10 * USD}})
    c.ok("check", {"agent_id": low["id"], "action": "tool.run", "estimated_cost": 9_500_000})
    msg = sub.read()
    assert msg[0] == NOTIFICATION and msg[1] == "alert" and len(msg[2]) == 1, msg
    alert = msg[2][0]
    assert alert["kind"] == "low_balance" and alert["severity"] == "warning", alert
    assert alert["agent_id"] == low["id"] and alert["value"] == 500_000, alert
    listed = c.ok("alerts.list", {"agent_id": low["id"]})
    assert [a["id"] for a in listed] == [alert["id"]], listed
    assert sub.ok("alerts.unsubscribe") == {"subscribed": False}
    ok("alerts.subscribe: a low balance pushed as [2, \"alert\", [alert]]")

    # Roles: this process runs as the daemon's user, an administrator, with no
    # token; a connection that says hello with an agent's token acts for that
    # agent alone, and a token one character off is refused.
    assert hello["role"] == "admin" and "agent_id" not in hello, hello
    bot = c.ok("agents.create", {"org": "interop", "name": "token-bot",
                                 "wallet": {"balance": 10 * USD}})
    token = bot["token"]
    assert token.startswith("sca_%d_" % bot["id"]) and "token" not in c.ok(
        "agents.get", {"agent_id": bot["id"]}), bot
    agent_conn = Client(path)
    me = agent_conn.ok("hello", {"token": token})
    assert me["role"] == "agent" and me["agent_id"] == bot["id"], me
    agent_conn.ok("check", {"agent_id": bot["id"], "action": "tool.run", "estimated_cost": 1})
    error, _ = agent_conn.call("wallets.update", {"agent_id": bot["id"], "balance": 1000 * USD})
    assert error["name"] == "permission_denied" and error["code"] == -1011, error
    forged = token[:-1] + ("B" if token[-1] == "A" else "A")
    error, _ = Client(path).call("hello", {"token": forged})
    assert error["name"] == "permission_denied", error
    ok("hello {token}: an agent's connection gates for it, cannot raise its balance")

    print("%d passed, 0 failed" % passed)


if __name__ == "__main__":
    main(sys.argv[1])
