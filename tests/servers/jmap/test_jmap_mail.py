"""RFC 8621 over real HTTP: Mailbox, Thread, Email get/query/set/import/parse, snippets, changes."""

from __future__ import annotations

import pytest

from jmap_testlib import MAIL, message

MULTIPART = (
    b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.test>\r\n"
    b"To: alice@example.test, Team: carol@example.test, dave@example.test;\r\n"
    b"Subject: Report\r\n"
    b"Message-ID: <report@example.test>\r\n"
    b"List-Unsubscribe: <mailto:unsub@example.test>, <https://example.test/u>\r\n"
    b"Date: Tue, 24 Nov 2026 08:30:00 +0200\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
    b"--outer\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
    b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe quarterly numbers are in.\r\n"
    b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>The <b>quarterly</b> numbers are in.</p>\r\n"
    b"--alt--\r\n"
    b"--outer\r\nContent-Type: application/pdf; name=report.pdf\r\n"
    b"Content-Disposition: attachment; filename=report.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfs\r\n"
    b"--outer--\r\n")


async def test_mailbox_get_and_roles(jmap):
    got = await jmap.ok("Mailbox/get", {"ids": None})
    roles = {m["role"] for m in got["list"]}
    assert {"inbox", "sent", "drafts", "trash", "junk", "archive"} <= roles
    inbox = next(m for m in got["list"] if m["role"] == "inbox")
    assert inbox["myRights"]["mayDelete"] is False
    assert inbox["totalEmails"] == 0
    got2 = await jmap.ok("Mailbox/get", {"ids": [inbox["id"], "m999", "junk"],
                                         "properties": ["name", "totalEmails"]})
    assert got2["list"] == [{"id": inbox["id"], "name": inbox["name"], "totalEmails": 0}]
    assert got2["notFound"] == ["m999", "junk"]


async def test_mailbox_set_and_changes(jmap):
    first = await jmap.ok("Mailbox/get", {"ids": []})
    state = first["state"]
    r = await jmap.ok("Mailbox/set", {"create": {
        "a": {"name": "Work", "sortOrder": 3},
        "bad": {"name": "x/y"},
        "dup": {"name": "Sent"},
        "role": {"name": "Second inbox", "role": "inbox"}}})
    work = r["created"]["a"]["id"]
    assert set(r["notCreated"]) == {"bad", "dup", "role"}
    assert all(e["type"] == "invalidProperties" for e in r["notCreated"].values())
    assert r["oldState"] == state and r["newState"] != state
    ch = await jmap.ok("Mailbox/changes", {"sinceState": state})
    assert ch["created"] == [work] and ch["oldState"] == state
    assert ch["newState"] == r["newState"]
    r = await jmap.ok("Mailbox/set", {"update": {work: {"name": "Office", "sortOrder": 7,
                                                        "isSubscribed": False},
                                                 "m999": {"name": "nope"}}})
    assert work in r["updated"] and r["notUpdated"]["m999"]["type"] == "notFound"
    got = await jmap.ok("Mailbox/get", {"ids": [work]})
    assert got["list"][0]["name"] == "Office" and got["list"][0]["sortOrder"] == 7
    assert got["list"][0]["isSubscribed"] is False
    ch = await jmap.ok("Mailbox/changes", {"sinceState": r["oldState"]})
    assert ch["updated"] == [work] and ch["created"] == []
    # a mailbox with an email needs onDestroyRemoveEmails
    created = await jmap.ok("Email/set", {"create": {"e": {
        "mailboxIds": {work: True}, "subject": "x",
        "bodyValues": {"1": {"value": "body"}}, "textBody": [{"partId": "1"}]}}})
    email = created["created"]["e"]["id"]
    r = await jmap.ok("Mailbox/set", {"destroy": [work]})
    assert r["notDestroyed"][work]["type"] == "mailboxHasEmail"
    r = await jmap.ok("Mailbox/set", {"destroy": [work], "onDestroyRemoveEmails": True})
    assert r["destroyed"] == [work]
    got = await jmap.ok("Email/get", {"ids": [email]})
    assert got["notFound"] == [email]
    inbox = await jmap.mailbox("inbox")
    r = await jmap.ok("Mailbox/set", {"destroy": [inbox]})
    assert r["notDestroyed"][inbox]["type"] == "forbidden"
    # wrong ifInState is a method error
    rname, res = await jmap.call("Mailbox/set", {"ifInState": "1", "destroy": [inbox]})
    assert rname == "error" and res["type"] == "stateMismatch"


async def test_mailbox_has_child(jmap):
    r = await jmap.ok("Mailbox/set", {"create": {"p": {"name": "Parent"},
                                                 "c": {"name": "Child", "parentId": "#p"}}})
    parent = r["created"]["p"]["id"]
    r = await jmap.ok("Mailbox/set", {"destroy": [parent]})
    assert r["notDestroyed"][parent]["type"] == "mailboxHasChild"
    q = await jmap.ok("Mailbox/query", {"filter": {"parentId": parent}})
    assert len(q["ids"]) == 1
    q = await jmap.ok("Mailbox/query", {"filter": {"hasAnyRole": True},
                                        "sort": [{"property": "sortOrder"}]})
    got = await jmap.ok("Mailbox/get", {"ids": q["ids"], "properties": ["role"]})
    assert got["list"][0]["role"] == "inbox" and len(q["ids"]) == 6
    q = await jmap.ok("Mailbox/query", {"filter": {"role": "trash"}})
    assert len(q["ids"]) == 1
    rname, res = await jmap.call("Mailbox/query", {"filter": {"color": "red"}})
    assert rname == "error" and res["type"] == "unsupportedFilter"
    rname, res = await jmap.call("Mailbox/query", {"sort": [{"property": "color"}]})
    assert rname == "error" and res["type"] == "unsupportedSort"
    rname, res = await jmap.call("Mailbox/queryChanges", {"sinceQueryState": q["queryState"]})
    assert rname == "error" and res["type"] == "cannotCalculateChanges"


async def test_email_get_properties_and_body(jmap):
    await jmap.deliver(MULTIPART)
    q = await jmap.ok("Email/query", {})
    [eid] = q["ids"]
    got = await jmap.ok("Email/get", {"ids": [eid]})
    [e] = got["list"]
    assert e["subject"] == "Report"
    assert e["from"] == [{"name": "Jörg", "email": "joerg@example.test"}]
    assert {a["email"] for a in e["to"]} == {"alice@example.test", "carol@example.test",
                                              "dave@example.test"}
    assert e["messageId"] == ["report@example.test"]
    assert e["hasAttachment"] is True
    assert e["sentAt"] == "2026-11-24T06:30:00Z"
    assert e["receivedAt"].endswith("Z")
    assert [p["type"] for p in e["textBody"]] == ["text/plain"]
    assert [p["type"] for p in e["htmlBody"]] == ["text/html"]
    [att] = e["attachments"]
    assert att["name"] == "report.pdf" and att["disposition"] == "attachment"
    assert e["bodyValues"] == {}
    assert "quarterly numbers" in e["preview"]
    got = await jmap.ok("Email/get", {
        "ids": [eid], "properties": ["bodyValues", "bodyStructure"],
        "fetchHTMLBodyValues": True, "maxBodyValueBytes": 10,
        "bodyProperties": ["partId", "type", "headers"]})
    [e] = got["list"]
    [(pid, value)] = e["bodyValues"].items()
    assert value["value"] == "<p>The <b>" and value["isTruncated"] is True
    root = e["bodyStructure"]
    assert root["type"] == "multipart/mixed" and root["partId"] is None
    assert [p["type"] for p in root["subParts"]] == ["multipart/alternative", "application/pdf"]
    pdf = root["subParts"][1]
    assert {"name": "Content-Transfer-Encoding", "value": " base64"} in pdf["headers"]
    # the attachment downloads decoded
    async with jmap.http.get(f"{jmap.base}/jmap/download/{jmap.account}/{att['blobId']}/r.pdf",
                             headers={"Authorization": jmap.auth}) as r:
        assert r.status == 200 and (await r.read()).startswith(b"%PDF-1.4")


async def test_header_forms(jmap):
    await jmap.deliver(MULTIPART)
    [eid] = (await jmap.ok("Email/query", {}))["ids"]
    props = ["header:Subject", "header:subject:asText", "header:From:asAddresses",
             "header:To:asGroupedAddresses", "header:Message-ID:asMessageIds",
             "header:Date:asDate", "header:List-Unsubscribe:asURLs", "header:X-None",
             "header:X-None:all", "header:From:asRaw:all"]
    got = await jmap.ok("Email/get", {"ids": [eid], "properties": props})
    [e] = got["list"]
    assert e["header:Subject"] == " Report"
    assert e["header:subject:asText"] == "Report"
    assert e["header:From:asAddresses"] == [{"name": "Jörg", "email": "joerg@example.test"}]
    assert e["header:To:asGroupedAddresses"] == [
        {"name": None, "addresses": [{"name": None, "email": "alice@example.test"}]},
        {"name": "Team", "addresses": [{"name": None, "email": "carol@example.test"},
                                       {"name": None, "email": "dave@example.test"}]}]
    assert e["header:Message-ID:asMessageIds"] == ["report@example.test"]
    assert e["header:Date:asDate"] == "2026-11-24T08:30:00+02:00"
    assert e["header:List-Unsubscribe:asURLs"] == ["mailto:unsub@example.test",
                                                   "https://example.test/u"]
    assert e["header:X-None"] is None and e["header:X-None:all"] == []
    assert e["header:From:asRaw:all"] == [" =?utf-8?q?J=C3=B6rg?= <joerg@example.test>"]
    rname, res = await jmap.call("Email/get", {"ids": [eid],
                                               "properties": ["header:Subject:asAddresses"]})
    assert rname == "error" and res["type"] == "invalidArguments"


async def test_email_query_filters_and_sort(jmap):
    for i, (subject, sender, body) in enumerate([
            ("Alpha meeting", "bob", "agenda attached"),
            ("Beta release", "carol", "the release is out"),
            ("Gamma notes", "bob", "meeting notes")]):
        await jmap.deliver(message(subject, body, sender=sender, msgid=f"q{i}@x"))
    a = jmap.account
    all_ids = (await jmap.ok("Email/query", {"sort": [{"property": "subject"}]}))["ids"]
    assert len(all_ids) == 3
    got = await jmap.ok("Email/get", {"ids": all_ids, "properties": ["subject"]})
    assert [e["subject"] for e in got["list"]] == ["Alpha meeting", "Beta release",
                                                    "Gamma notes"]
    async def q(flt, **kw):
        return (await jmap.ok("Email/query", {"filter": flt, **kw}))["ids"]
    assert await q({"from": "bob"}, sort=[{"property": "subject"}]) == [all_ids[0], all_ids[2]]
    assert await q({"text": "meeting"}, sort=[{"property": "subject"}]) == [all_ids[0],
                                                                           all_ids[2]]
    assert await q({"body": "release"}) == [all_ids[1]]
    assert await q({"subject": "gamma"}) == [all_ids[2]]
    assert await q({"operator": "NOT", "conditions": [{"from": "bob"}]}) == [all_ids[1]]
    assert sorted(await q({"operator": "OR", "conditions": [{"subject": "alpha"},
                                                            {"subject": "beta"}]})) == \
        sorted(all_ids[:2])
    assert await q({"header": ["Message-ID", "q1@x"]}) == [all_ids[1]]
    assert await q({"minSize": 1, "maxSize": 100000, "hasAttachment": False},
                   sort=[{"property": "subject"}]) == all_ids
    assert await q({"before": "2000-01-01T00:00:00Z"}) == []
    assert len(await q({"after": "2000-01-01T00:00:00Z"})) == 3
    inbox = await jmap.mailbox("inbox")
    assert len(await q({"inMailbox": inbox})) == 3
    assert await q({"inMailboxOtherThan": [inbox]}) == []
    # keywords
    await jmap.ok("Email/set", {"update": {all_ids[0]: {"keywords/$flagged": True}}})
    assert await q({"hasKeyword": "$flagged"}) == [all_ids[0]]
    assert sorted(await q({"notKeyword": "$flagged"})) == sorted(all_ids[1:])
    assert await q({"someInThreadHaveKeyword": "$flagged"}) == [all_ids[0]]
    assert sorted(await q({"noneInThreadHaveKeyword": "$flagged"})) == sorted(all_ids[1:])
    # paging: position, negative position, anchor, limit
    r = await jmap.ok("Email/query", {"sort": [{"property": "subject"}], "position": 1,
                                      "limit": 1, "calculateTotal": True})
    assert r["ids"] == [all_ids[1]] and r["total"] == 3 and r["position"] == 1
    r = await jmap.ok("Email/query", {"sort": [{"property": "subject"}], "position": -1})
    assert r["ids"] == [all_ids[2]] and r["position"] == 2
    r = await jmap.ok("Email/query", {"sort": [{"property": "subject"}], "anchor": all_ids[1],
                                      "anchorOffset": -1, "limit": 2})
    assert r["ids"] == all_ids[:2] and r["position"] == 0
    rname, res = await jmap.call("Email/query", {"anchor": "e999"})
    assert rname == "error" and res["type"] == "anchorNotFound"
    rname, res = await jmap.call("Email/query", {"filter": {"nope": 1}})
    assert rname == "error" and res["type"] == "unsupportedFilter"
    rname, res = await jmap.call("Email/query", {"sort": [{"property": "hasKeyword"}]})
    assert rname == "error" and res["type"] == "unsupportedSort"
    rname, res = await jmap.call("Email/query", {"filter": {"before": "yesterday"}})
    assert rname == "error" and res["type"] == "invalidArguments"
    assert a


async def test_collapse_threads_and_thread_changes(jmap):
    await jmap.deliver(message("Topic", msgid="p@x"))
    state = (await jmap.ok("Thread/get", {"ids": []}))["state"]
    await jmap.deliver(message("Re: Topic", "reply", msgid="c@x", extra="References: <p@x>\r\n"))
    await jmap.deliver(message("Other", msgid="o@x"))
    r = await jmap.ok("Email/query", {"collapseThreads": True, "calculateTotal": True})
    assert r["total"] == 2 and r["collapseThreads"] is True
    r = await jmap.ok("Email/query", {"calculateTotal": True})
    assert r["total"] == 3
    ch = await jmap.ok("Thread/changes", {"sinceState": state})
    assert len(ch["created"]) == 1 and len(ch["updated"]) == 1


async def test_email_set_keywords_mailboxes_destroy(jmap_any):
    jmap = jmap_any
    await jmap.deliver(message("Flags"))
    [eid] = (await jmap.ok("Email/query", {}))["ids"]
    inbox = await jmap.mailbox("inbox")
    archive = await jmap.mailbox("archive")
    before = await jmap.ok("Email/get", {"ids": [eid], "properties": ["keywords"]})
    r = await jmap.ok("Email/set", {"update": {eid: {
        "keywords/$seen": True, "keywords/custom": True, f"mailboxIds/{archive}": True}}})
    assert r["updated"] == {eid: None}
    got = await jmap.ok("Email/get", {"ids": [eid], "properties": ["keywords", "mailboxIds"]})
    assert got["list"][0]["keywords"] == {"$seen": True, "custom": True}
    assert got["list"][0]["mailboxIds"] == {inbox: True, archive: True}
    ch = await jmap.ok("Email/changes", {"sinceState": before["state"]})
    assert ch["updated"] == [eid]
    boxes = await jmap.ok("Mailbox/get", {"ids": [inbox, archive],
                                          "properties": ["totalEmails", "unreadEmails"]})
    assert [(b["totalEmails"], b["unreadEmails"]) for b in boxes["list"]] == [(1, 0), (1, 0)]
    r = await jmap.ok("Email/set", {"update": {eid: {"keywords": {"$flagged": True},
                                                     "mailboxIds": {archive: True}}}})
    got = await jmap.ok("Email/get", {"ids": [eid], "properties": ["keywords", "mailboxIds"]})
    assert got["list"][0] == {"id": eid, "keywords": {"$flagged": True},
                              "mailboxIds": {archive: True}}
    r = await jmap.ok("Email/set", {"update": {
        eid: {"mailboxIds": {}}, "e999": {"keywords": {}}}})
    assert r["notUpdated"][eid]["type"] == "invalidProperties"
    assert r["notUpdated"]["e999"]["type"] == "notFound"
    r = await jmap.ok("Email/set", {"update": {eid: {"keywords/$seen": False,
                                                     "subject": "x"}}})
    assert r["notUpdated"][eid]["type"] in ("invalidPatch", "invalidProperties")
    state = (await jmap.ok("Email/get", {"ids": []}))["state"]
    r = await jmap.ok("Email/set", {"destroy": [eid, "e999"]})
    assert r["destroyed"] == [eid] and r["notDestroyed"]["e999"]["type"] == "notFound"
    ch = await jmap.ok("Email/changes", {"sinceState": state})
    assert ch["destroyed"] == [eid]
    rname, res = await jmap.call("Email/changes", {"sinceState": "999999"})
    assert rname == "error" and res["type"] == "cannotCalculateChanges"
    rname, res = await jmap.call("Email/changes", {"sinceState": "garbage"})
    assert rname == "error" and res["type"] == "cannotCalculateChanges"


async def test_changes_below_the_compaction_floor(jmap):
    await jmap.deliver(message("Old"))
    state = (await jmap.ok("Email/get", {"ids": []}))["state"]
    await jmap.deliver(message("New"))
    app = jmap.env.app
    from mailserver.store.mailstore import MailStore

    account_id = jmap.env.account_ids["alice"]
    await MailStore(app.db).compact_changes(account_id, int(state) + 1)
    rname, res = await jmap.call("Email/changes", {"sinceState": state})
    assert rname == "error" and res["type"] == "cannotCalculateChanges"


async def test_changes_max_changes(jmap):
    state = (await jmap.ok("Email/get", {"ids": []}))["state"]
    for i in range(3):
        await jmap.deliver(message(f"m{i}", msgid=f"mc{i}@x"))
    ch = await jmap.ok("Email/changes", {"sinceState": state, "maxChanges": 1})
    assert ch["hasMoreChanges"] is True and len(ch["created"]) == 1
    seen = list(ch["created"])
    while ch["hasMoreChanges"]:
        ch = await jmap.ok("Email/changes", {"sinceState": ch["newState"], "maxChanges": 1})
        seen += ch["created"]
    assert len(set(seen)) == 3


async def test_email_create_draft_with_attachment(jmap):
    drafts = await jmap.mailbox("drafts")
    url = f"{jmap.base}/jmap/upload/{jmap.account}/"
    async with jmap.http.post(url, data=b"PNGDATA", headers={
            "Authorization": jmap.auth, "Content-Type": "image/png"}) as r:
        blob = (await r.json())["blobId"]
    r = await jmap.ok("Email/set", {"create": {"d": {
        "mailboxIds": {drafts: True}, "keywords": {"$draft": True, "$seen": True},
        "from": [{"name": "Alice", "email": "alice@example.test"}],
        "to": [{"name": None, "email": "bob@example.test"}],
        "subject": "Draft with picture", "inReplyTo": ["orig@x"],
        "bodyValues": {"t": {"value": "Text part"}, "h": {"value": "<p>HTML part</p>"}},
        "textBody": [{"partId": "t", "type": "text/plain"}],
        "htmlBody": [{"partId": "h", "type": "text/html"}],
        "attachments": [{"blobId": blob, "type": "image/png", "name": "pic.png"}]}}})
    created = r["created"]["d"]
    assert created["size"] > 0 and created["threadId"].startswith("t")
    got = await jmap.ok("Email/get", {"ids": [created["id"]], "fetchAllBodyValues": True})
    [e] = got["list"]
    assert e["subject"] == "Draft with picture" and e["keywords"] == {"$draft": True,
                                                                      "$seen": True}
    assert e["to"] == [{"name": None, "email": "bob@example.test"}]
    assert e["inReplyTo"] == ["orig@x"] and e["messageId"]
    assert [v["value"].strip() for v in e["bodyValues"].values()] == ["Text part",
                                                                     "<p>HTML part</p>"]
    [att] = e["attachments"]
    assert att["name"] == "pic.png" and att["type"] == "image/png"
    r = await jmap.ok("Email/set", {"create": {
        "nobox": {"subject": "x"},
        "badblob": {"mailboxIds": {drafts: True},
                    "attachments": [{"blobId": "0" * 64, "type": "image/png"}]},
        "badfrom": {"mailboxIds": {drafts: True}, "from": "alice"}}})
    assert r["notCreated"]["nobox"]["type"] == "invalidProperties"
    assert r["notCreated"]["badblob"]["type"] == "blobNotFound"
    assert r["notCreated"]["badfrom"]["type"] == "invalidProperties"


async def test_email_import_and_parse(jmap):
    url = f"{jmap.base}/jmap/upload/{jmap.account}/"
    async with jmap.http.post(url, data=MULTIPART, headers={
            "Authorization": jmap.auth, "Content-Type": "message/rfc822"}) as r:
        blob = (await r.json())["blobId"]
    archive = await jmap.mailbox("archive")
    parsed = await jmap.ok("Email/parse", {"blobIds": [blob, "0" * 64],
                                           "fetchTextBodyValues": True})
    p = parsed["parsed"][blob]
    assert p["subject"] == "Report" and p["attachments"][0]["name"] == "report.pdf"
    assert "quarterly" in next(iter(p["bodyValues"].values()))["value"]
    assert parsed["notFound"] == ["0" * 64]
    r = await jmap.ok("Email/import", {"emails": {
        "i": {"blobId": blob, "mailboxIds": {archive: True}, "keywords": {"$seen": True},
              "receivedAt": "2026-01-02T03:04:05Z"},
        "missing": {"blobId": "0" * 64, "mailboxIds": {archive: True}},
        "nobox": {"blobId": blob, "mailboxIds": {"m999": True}}}})
    created = r["created"]["i"]
    assert r["notCreated"]["missing"]["type"] == "blobNotFound"
    assert r["notCreated"]["nobox"]["type"] == "invalidProperties"
    got = await jmap.ok("Email/get", {"ids": [created["id"]],
                                      "properties": ["receivedAt", "mailboxIds", "blobId"]})
    assert got["list"][0]["receivedAt"] == "2026-01-02T03:04:05Z"
    assert got["list"][0]["mailboxIds"] == {archive: True}
    # the imported message is the uploaded bytes
    async with jmap.http.get(
            f"{jmap.base}/jmap/download/{jmap.account}/{created['blobId']}/m.eml",
            headers={"Authorization": jmap.auth}) as resp:
        assert await resp.read() == MULTIPART
    rname, res = await jmap.call("Email/copy", {"fromAccountId": "a999", "create": {}})
    assert rname == "error" and res["type"] == "fromAccountNotFound"


async def test_search_snippets(jmap):
    await jmap.deliver(message("Quarterly <report>", "The numbers for the quarter are good"))
    [eid] = (await jmap.ok("Email/query", {}))["ids"]
    r = await jmap.ok("SearchSnippet/get", {"emailIds": [eid, "e999"],
                                            "filter": {"text": "quarter"}})
    [s] = r["list"]
    assert s["subject"] == "<mark>Quarterly</mark> &lt;report&gt;"
    assert "<mark>quarter</mark>" in s["preview"]
    assert r["notFound"] == ["e999"]
    r = await jmap.ok("SearchSnippet/get", {"emailIds": [eid], "filter": {"from": "bob"}})
    assert r["list"] == [{"emailId": eid, "subject": None, "preview": None}]


async def test_identity_and_quota(jmap):
    sub = "urn:ietf:params:jmap:submission"
    r = await jmap.ok("Identity/get", {}, ["urn:ietf:params:jmap:core", sub])
    assert r["list"][0]["email"] == "alice@example.test"
    quota = "urn:ietf:params:jmap:quota"
    await jmap.env.app.directory.set_quota("alice@example.test", 10_000_000)
    await jmap.deliver(message("Quota"))
    r = await jmap.ok("Quota/get", {"ids": None}, ["urn:ietf:params:jmap:core", quota])
    [q] = r["list"]
    assert q["hardLimit"] == 10_000_000 and 0 < q["used"] < 10_000
    assert q["resourceType"] == "octets" and q["scope"] == "account"


async def test_one_email_two_mailboxes(jmap):
    """One Email with two mailboxIds is one email row with two memberships (two IMAP UIDs)."""
    await jmap.deliver(message("Shared"))
    [eid] = (await jmap.ok("Email/query", {}))["ids"]
    archive = await jmap.mailbox("archive")
    await jmap.ok("Email/set", {"update": {eid: {f"mailboxIds/{archive}": True}}})
    store = jmap.env.app
    from mailserver.store.mailstore import MailStore

    ms = MailStore(store.db)
    account_id = jmap.env.account_ids["alice"]
    emails = await ms.get_emails(account_id, [int(eid[1:])])
    assert len(emails[int(eid[1:])].mailboxes) == 2
    r = await jmap.ok("Email/query", {"calculateTotal": True})
    assert r["total"] == 1


@pytest.mark.parametrize("bad", [{"operator": "XOR", "conditions": []},
                                 {"operator": "AND", "conditions": "x"},
                                 {"hasKeyword": 5}, {"header": []}, {"minSize": -1},
                                 {"text": ["x"]}])
async def test_bad_filters(jmap, bad):
    rname, res = await jmap.call("Email/query", {"filter": bad})
    assert rname == "error" and res["type"] in ("invalidArguments", "unsupportedFilter")


async def test_mail_methods_need_the_mail_capability(jmap):
    rname, res = await jmap.call("Email/query", {}, ["urn:ietf:params:jmap:core"])
    assert rname == "error" and res["type"] == "unknownMethod"
    assert MAIL


async def test_blob_upload_get_lookup(jmap):
    """RFC 9404: Blob/upload from data sources, Blob/get with digests, Blob/lookup."""
    blob = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:blob"]
    r = await jmap.ok("Blob/upload", {"create": {
        "b": {"data": [{"data:asText": "The quick brown fox jumped over the lazy dog."}]},
        "c": {"data": [{"blobId": "#b", "offset": 4, "length": 5},
                       {"data:asBase64": "IQ=="}], "type": "text/plain"},
        "bad": {"data": [{"data:asBase64": "%%%"}]}}}, blob)
    b, c = r["created"]["b"], r["created"]["c"]
    assert b["size"] == 45 and c["size"] == 6
    assert r["notCreated"]["bad"]["type"] == "invalidProperties"
    r = await jmap.ok("Blob/get", {"ids": [c["id"], "nope"],
                                   "properties": ["data:asText", "digest:sha", "size"]}, blob)
    [item] = r["list"]
    assert item["data:asText"] == "quick!" and item["size"] == 6
    import base64, hashlib
    assert item["digest:sha"] == base64.b64encode(hashlib.sha1(b"quick!").digest()).decode()
    assert r["notFound"] == ["nope"]
    r = await jmap.ok("Blob/get", {"ids": [b["id"]], "offset": 4, "length": 5,
                                   "properties": ["data:asBase64"]}, blob)
    assert base64.b64decode(r["list"][0]["data:asBase64"]) == b"quick"
    await jmap.deliver(message("Looked up"))
    got = await jmap.ok("Email/get", {"ids": (await jmap.ok("Email/query", {}))["ids"],
                                      "properties": ["blobId", "threadId", "mailboxIds"]})
    [e] = got["list"]
    r = await jmap.ok("Blob/lookup", {"typeNames": ["Email", "Thread", "Mailbox"],
                                      "ids": [e["blobId"], b["id"]]}, blob)
    assert r["list"] == [{"id": e["blobId"], "matchedIds": {
        "Email": [e["id"]], "Thread": [e["threadId"]], "Mailbox": list(e["mailboxIds"])}}]
    assert r["notFound"] == [b["id"]]
    rname, res = await jmap.call("Blob/lookup", {"typeNames": ["Calendar"], "ids": []}, blob)
    assert rname == "error" and res["type"] == "unknownDataType"


async def test_email_submission(jmap):
    """RFC 8621 §7: send a draft to a local and a remote recipient; Bcc removed; the remote
    copy waits in the outbound queue, the local one is delivered; onSuccessUpdateEmail moves
    the draft to Sent."""
    sub = "urn:ietf:params:jmap:submission"
    using = ["urn:ietf:params:jmap:core", MAIL, sub]
    drafts = await jmap.mailbox("drafts")
    sent = await jmap.mailbox("sent")
    identity = (await jmap.ok("Identity/get", {}, using))["list"][0]["id"]
    r = await jmap.ok("Email/set", {"create": {"d": {
        "mailboxIds": {drafts: True}, "keywords": {"$draft": True},
        "from": [{"name": "Alice", "email": "alice@example.test"}],
        "to": [{"name": "Bob", "email": "bob@example.test"}],
        "bcc": [{"name": None, "email": "someone@remote.example"}],
        "subject": "Lunch?", "bodyValues": {"b": {"value": "At noon?"}},
        "textBody": [{"partId": "b"}]}}})
    draft = r["created"]["d"]["id"]
    responses = await jmap.request([["EmailSubmission/set", {
        "accountId": jmap.account,
        "create": {"s": {"identityId": identity, "emailId": draft}},
        "onSuccessUpdateEmail": {"#s": {f"mailboxIds/{drafts}": None,
                                        f"mailboxIds/{sent}": True,
                                        "keywords/$draft": None}}}, "0"]], using)
    assert [x[0] for x in responses] == ["EmailSubmission/set", "Email/set"]
    created = responses[0][1]["created"]["s"]
    assert created["undoStatus"] == "final"
    assert responses[1][1]["updated"] == {draft: None}
    got = await jmap.ok("Email/get", {"ids": [draft], "properties": ["mailboxIds", "keywords"]})
    assert got["list"][0] == {"id": draft, "mailboxIds": {sent: True}, "keywords": {}}
    [s] = (await jmap.ok("EmailSubmission/get", {"ids": [created["id"]]}, using))["list"]
    assert s["emailId"] == draft
    assert {r["email"] for r in s["envelope"]["rcptTo"]} == {"bob@example.test",
                                                              "someone@remote.example"}
    assert s["deliveryStatus"]["bob@example.test"]["delivered"] == "yes"
    assert s["deliveryStatus"]["someone@remote.example"]["delivered"] == "queued"
    # bob got it, without the Bcc field
    from mailserver.store.mailstore import MailStore
    app = jmap.env.app
    ms = MailStore(app.db)
    bob = jmap.env.account_ids["bob"]
    inbox = await ms.get_mailbox_by_path(bob, "INBOX")
    [(_uid, email_id, _m)] = await ms.uid_map(bob, inbox.id)
    e = (await ms.get_emails(bob, [email_id]))[email_id]
    raw = await app.blobs.get(e.blob_id)
    assert b"Lunch?" in raw and b"someone@remote.example" not in raw.lower()
    # the remote copy is in the outbound queue, also without Bcc
    from sqlalchemy import select
    from mailserver.store import schema
    async with app.db.read() as conn:
        rows = (await conn.execute(select(schema.queue_recipients.c.recipient))).all()
    assert [r[0] for r in rows] == ["someone@remote.example"]
    # refusals
    r = await jmap.ok("Email/set", {"create": {"x": {
        "mailboxIds": {drafts: True}, "from": [{"name": None, "email": "carol@example.test"}],
        "to": [{"name": None, "email": "bob@example.test"}], "subject": "spoof"}}})
    spoof = r["created"]["x"]["id"]
    r = await jmap.ok("EmailSubmission/set", {"create": {
        "a": {"identityId": identity, "emailId": spoof},
        "b": {"identityId": "i999", "emailId": draft},
        "c": {"identityId": identity, "emailId": draft,
              "envelope": {"mailFrom": {"email": "carol@example.test"},
                           "rcptTo": [{"email": "bob@example.test"}]}},
        "d": {"identityId": identity, "emailId": draft,
              "envelope": {"mailFrom": {"email": "alice@example.test"}, "rcptTo": []}}}},
        using)
    nc = r["notCreated"]
    assert nc["a"]["type"] == "forbiddenFrom"
    assert nc["b"]["type"] == "invalidProperties"
    assert nc["c"]["type"] == "forbiddenMailFrom"
    assert nc["d"]["type"] == "noRecipients"
    r = await jmap.ok("EmailSubmission/set", {"update": {created["id"]: {
        "undoStatus": "canceled"}}}, using)
    assert r["notUpdated"][created["id"]]["type"] == "cannotUnsend"


async def test_email_query_changes(jmap):
    """RFC 8620 §5.6: apply removed/added to the old result and get the new one."""
    for i in range(4):
        await jmap.deliver(message(f"QC {i}", msgid=f"qc{i}@x"), received_at=1_700_000_000 + i)
    query = {"filter": {"notKeyword": "$seen"},
             "sort": [{"property": "receivedAt", "isAscending": False}]}
    old = await jmap.ok("Email/query", query)
    ids_old = old["ids"]
    # a new email, one marked seen (leaves the filter), one destroyed
    await jmap.deliver(message("QC new", msgid="qcn@x"), received_at=1_700_000_010)
    await jmap.ok("Email/set", {"update": {ids_old[1]: {"keywords/$seen": True}},
                                "destroy": [ids_old[2]]})
    ch = await jmap.ok("Email/queryChanges", {**query, "sinceQueryState": old["queryState"],
                                              "calculateTotal": True})
    new = await jmap.ok("Email/query", query)
    assert ch["newQueryState"] == new["queryState"] and ch["total"] == len(new["ids"])
    result = [i for i in ids_old if i not in set(ch["removed"])]
    for a in ch["added"]:
        result.insert(a["index"], a["id"])
    assert result == new["ids"]
    rname, res = await jmap.call("Email/queryChanges", {**query, "maxChanges": 1,
                                                        "sinceQueryState": old["queryState"]})
    assert rname == "error" and res["type"] == "tooManyChanges"
    rname, res = await jmap.call("Email/queryChanges", {"sinceQueryState": "x"})
    assert rname == "error" and res["type"] == "cannotCalculateChanges"
