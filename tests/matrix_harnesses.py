"""Kill-and-fault matrix harnesses (see faultmatrix.py): one per platform destination, over
its stateful fake. Each says how to put someone else's members into the audience, how to read
the membership writes the fake received (with what it applied and answered), and how to
inject each fault on a given write of a push (the batch holding someone else's member)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from faultmatrix import Write, email_of

NAME = "Matrix (crmsync)"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


class HubSpotList:
    name = "hubspot_list"
    reports_preexisting = True
    write_path = r"/memberships/add-and-remove$"

    def __init__(self, fake: Any):
        self.fake, self.token = fake, "pat-matrix"

    def destination(self):
        return {"type": "hubspot_list", "connection": "hubspot", "list": NAME}

    def connections(self):
        return {"hubspot": {"type": "hubspot", "token": "${HUBSPOT_TOKEN}",
                            "base_url": self.fake.url, "rate_limit": 1000, "backoff": 0.01}}

    def env(self):
        return {"HUBSPOT_TOKEN": self.token}

    def keys(self, n):
        return [self.fake.add_contact({"email": email_of(f"c{i}")}) for i in range(n)]

    def prepare(self, others):
        lid = str(self.fake._next_list)
        self.fake._next_list += 1
        self.fake.lists[lid] = {"listId": lid, "name": NAME, "objectTypeId": "0-1",
                                "processingType": "MANUAL",
                                "members": dict.fromkeys(others, "2026-01-01T00:00:00.000Z")}

    def remote(self):
        return self.fake.members(NAME)

    def writes(self):
        out = []
        for r in self.fake.calls("PUT", self.write_path):
            b = r.json()
            add = bool(b.get("recordIdsToAdd"))
            keys = list(map(str, b["recordIdsToAdd"] if add else b["recordIdsToRemove"]))
            answer = r.answer if isinstance(r.answer, dict) else {}
            missing = set(map(str, answer.get("recordIdsMissing") or []))
            out.append(Write("add" if add else "remove", keys, set(keys) - missing,
                             r.status))
        return out

    def fault(self, kind, batch, skip, others):
        mine = [k for k in batch if k not in others]
        from fakes.hubspot import _error
        p = self.write_path
        if kind == "429":
            self.fake.fail_next(1, status=429, skip=skip, path=p, headers={"Retry-After": "0"},
                                body={"status": "error", "message": "You have reached your "
                                      "secondly limit.", "errorType": "RATE_LIMIT",
                                      "policyName": "TEN_SECONDLY_ROLLING"})
        elif kind == "5xx":
            self.fake.fail_next(1, status=503, body="Service Unavailable", skip=skip, path=p)
        elif kind == "reset":
            self.fake.fail_next(1, drop=True, skip=skip, path=p)
        elif kind == "lost":
            self.fake.fail_next(1, drop=True, after=True, skip=skip, path=p)
        elif kind == "token":  # expires at the 4th write; fixed by a new token after the run
            e = _error(401, "The OAuth token used to make this call expired.",
                       "EXPIRED_AUTHENTICATION")
            self.fake.fail_next(1, status=401, body=e.body, skip=skip, path=p)
        elif kind == "partial":  # one contact of the batch was deleted in HubSpot
            gone = mine[0]
            self.fake.archive_contact(gone)
            return {gone}
        return set()

    def heal(self):
        self.fake.scripted.clear()


class SalesforceCampaign:
    name = "salesforce_campaign"
    reports_preexisting = True
    write_path = r"/composite/sobjects/?$"

    def __init__(self, fake: Any):
        self.fake = fake

    def destination(self):
        return {"type": "salesforce_campaign", "connection": "sf", "campaign": NAME}

    def connections(self):
        return {"sf": {"type": "salesforce", "base_url": self.fake.url,
                       "username": "${SF_USERNAME}", "password": "${SF_PASSWORD}",
                       "security_token": "${SF_SECURITY_TOKEN}", "ca_file": str(self.fake.ca),
                       "timeout": 2}}

    def env(self):
        return {"SF_USERNAME": "sync@acme.example", "SF_PASSWORD": "pw",
                "SF_SECURITY_TOKEN": "tok"}

    def keys(self, n):
        return [self.fake.insert("Contact", LastName=f"L{i}", Email=email_of(f"c{i}"))
                for i in range(n)]

    def prepare(self, others):
        camp = self.fake.insert("Campaign", Name=NAME, IsActive=True)
        for o in others:
            self.fake.insert("CampaignMember", CampaignId=camp, ContactId=o)

    def remote(self):
        return self.fake.members(NAME)

    def writes(self):
        members = self.fake.records["CampaignMember"]
        out = []
        for r in self.fake.calls(path=self.write_path):
            if r.method == "POST":
                keys = [rec["ContactId"] for rec in r.json()["records"]]
                rows = r.answer if isinstance(r.answer, list) and _ok(r.status) else []
                ok = {k for k, res in zip(keys, rows, strict=False) if res.get("success") or
                      (res.get("errors") or [{}])[0].get("statusCode") == "DUPLICATE_VALUE"}
                out.append(Write("add", keys, ok, r.status))
            elif r.method == "DELETE":
                ids = (r.arg("ids") or "").split(",")
                keys = [members[i]["ContactId"] for i in ids if i in members]
                out.append(Write("remove", keys, set(keys), r.status))
        return out

    def fault(self, kind, batch, skip, others):
        mine = [k for k in batch if k not in others]
        p = self.write_path
        if kind == "429":  # Salesforce throttles with REQUEST_LIMIT_EXCEEDED (concurrency)
            self.fake.fail_next(1, status=403, skip=skip, path=p, headers={"Retry-After": "0"},
                                body=[{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message":
                                       "ConcurrentRequests (Concurrent API Requests) Limit "
                                       "exceeded."}])
        elif kind == "5xx":
            self.fake.fail_next(1, status=503, skip=skip, path=p, body=[{
                "errorCode": "SERVER_UNAVAILABLE", "message": "try later"}])
        elif kind == "reset":
            self.fake.fail_next(1, drop=True, skip=skip, path=p)
        elif kind == "lost":
            self.fake.fail_next(1, drop=True, after=True, skip=skip, path=p)
        elif kind == "token":  # the session expires at the 4th write: one re-login
            self.fake.trap(p, skip + 1, "call", self.fake.expire_sessions)
        elif kind == "partial":  # two rows locked by another transaction, twice
            self.fake.fail_rows(mine[:2], times=2)
        return set()

    def heal(self):
        self.fake.scripted.clear()
        self.fake.traps.clear()


class MetaAudience:
    name = "meta_custom_audience"
    reports_preexisting = False
    write_path = r"/\d+/users$"

    def __init__(self, fake: Any):
        self.fake, self.by_hash = fake, {}

    def destination(self):
        return {"type": "meta_custom_audience", "connection": "meta", "audience": NAME}

    def connections(self):
        return {"meta": {"type": "meta", "access_token": "${META_ACCESS_TOKEN}",
                         "ad_account_id": "act_1234", "base_url": self.fake.url}}

    def env(self):
        return {"META_ACCESS_TOKEN": "EAAmatrix"}

    def keys(self, n):
        keys = [f"k{i:03d}" for i in range(n)]
        self.by_hash = {sha(email_of(k)): k for k in keys}
        return keys

    def prepare(self, others):
        self.fake.add_audience(NAME, [{"EMAIL": sha(email_of(k))} for k in others])

    def remote(self):
        aud = self.fake.by_name(NAME)
        return {self.by_hash[v] for row in aud.members for k, v in row if k == "EMAIL"}

    def writes(self):
        out = []
        for r in self.fake.calls("POST", self.write_path):
            form = r.form()
            keys = [self.by_hash[row[0]] for row in json.loads(form["payload"])["data"]]
            op = "remove" if form.get("method", "").upper() == "DELETE" else "add"
            out.append(Write(op, keys, set(keys), r.status))
        return out

    def fault(self, kind, batch, skip, others):
        from fakes.meta import graph_error
        p = self.write_path
        if kind == "429":
            e = graph_error(613, "Calls to this api have exceeded the rate limit.", 1487742,
                            headers={"Retry-After": "0"})
            self.fake.fail_next(1, status=e.status, body=e.body, headers=e.headers, skip=skip,
                                path=p)
        elif kind == "5xx":
            self.fake.fail_next(1, status=503, body="Service Unavailable", skip=skip, path=p)
        elif kind == "reset":
            self.fake.fail_next(1, drop=True, skip=skip, path=p)
        elif kind == "lost":
            self.fake.fail_next(1, drop=True, after=True, skip=skip, path=p)
        elif kind == "token":
            e = graph_error(190, "Error validating access token: Session has expired", 463)
            self.fake.fail_next(1, status=e.status, body=e.body, skip=skip, path=p)
        elif kind == "partial":
            return None  # Meta counts invalid rows, never names them: nothing to pin
        return set()

    def heal(self):
        self.fake.scripted.clear()


class GoogleList:
    name = "google_ads_customer_match"
    reports_preexisting = False
    write_path = r":(ingest|remove)$"

    def __init__(self, fake: Any):
        self.fake, self.by_hash = fake, {}

    def destination(self):
        return {"type": "google_ads_customer_match", "connection": "google", "list": NAME,
                "terms_of_service": "accepted"}

    def connections(self):
        return {"google": {"type": "google_ads",
                           "credentials_file": "${GOOGLE_APPLICATION_CREDENTIALS}",
                           "operating_account": "1234567890", "base_url": self.fake.url}}

    def env(self):
        if getattr(self, "_key_file", None) is None:  # real service-account credentials
            from fakes.google import service_account_file

            self._key_file = service_account_file(self.fake, tempfile.mkdtemp())
        return {"GOOGLE_APPLICATION_CREDENTIALS": str(self._key_file)}

    def keys(self, n):
        keys = [f"k{i:03d}" for i in range(n)]
        self.by_hash = {sha(email_of(k)): k for k in keys}
        return keys

    @staticmethod
    def member(key: str) -> str:
        return json.dumps([{"emailAddress": sha(email_of(key))}], sort_keys=True,
                          separators=(",", ":"))

    def prepare(self, others):
        from fakes.google import UserList
        ul = UserList("1234567890", next(self.fake._ids), NAME)
        ul.members.update(self.member(k) for k in others)
        self.fake.lists[ul.id] = ul

    def remote(self):
        ul = self.fake.list_named(NAME)
        return {self.by_hash[i["emailAddress"]] for row in self.fake.member_rows(ul.id)
                for i in row if "emailAddress" in i}

    def writes(self):
        out = []
        for r in self.fake.calls("POST", self.write_path):
            keys = [self.by_hash[m["userData"]["userIdentifiers"][0]["emailAddress"]]
                    for m in r.json()["audienceMembers"]]
            op = "add" if r.path.endswith(":ingest") else "remove"
            out.append(Write(op, keys, set(keys), r.status))
        return out

    def fault(self, kind, batch, skip, others):
        mine = [k for k in batch if k not in others]
        from fakes.google import BadRequest, error, quota_error
        p = self.write_path
        if kind == "429":
            q = quota_error("IngestionMutateRequestsPerMinutePerProject", retry_after=0)
            self.fake.fail_next(1, status=429, body=q.body, headers=q.headers, skip=skip,
                                path=p)
        elif kind == "5xx":
            e = error(503, "UNAVAILABLE", "The service is currently unavailable.")
            self.fake.fail_next(1, status=503, body=e.body, skip=skip, path=p)
        elif kind == "reset":
            self.fake.fail_next(1, drop=True, skip=skip, path=p)
        elif kind == "lost":
            self.fake.fail_next(1, drop=True, after=True, skip=skip, path=p)
        elif kind == "token":
            e = error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.",
                      "ACCESS_TOKEN_EXPIRED")
            self.fake.fail_next(1, status=401, body=e.body, skip=skip, path=p)
        elif kind == "partial":  # the request refuses one member (a field violation)
            i = batch.index(mine[0])
            e = BadRequest("INVALID_FORMAT", "invalid audience member",
                           f"audience_members[{i}].user_data").response()
            self.fake.fail_next(1, status=e.status, body=e.body, skip=skip, path=p)
            return {mine[0]}
        return set()

    def heal(self):
        self.fake.scripted.clear()


@contextlib.contextmanager
def harness(name: str, tmp: Path) -> Iterator[Any]:
    """The platform's fake, started, and its harness."""
    if name == "hubspot_list":
        from fakes.hubspot import FakeHubSpot
        with FakeHubSpot(token="pat-matrix", rate_limit=1000) as fake:
            yield HubSpotList(fake)
    elif name == "salesforce_campaign":
        from fakes.salesforce import FakeSalesforce, tls_pair
        ctx, ca = tls_pair(tmp)
        with FakeSalesforce(tls=ctx) as fake:
            fake.ca = ca
            yield SalesforceCampaign(fake)
    elif name == "meta_custom_audience":
        from fakes.meta import FakeGraph
        with FakeGraph(account="act_1234") as fake:
            yield MetaAudience(fake)
    elif name == "google_ads_customer_match":
        from fakes.google import DataManagerFake
        with DataManagerFake() as fake:
            fake.add_account("1234567890")
            yield GoogleList(fake)
    else:
        raise KeyError(name)


PLATFORMS = ["hubspot_list", "salesforce_campaign", "meta_custom_audience",
             "google_ads_customer_match"]
