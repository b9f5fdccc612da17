"""Identity (RFC 8621 §6) get/changes/set over a real JMAP daemon."""

from __future__ import annotations

from jmap_testlib import CORE, MAIL

SUB = "urn:ietf:params:jmap:submission"
USING = [CORE, MAIL, SUB]


async def identities(jmap) -> dict[str, dict]:
    r = await jmap.ok("Identity/get", {"ids": None}, USING)
    return {i["email"]: i for i in r["list"]}


async def test_default_identities_follow_the_addresses(jmap_any):
    jmap = jmap_any
    aid = jmap.env.account_ids["alice"]
    r = await jmap.ok("Identity/get", {}, USING)
    assert r["list"] == [{"id": f"i{aid}", "name": "", "email": "alice@example.test",
                          "replyTo": None, "bcc": None, "textSignature": "",
                          "htmlSignature": "", "mayDelete": False}]
    state = r["state"]
    # an alias added by the operator appears as a created identity
    await jmap.env.app.directory.add_alias("sales@example.test", "alice@example.test")
    ch = await jmap.ok("Identity/changes", {"sinceState": state}, USING)
    [new_id] = ch["created"]
    assert ch["updated"] == [] and ch["destroyed"] == []
    got = await identities(jmap)
    assert got["sales@example.test"]["id"] == new_id
    assert got["sales@example.test"]["mayDelete"] is False
    # nothing changed since: an empty answer with the same state
    again = await jmap.ok("Identity/changes", {"sinceState": ch["newState"]}, USING)
    assert (again["created"], again["newState"]) == ([], ch["newState"])
    # and removed with the alias
    await jmap.env.app.directory.delete_alias("sales@example.test")
    ch2 = await jmap.ok("Identity/changes", {"sinceState": ch["newState"]}, USING)
    assert ch2["destroyed"] == [new_id]
    assert list(await identities(jmap)) == ["alice@example.test"]


async def test_identity_set(jmap):
    aid = jmap.env.account_ids["alice"]
    await jmap.env.app.directory.add_alias("team@example.test", "alice@example.test")
    state = (await jmap.ok("Identity/get", {}, USING))["state"]
    r = await jmap.ok("Identity/set", {"create": {
        "work": {"name": "Alice at Work", "email": "alice+work@example.test",
                 "replyTo": [{"name": "Team", "email": "team@example.test"}],
                 "textSignature": "-- \nAlice", "htmlSignature": "<p>Alice</p>"},
        "alias": {"email": "team@example.test", "bcc": [{"email": "archive@example.test"}]},
        "theirs": {"email": "bob@example.test"},
        "remote": {"email": "alice@gmail.example"},
        "bad": {"email": "alice@example.test", "replyTo": "not a list"},
        "noemail": {"name": "x"},
        "serverset": {"email": "alice@example.test", "mayDelete": False},
    }}, USING)
    assert r["oldState"] == state
    assert set(r["created"]) == {"work", "alias"}
    assert r["created"]["work"]["mayDelete"] is True
    assert r["created"]["alias"]["name"] == ""  # defaults of what was not given
    assert r["notCreated"]["theirs"]["type"] == "forbiddenFrom"
    assert r["notCreated"]["remote"]["type"] == "forbiddenFrom"
    assert r["notCreated"]["bad"]["properties"] == ["replyTo"]
    assert r["notCreated"]["noemail"]["properties"] == ["email"]
    assert r["notCreated"]["serverset"]["properties"] == ["mayDelete"]
    work = r["created"]["work"]["id"]
    got = (await jmap.ok("Identity/get", {"ids": [work]}, USING))["list"][0]
    assert got == {"id": work, "name": "Alice at Work", "email": "alice+work@example.test",
                   "replyTo": [{"name": "Team", "email": "team@example.test"}], "bcc": None,
                   "textSignature": "-- \nAlice", "htmlSignature": "<p>Alice</p>",
                   "mayDelete": True}
    # update: name and signatures yes; email is immutable; defaults are editable
    r2 = await jmap.ok("Identity/set", {"ifInState": r["newState"], "update": {
        work: {"name": "Alice (work)", "replyTo": None},
        f"i{aid}": {"name": "Alice", "textSignature": "Alice"},
        "i999": {"name": "nobody"},
    }}, USING)
    assert r2["updated"] == {work: None, f"i{aid}": None}
    assert r2["notUpdated"]["i999"]["type"] == "notFound"
    r3 = await jmap.ok("Identity/set", {"update": {work: {"email": "team@example.test"}}},
                       USING)
    assert r3["notUpdated"][work]["properties"] == ["email"]
    name, err = await jmap.call("Identity/set", {"ifInState": r["newState"], "update": {
        work: {"name": "stale"}}}, USING)
    assert (name, err["type"]) == ("error", "stateMismatch")
    got = await identities(jmap)
    assert got["alice@example.test"]["name"] == "Alice"
    assert got["alice+work@example.test"]["name"] == "Alice (work)"
    assert got["alice+work@example.test"]["replyTo"] is None
    # destroy: the default of an address is not deletable
    r4 = await jmap.ok("Identity/set", {"destroy": [work, f"i{aid}", "i12345"]}, USING)
    assert r4["destroyed"] == [work]
    assert r4["notDestroyed"][f"i{aid}"]["type"] == "forbidden"
    assert r4["notDestroyed"]["i12345"]["type"] == "notFound"
    # the change log has it all, from the first state
    ch = await jmap.ok("Identity/changes", {"sinceState": state}, USING)
    alias_id = r["created"]["alias"]["id"]
    assert sorted(ch["created"]) == sorted([alias_id])  # work was created and destroyed
    assert ch["updated"] == [f"i{aid}"]
    assert ch["destroyed"] == []
    ch = await jmap.ok("Identity/changes", {"sinceState": r["newState"]}, USING)
    assert ch["destroyed"] == [work] and ch["updated"] == [f"i{aid}"]
    name, err = await jmap.call("Identity/changes", {"sinceState": "bogus"}, USING)
    assert err["type"] == "cannotCalculateChanges"


async def test_submission_uses_identities(jmap):
    drafts = await jmap.mailbox("drafts")
    r = await jmap.ok("Identity/set", {"create": {"w": {"email": "alice+w@example.test"}}},
                      USING)
    ident = r["created"]["w"]["id"]
    responses = await jmap.request([
        ["Email/set", {"accountId": jmap.account, "create": {"d": {
            "mailboxIds": {drafts: True}, "from": [{"email": "alice+w@example.test"}],
            "to": [{"email": "bob@example.test"}], "subject": "hi",
            "bodyValues": {"b": {"value": "hi"}}, "textBody": [{"partId": "b"}]}}}, "0"],
        ["EmailSubmission/set", {"accountId": jmap.account, "create": {
            "ok": {"identityId": ident, "emailId": "#d"},
            "nope": {"identityId": "i424242", "emailId": "#d"}}}, "1"]], USING)
    result = responses[1][1]
    assert "ok" in result["created"]
    assert result["notCreated"]["nope"]["properties"] == ["identityId"]
    await jmap.ok("Identity/set", {"destroy": [ident]}, USING)
    r = await jmap.ok("EmailSubmission/set", {"create": {
        "again": {"identityId": ident, "emailId": responses[0][1]["created"]["d"]["id"]}}},
        USING)
    assert r["notCreated"]["again"]["properties"] == ["identityId"]
