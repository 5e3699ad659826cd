"""A stateful fake Salesforce org that simple-salesforce talks to over HTTPS on loopback.

It encodes the documented behaviour the connector relies on (links next to each rule):

* login: SOAP ``login()`` (username + password + security token) and the OAuth 2.0 token
  endpoint for the client-credentials and JWT bearer flows; the session id is the Bearer token
  of every REST call, and an expired one answers 401 ``INVALID_SESSION_ID``.
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_login.htm
  https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm
  https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
* describe: ``GET /sobjects/{type}/describe`` with each field's ``type``.
* SOQL: ``/query`` and ``/queryAll`` (the latter also returns soft-deleted and merged-away
  rows, ``IsDeleted = true``), at most 2,000 rows a page, then ``done: false`` and a
  ``nextRecordsUrl`` query locator. Only the query shapes the connector sends are understood;
  anything else is a loud 400 ``MALFORMED_QUERY``.
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-queryall.html
* sObject Collections: create (POST), update (PATCH), delete (DELETE ``?ids=``), at most 200
  records a call (more: 400 ``EXCEEDED_ID_LIMIT``), per-row results in request order,
  ``allOrNone`` false.
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-create.html
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-delete.html
* CampaignMember: one row per (CampaignId, ContactId) or (CampaignId, LeadId); a second insert
  fails with ``DUPLICATE_VALUE`` "Already a campaign member."; deleting a contact or lead
  deletes its campaign members.
  https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_campaignmember.htm
* limits: every REST response carries ``Sforce-Limit-Info: api-usage=n/max``; past the daily
  allocation every call is refused with 403 ``REQUEST_LIMIT_EXCEEDED``.
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm
  https://developer.salesforce.com/docs/platform/salesforce-app-limits-cheatsheet/guide/salesforce-app-limits-platform-api.html
* Bulk API 2.0 query jobs: ``POST /jobs/query`` creates a job (``UploadComplete``), polling
  ``GET /jobs/query/{id}`` reaches ``JobComplete``, ``GET .../results?maxRecords=&locator=``
  returns CSV pages with ``Sforce-Locator`` (``null`` on the last) and
  ``Sforce-NumberOfRecords``.
  https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/queries.htm
  https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_results.htm
* ``SystemModstamp`` moves on every change (``LastModifiedDate <= SystemModstamp`` always).
"""

from __future__ import annotations

import base64
import itertools
import re
import ssl
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from .server import FakeServer, Request, Response, route

API = r"/services/data/v(?P<ver>\d+\.\d+)"
PREFIX = {"Contact": "003", "Lead": "00Q", "Campaign": "701", "CampaignMember": "00v"}
SYSTEM_FIELDS = [("Id", "id"), ("IsDeleted", "boolean"), ("SystemModstamp", "datetime"),
                 ("LastModifiedDate", "datetime"), ("CreatedDate", "datetime")]
DEFAULT_FIELDS: dict[str, list[tuple[str, str]]] = {
    "Contact": [("FirstName", "string"), ("LastName", "string"), ("Email", "email"),
                ("Phone", "phone"), ("MailingCountry", "string"), ("LeadSource", "picklist"),
                ("Interests__c", "multipicklist"), ("NumberOfEmployees__c", "int"),
                ("AnnualRevenue__c", "currency"), ("Score__c", "double"),
                ("HasOptedOutOfEmail", "boolean"), ("Birthdate", "date"),
                ("LastLogin__c", "datetime"), ("Segment__c", "string"),
                ("MasterRecordId", "reference")],
    "Lead": [("FirstName", "string"), ("LastName", "string"), ("Email", "email"),
             ("Phone", "phone"), ("Country", "string"), ("Status", "picklist"),
             ("Segment__c", "string"), ("MasterRecordId", "reference")],
    "Campaign": [("Name", "string"), ("IsActive", "boolean")],
    "CampaignMember": [("CampaignId", "reference"), ("ContactId", "reference"),
                       ("LeadId", "reference"), ("Status", "picklist")],
}
_DT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$")
_VALUE = r"'(?:[^'\\]|\\.)*'|true|false|null|[0-9][0-9T:.Z+-]*"
_COND = re.compile(rf"\s*(?P<f>\w+)\s*(?:(?P<op>>=|<=|!=|=|>|<)\s*(?P<v>{_VALUE})"
                   rf"|\s+IN\s*\((?P<in>\s*'(?:[^'\\]|\\.)*'(?:\s*,\s*'(?:[^'\\]|\\.)*')*)\s*\))",
                   re.I)
_SOQL = re.compile(r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<obj>\w+)"
                   r"(?:\s+WHERE\s+(?P<where>.+?))?"
                   r"(?:\s+ORDER\s+BY\s+(?P<order>\w+)(?:\s+(?P<dir>ASC|DESC))?)?"
                   r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$", re.I | re.S)


def sf_time(dt: datetime) -> str:
    """Salesforce's JSON datetime form: 2026-11-24T10:00:00.000+0000."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def parse_time(text: str) -> datetime:
    text = text.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _errors(status: int, code: str, message: str) -> Response:
    # REST errors are a JSON list of {message, errorCode}
    # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
    return Response(status, [{"message": message, "errorCode": code}])


def tls_pair(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 and the CA file a client must trust (trustme)."""
    import trustme

    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    path = folder / "fake-salesforce-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ctx, path


class FakeSalesforce(FakeServer):
    """One org: users and apps to log in with, records by sObject type, the daily API count."""

    def __init__(self, *, tls: ssl.SSLContext, username: str = "sync@acme.example",
                 password: str = "pw", security_token: str = "tok", client_id: str = "cid",
                 client_secret: str = "csecret", public_key: bytes | None = None,
                 api_max: int = 100_000, page_size: int = 2000, seed: int = 0):
        super().__init__(tls=tls, seed=seed)
        self.username, self.password, self.security_token = username, password, security_token
        self.client_id, self.client_secret, self.public_key = client_id, client_secret, public_key
        self.api_used, self.api_max, self.page_size = 0, api_max, page_size
        self.fields = {obj: dict(SYSTEM_FIELDS + extra) for obj, extra in DEFAULT_FIELDS.items()}
        self.records: dict[str, dict[str, dict[str, Any]]] = {obj: {} for obj in self.fields}
        self.sessions: set[str] = set()
        self.logins: list[str] = []  # the flow of every successful login
        self.clock = datetime(2026, 11, 1)
        self._ids = itertools.count(1)
        self._locators: dict[str, list[dict[str, Any]]] = {}
        self._stalls: list[tuple[str, float]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_polls = 1  # polls answered InProgress before a job is JobComplete
        self._row_faults: dict[str, list[str]] = {}  # record / contact id -> codes to answer
        #: (CampaignId, ContactId, LeadId) -> CampaignMember ids: the duplicate check without
        #: a scan of every member (kept by insert and update)
        self._member_keys: dict[tuple[Any, Any, Any], set[str]] = {}
        self._member_key_of: dict[str, tuple[Any, Any, Any]] = {}
        #: (sObject, field) -> values of a restricted picklist (tests set it)
        self.restricted: dict[tuple[str, str], set[str]] = {}

    def fail_rows(self, ids: list[str], code: str = "UNABLE_TO_LOCK_ROW", times: int = 1) -> None:
        """The next ``times`` collection writes touching each of ``ids`` (a contact or lead id,
        also for its CampaignMember rows, or a record id) fail that row with ``code``, the
        rest of the call going through, as with ``allOrNone: false``. UNABLE_TO_LOCK_ROW is
        "unable to obtain exclusive access to this record" (another transaction holds it)."""
        for rid in ids:
            self._row_faults.setdefault(rid, []).extend([code] * times)

    def _row_fault(self, *ids: str | None) -> dict[str, Any] | None:
        for rid in ids:
            codes = self._row_faults.get(rid or "")
            if codes:
                code = codes.pop(0)
                return _row_error(None, code, "unable to obtain exclusive access to this record"
                                  if code == "UNABLE_TO_LOCK_ROW" else code.lower(), [])
        return None

    def stall_after_apply(self, path: str, seconds: float) -> None:
        """The next REST request matching ``path`` is applied, then answered only after
        ``seconds``: a client timing out sees a failure although the change was made."""
        self._stalls.append((path, seconds))

    def start(self) -> FakeSalesforce:
        super().start()
        assert self._httpd
        loud = self._httpd.handle_error

        def handle_error(request: Any, address: Any) -> None:
            # a client that timed out closed its socket first: expected, not a fake bug
            if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
                loud(request, address)
        self._httpd.handle_error = handle_error  # type: ignore[method-assign]
        return self

    # ------------------------------------------------------------ test helpers
    def tick(self, seconds: int = 1) -> datetime:
        self.clock += timedelta(seconds=seconds)
        return self.clock

    def new_id(self, obj: str) -> str:
        return f"{PREFIX[obj]}5g{next(self._ids):013d}"

    def insert(self, obj: str, **values: Any) -> str:
        rid = self.new_id(obj)
        now = sf_time(self.tick())
        rec = {name: None for name in self.fields[obj]}
        rec.update(values, Id=rid, IsDeleted=False, SystemModstamp=now, LastModifiedDate=now,
                   CreatedDate=now)
        self.records[obj][rid] = rec
        self._index(obj, rid)
        return rid

    def _index(self, obj: str, rid: str) -> None:
        if obj == "CampaignMember":
            rec = self.records[obj][rid]
            old = self._member_key_of.get(rid)
            if old is not None:
                self._member_keys[old].discard(rid)
            key = (rec["CampaignId"], rec["ContactId"], rec["LeadId"])
            self._member_keys.setdefault(key, set()).add(rid)
            self._member_key_of[rid] = key

    def update(self, obj: str, rid: str, *, system_only: bool = False, **values: Any) -> None:
        """Change a record; ``system_only`` moves SystemModstamp but not LastModifiedDate."""
        rec = self.records[obj][rid]
        rec.update(values)
        if obj == "CampaignMember" and ({"CampaignId", "ContactId", "LeadId"} & set(values)):
            self._index(obj, rid)
        rec["SystemModstamp"] = sf_time(self.tick())
        if not system_only:
            rec["LastModifiedDate"] = rec["SystemModstamp"]

    def delete(self, obj: str, rid: str) -> None:
        """Soft delete (recycle bin); the campaign members of a deleted contact, lead or
        campaign go with it."""
        self.update(obj, rid, IsDeleted=True)
        if obj in ("Contact", "Lead", "Campaign"):
            for m in self.records["CampaignMember"].values():
                if rid in (m["ContactId"], m["LeadId"], m["CampaignId"]) and not m["IsDeleted"]:
                    self.update("CampaignMember", m["Id"], IsDeleted=True)

    def merge(self, obj: str, master: str, loser: str) -> None:
        """The loser is deleted with MasterRecordId pointing at the survivor."""
        self.records[obj][loser]["MasterRecordId"] = master
        self.delete(obj, loser)
        self.update(obj, master)

    def expire_sessions(self) -> None:
        self.sessions.clear()

    def live(self, obj: str) -> list[dict[str, Any]]:
        return [r for r in self.records[obj].values() if not r["IsDeleted"]]

    def campaign(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.live("Campaign") if c["Name"] == name), None)

    def members(self, name: str) -> set[str]:
        """Contact or lead ids in the named campaign."""
        camp = self.campaign(name)
        return {m["ContactId"] or m["LeadId"] for m in self.live("CampaignMember")
                if camp and m["CampaignId"] == camp["Id"]}

    # ------------------------------------------------------------ login
    def _session(self, flow: str) -> str:
        token = f"00D5g000001!{flow}.{next(self._ids)}"
        self.sessions.add(token)
        self.logins.append(flow)
        return token

    @route("POST", r"/services/Soap/u/(?P<ver>\d+\.\d+)")
    def soap_login(self, req: Request) -> Response:
        # the password element carries password + security token, concatenated
        doc = ElementTree.fromstring(req.body)
        text = {el.tag.rsplit("}", 1)[-1]: el.text or "" for el in doc.iter()}
        if (text.get("username") != self.username
                or text.get("password") != self.password + self.security_token):
            return Response(500, _soap_fault("INVALID_LOGIN",
                                             "Invalid username, password, security token; or "
                                             "user locked out."), {"Content-Type": "text/xml"})
        ver = req.match.group("ver")
        body = (f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
                f'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                f'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
                f"<serverUrl>{self.url}/services/Soap/u/{ver}/00D5g000001</serverUrl>"
                f"<sessionId>{self._session('password')}</sessionId>"
                f"</result></loginResponse></soapenv:Body></soapenv:Envelope>")
        return Response(200, body, {"Content-Type": "text/xml"})

    @route("POST", r"/services/oauth2/token")
    def token(self, req: Request) -> Response:
        form = req.form()
        grant = form.get("grant_type")
        if grant == "client_credentials":
            auth = req.headers.get("authorization", "")
            expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if auth != f"Basic {expected}":
                return Response(400, {"error": "invalid_client",
                                      "error_description": "invalid client credentials"})
            flow = "client_credentials"
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            if not self._jwt_ok(form.get("assertion", "")):
                return Response(400, {"error": "invalid_grant",
                                      "error_description": "invalid assertion"})
            flow = "jwt"
        else:
            return Response(400, {"error": "unsupported_grant_type",
                                  "error_description": f"grant type not supported: {grant}"})
        return Response(200, {"access_token": self._session(flow), "instance_url": self.url,
                              "token_type": "Bearer", "id": f"{self.url}/id/00D5g000001/005"})

    def _jwt_ok(self, assertion: str) -> bool:
        import jwt

        try:
            claims = jwt.decode(assertion, self.public_key, algorithms=["RS256"],
                                options={"verify_aud": False})
        except jwt.PyJWTError:
            return False
        return claims.get("iss") == self.client_id and claims.get("sub") == self.username

    # ------------------------------------------------------------ REST gate
    def _rest(self, req: Request, handler: Callable[[], Response]) -> Response:
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.sessions:
            return _errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if self.api_used >= self.api_max:
            resp = _errors(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        else:
            self.api_used += 1
            resp = handler()
            self._stall(req)
        resp.headers["Sforce-Limit-Info"] = f"api-usage={self.api_used}/{self.api_max}"
        return resp

    def _stall(self, req: Request) -> None:
        with self.lock:
            hit = next((s for s in self._stalls if re.search(s[0], req.path)), None)
            if hit:
                self._stalls.remove(hit)
        if hit:
            time.sleep(hit[1])

    # ------------------------------------------------------------ describe
    @route("GET", API + r"/sobjects/(?P<obj>\w+)/describe/?")
    def describe(self, req: Request) -> Response:
        obj = req.match.group("obj")
        if obj not in self.fields:
            return self._rest(req, lambda: _errors(404, "NOT_FOUND",
                                                   "The requested resource does not exist"))
        fields = [{"name": n, "type": t, "label": n, "nillable": n != "Id",
                   "updateable": n not in dict(SYSTEM_FIELDS) and n != "MasterRecordId"}
                  for n, t in self.fields[obj].items()]
        return self._rest(req, lambda: Response(200, {"name": obj, "fields": fields}))

    # ------------------------------------------------------------ SOQL
    @route("GET", API + r"/(?P<kind>query|queryAll)/?")
    def query(self, req: Request) -> Response:
        return self._rest(req, lambda: self._run_query(req))

    @route("GET", API + r"/(?:query|queryAll)/(?P<loc>[\w]+)-(?P<offset>\d+)")
    def query_more(self, req: Request) -> Response:
        rows = self._locators.get(req.match.group("loc"))
        if rows is None:
            return self._rest(req, lambda: _errors(400, "INVALID_QUERY_LOCATOR",
                                                   "invalid query locator"))
        return self._rest(req, lambda: self._page(req, req.match.group("loc"), rows,
                                                  int(req.match.group("offset"))))

    def _run_query(self, req: Request) -> Response:
        soql = req.arg("q") or ""
        try:
            rows = self._select(soql, include_deleted=req.match.group("kind") == "queryAll")
        except ValueError as exc:
            return _errors(400, "MALFORMED_QUERY", f"fake cannot run {soql!r}: {exc}")
        loc = f"01g5g{next(self._ids):010d}"
        self._locators[loc] = rows
        return self._page(req, loc, rows, 0)

    def _page(self, req: Request, loc: str, rows: list[dict[str, Any]], offset: int) -> Response:
        page = rows[offset:offset + self.page_size]
        done = offset + len(page) >= len(rows)
        body: dict[str, Any] = {"totalSize": len(rows), "done": done, "records": page}
        if not done:
            ver = req.match.group("ver")
            body["nextRecordsUrl"] = f"/services/data/v{ver}/query/{loc}-{offset + len(page)}"
        return Response(200, body)

    def _select(self, soql: str, *, include_deleted: bool) -> list[dict[str, Any]]:
        m = _SOQL.match(soql)
        if not m:
            raise ValueError("unsupported query shape")
        obj = m.group("obj")
        if obj not in self.fields:
            raise ValueError(f"sObject type '{obj}' is not supported")
        names = [f.strip() for f in m.group("fields").split(",")]
        for name in names:
            self._field(obj, name)
        conds = self._where(obj, m.group("where")) if m.group("where") else []
        rows = [r for r in self.records[obj].values()
                if (include_deleted or not r["IsDeleted"]) and all(c(r) for c in conds)]
        if m.group("order"):
            key = self._field(obj, m.group("order"))
            rows.sort(key=lambda r: (r[key] is None, r[key] or ""),
                      reverse=(m.group("dir") or "").upper() == "DESC")
        if m.group("limit"):
            rows = rows[:int(m.group("limit"))]
        return [self._project(obj, r, names) for r in rows]

    def _field(self, obj: str, name: str) -> str:
        found = {n.lower(): n for n in self.fields[obj]}.get(name.lower())
        if not found:
            raise ValueError(f"No such column '{name}' on entity '{obj}'")
        return found

    def _where(self, obj: str, text: str) -> list[Callable[[dict[str, Any]], bool]]:
        conds, pos = [], 0
        while True:
            m = _COND.match(text, pos)
            if not m:
                raise ValueError(f"unsupported condition at {text[pos:]!r}")
            conds.append(self._cond(obj, m))
            pos = m.end()
            if pos == len(text.rstrip()):
                return conds
            sep = re.compile(r"\s+AND\s+", re.I).match(text, pos)
            if not sep:
                raise ValueError(f"only AND is supported, at {text[pos:]!r}")
            pos = sep.end()

    def _cond(self, obj: str, m: re.Match) -> Callable[[dict[str, Any]], bool]:
        name = self._field(obj, m.group("f"))
        if m.group("in") is not None:
            values = {_unquote(v) for v in re.findall(r"'(?:[^'\\]|\\.)*'", m.group("in"))}
            return lambda r: r[name] in values
        raw, op = m.group("v"), m.group("op")
        ftype = self.fields[obj][name]
        if raw.lower() in ("true", "false"):
            value: Any = raw.lower() == "true"
        elif raw.lower() == "null":
            value = None
        elif raw.startswith("'"):
            value = _unquote(raw)
        elif ftype == "datetime" and _DT.match(raw):
            value = parse_time(raw)
        else:
            raise ValueError(f"unsupported literal {raw!r} for {name} ({ftype})")

        def holds(r: dict[str, Any]) -> bool:
            have = r[name]
            if isinstance(value, datetime):
                have = parse_time(have) if have else None
            if op in ("=", "!="):
                return (have == value) == (op == "=")
            if have is None or value is None:
                return False
            return {">": have > value, ">=": have >= value, "<": have < value,
                    "<=": have <= value}[op]
        return holds

    def _project(self, obj: str, rec: dict[str, Any], names: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": {
            "type": obj, "url": f"/services/data/v59.0/sobjects/{obj}/{rec['Id']}"}}
        for name in names:
            real = self._field(obj, name)
            out[real] = rec[real]
        return out

    # ------------------------------------------------------------ Bulk API 2.0 queries
    @route("POST", API + r"/jobs/query/?")
    def bulk_create(self, req: Request) -> Response:
        return self._rest(req, lambda: self._bulk_create(req.json() or {}))

    def _bulk_create(self, body: dict[str, Any]) -> Response:
        if body.get("operation") != "query":
            return _errors(400, "FAKE_UNSUPPORTED", "the fake runs operation=query jobs only")
        try:
            rows = self._select(body.get("query", ""), include_deleted=False)
        except ValueError as exc:
            return _errors(400, "INVALIDJOB", f"fake cannot run the query: {exc}")
        jid = f"7505g{next(self._ids):013d}"
        self.jobs[jid] = {"rows": rows, "polls": self.job_polls,
                          "fields": [f.strip() for f in _SOQL.match(body["query"])
                                     .group("fields").split(",")]}
        return Response(200, {"id": jid, "operation": "query", "state": "UploadComplete",
                              "object": rows[0]["attributes"]["type"] if rows else None})

    @route("GET", API + r"/jobs/query/(?P<jid>\w+)/?")
    def bulk_job(self, req: Request) -> Response:
        job = self.jobs.get(req.match.group("jid"))
        if job is None:
            return self._rest(req, lambda: _errors(404, "NOT_FOUND", "job not found"))
        state = "InProgress" if job["polls"] > 0 else "JobComplete"
        job["polls"] -= 1
        return self._rest(req, lambda: Response(200, {"id": req.match.group("jid"),
                                                      "state": state,
                                                      "numberRecordsProcessed": len(job["rows"])}))

    @route("GET", API + r"/jobs/query/(?P<jid>\w+)/results/?")
    def bulk_results(self, req: Request) -> Response:
        job = self.jobs.get(req.match.group("jid"))
        if job is None or job["polls"] >= 0:
            return self._rest(req, lambda: _errors(400, "INVALIDJOBSTATE", "job not complete"))
        return self._rest(req, lambda: self._csv_page(req, job))

    def _csv_page(self, req: Request, job: dict[str, Any]) -> Response:
        import csv
        import io

        start = int(req.arg("locator") or 0)
        size = int(req.arg("maxRecords") or 50_000)
        page = job["rows"][start:start + size]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(job["fields"])
        for row in page:
            writer.writerow([_csv_cell(row[f]) for f in job["fields"]])
        nxt = start + len(page)
        return Response(200, buf.getvalue(), {
            "Content-Type": "text/csv", "Sforce-NumberOfRecords": str(len(page)),
            "Sforce-Locator": str(nxt) if nxt < len(job["rows"]) else "null"})

    # ------------------------------------------------------------ single-record create
    @route("POST", API + r"/sobjects/(?P<obj>\w+)/?")
    def create_one(self, req: Request) -> Response:
        obj = req.match.group("obj")
        return self._rest(req, lambda: self._create_one(obj, req.json()))

    def _create_one(self, obj: str, values: dict[str, Any]) -> Response:
        result = self._save(dict(values, attributes={"type": obj}))
        if not result["success"]:
            return Response(400, [{"message": e["message"], "errorCode": e["statusCode"],
                                   "fields": e["fields"]} for e in result["errors"]])
        return Response(201, result)

    # ------------------------------------------------------------ sObject Collections
    @route("POST", API + r"/composite/sobjects/?")
    def collection_create(self, req: Request) -> Response:
        return self._rest(req, lambda: self._collection(req, self._save))

    @route("PATCH", API + r"/composite/sobjects/?")
    def collection_update(self, req: Request) -> Response:
        return self._rest(req, lambda: self._collection(req, self._patch))

    @route("DELETE", API + r"/composite/sobjects/?")
    def collection_delete(self, req: Request) -> Response:
        return self._rest(req, lambda: self._delete_ids(req))

    def _collection(self, req: Request, save: Callable[[dict[str, Any]], dict[str, Any]]
                    ) -> Response:
        body = req.json() or {}
        records = body.get("records") or []
        if body.get("allOrNone"):
            return _errors(400, "FAKE_UNSUPPORTED", "the fake implements allOrNone=false only")
        if len(records) > 200:
            return _errors(400, "EXCEEDED_ID_LIMIT",
                           "record limit reached. cannot submit more than 200 records into "
                           "this call")
        for rec in records:
            obj = (rec.get("attributes") or {}).get("type")
            if obj not in self.fields:
                return _errors(400, "INVALID_TYPE", f"sObject type '{obj}' is not supported.")
            for name in rec:
                if name not in ("attributes", "id") and name not in self.fields[obj]:
                    return _errors(400, "INVALID_FIELD",
                                   f"No such column '{name}' on sobject of type {obj}")
        return Response(200, [save(rec) for rec in records])

    def _save(self, rec: dict[str, Any]) -> dict[str, Any]:
        obj = rec["attributes"]["type"]
        values = {k: v for k, v in rec.items() if k != "attributes"}
        if fault := self._row_fault(values.get("ContactId"), values.get("LeadId")):
            return fault
        if obj == "CampaignMember":
            problem = self._member_problem(values)
            if problem:
                return _row_error(None, *problem)
        return {"id": self.insert(obj, **values), "success": True, "errors": []}

    def _member_problem(self, values: dict[str, Any]) -> tuple[str, str, list[str]] | None:
        camp = values.get("CampaignId")
        who_field = "ContactId" if values.get("ContactId") else "LeadId"
        who = values.get(who_field)
        if not camp or not who:
            return "REQUIRED_FIELD_MISSING", "Required fields are missing", [who_field]
        for obj, rid, field in (("Campaign", camp, "CampaignId"),
                                (who_field[:-2], who, who_field)):
            rec = self.records[obj].get(rid)
            if rec is None:
                return "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [field]
            if rec["IsDeleted"]:
                return "ENTITY_IS_DELETED", "entity is deleted", [field]
        key = (camp, who, None) if who_field == "ContactId" else (camp, None, who)
        members = self.records["CampaignMember"]
        if any(not members[m]["IsDeleted"] for m in self._member_keys.get(key, ())):
            return "DUPLICATE_VALUE", "Already a campaign member.", []
        return None

    def _patch(self, rec: dict[str, Any]) -> dict[str, Any]:
        obj, rid = rec["attributes"]["type"], rec.get("id")
        if fault := self._row_fault(rid):
            return dict(fault, id=rid)
        stored = self.records[obj].get(rid or "")
        if stored is None:
            return _row_error(rid, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        if stored["IsDeleted"]:
            return _row_error(rid, "ENTITY_IS_DELETED", "entity is deleted", [])
        values = {k: v for k, v in rec.items() if k not in ("attributes", "id")}
        for name, v in values.items():
            # a restricted picklist refuses a value it does not list, per row
            # (StatusCode INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST,
            # https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_concepts_core_data_objects.htm)
            allowed = self.restricted.get((obj, name))
            if allowed is not None and v is not None and v not in allowed:
                return _row_error(rid, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                  f"bad value for restricted picklist field: {v}", [name])
        self.update(obj, rid, **values)
        return {"id": rid, "success": True, "errors": []}

    def _delete_ids(self, req: Request) -> Response:
        if (req.arg("allOrNone") or "false").lower() == "true":
            return _errors(400, "FAKE_UNSUPPORTED", "the fake implements allOrNone=false only")
        ids = [i for i in (req.arg("ids") or "").split(",") if i]
        if len(ids) > 200:
            return _errors(400, "EXCEEDED_ID_LIMIT",
                           "record limit reached. cannot submit more than 200 records into "
                           "this call")
        out = []
        for rid in ids:
            obj = next((o for o, p in PREFIX.items() if rid.startswith(p)), None)
            rec = self.records[obj].get(rid) if obj else None
            fault = self._row_fault(rid, *((rec or {}).get(f) for f in ("ContactId", "LeadId")))
            if fault:
                out.append(dict(fault, id=rid))
            elif rec is None:
                out.append(_row_error(rid, "INVALID_CROSS_REFERENCE_KEY",
                                      "invalid cross reference id", []))
            elif rec["IsDeleted"]:
                out.append(_row_error(rid, "ENTITY_IS_DELETED", "entity is deleted", []))
            else:
                self.delete(obj, rid)
                out.append({"id": rid, "success": True, "errors": []})
        return Response(200, out)


def _csv_cell(value: Any) -> str:
    """Bulk API 2.0 CSV: null is an empty cell, booleans are true/false, datetimes end in Z
    (2026-11-01T00:00:08.000Z, unlike REST's +0000)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\dT.*\+0000$", value):
        return value[:-5] + "Z"
    return str(value)


def _row_error(rid: str | None, code: str, message: str, fields: list[str]) -> dict[str, Any]:
    return {"id": rid, "success": False,
            "errors": [{"statusCode": code, "message": message, "fields": fields}]}


def _soap_fault(code: str, message: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            f'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            f'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>'
            f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {message}</faultstring>"
            f"<detail><sf:LoginFault><sf:exceptionCode>{code}</sf:exceptionCode>"
            f"<sf:exceptionMessage>{message}</sf:exceptionMessage></sf:LoginFault></detail>"
            f"</soapenv:Fault></soapenv:Body></soapenv:Envelope>")
