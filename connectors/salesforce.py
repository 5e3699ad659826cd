"""Salesforce: Contact/Lead source, Campaign membership and field write-back destinations.

Built on simple-salesforce (the ``salesforce`` extra). crmsync logs in itself (SOAP login with
username + password + security token, or the OAuth 2.0 JWT bearer / client-credentials token
endpoint) so that ``login_url`` / ``base_url`` can point anywhere, then hands simple-salesforce
the session id and instance. Every call goes through ``SalesforceClient.call``: one outcome
table (``classify``) fed to ``sync.retry.call``, one re-login on ``INVALID_SESSION_ID``, and a
stop before the org's daily API allocation falls under the configured reserve
(``Sforce-Limit-Info``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..sync.clock import iso
from ..sync.errors import DestinationStopped
from ..sync.mapping.model import ConnectionConfig, Duration, FieldType
from .base import BatchResult, Change, Context, Destination, Op, Pull, Source, SourceState
from .retry import Action, Applied, Calls, Outcome, RetryPolicy, retry_after_seconds

__all__ = ["CampaignDestination", "FieldDestination", "SalesforceClient", "SalesforceConnection",
           "SalesforceSource", "classify"]

T = TypeVar("T")
BULK_PAGE = 50_000  # rows per Bulk API 2.0 results page
COLLECTION_MAX = 200  # sObject Collections: at most 200 records per call
KEY_PREFIX = {"003": "Contact", "00Q": "Lead"}
#: describe() field type -> crmsync type; anything else (id, reference, textarea...) is a string
TYPES = {"double": FieldType.number, "currency": FieldType.number, "int": FieldType.number,
         "percent": FieldType.number, "long": FieldType.number, "boolean": FieldType.bool,
         "date": FieldType.date, "datetime": FieldType.datetime,
         "picklist": FieldType.enumeration, "multipicklist": FieldType.multi}
RETRY = RetryPolicy()  # tests may shrink the waits
#: row errors that are transient: the row was not written and may succeed a little later. A
#: row failing so is sent once more after ``ROW_RETRY_WAIT`` seconds, then left for the next
#: run (deferred), never recorded as a reject. UNABLE_TO_LOCK_ROW: "A deadlock or timeout
#: condition has been detected" (StatusCode); API_TEMPORARILY_UNAVAILABLE, SERVER_UNAVAILABLE,
#: REQUEST_RUNNING_TOO_LONG: the API's temporary-unavailability and timeout codes
#: (StatusCode and ExceptionCode lists, "Core Data Types Used in API Calls")
#: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_concepts_core_data_objects.htm
TRANSIENT_ROW_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "API_TEMPORARILY_UNAVAILABLE",
                                 "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"})
ROW_RETRY_WAIT = 2.0


@dataclass
class _Org:
    """What the clients of one org share in this process: the session, the API usage."""

    session: tuple[str, str] | None = None  # (session id, instance URL)
    used: int | None = None
    total: int | None = None


#: (login address, user, app, version) -> _Org: one login per org per process, and the
#: daily usage seen by any client, shared by the source and destinations of a run
_ORGS: dict[tuple[Any, ...], _Org] = {}


class SalesforceConnection(ConnectionConfig):
    """Credentials for one org: password + security token, client credentials, or JWT."""

    type: Literal["salesforce"] = "salesforce"
    login_url: str = "https://login.salesforce.com"
    domain: str | None = None  # shorthand: "test" (sandboxes) or "acme.my" (My Domain)
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    private_key_file: str | None = None
    api_version: str = "59.0"
    limit_reserve: float = Field(default=0.1, ge=0, lt=1)  # share of the daily calls kept
    timeout: float = Field(default=60.0, gt=0)  # seconds per HTTP call
    ca_file: str | None = None  # a CA bundle to trust (TLS-inspecting proxies, tests)


def _error_code(exc: BaseException) -> tuple[str, str]:
    """(errorCode, message) of a simple-salesforce error's JSON body, else ("", "")."""
    content = getattr(exc, "content", None)
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode", "")), str(content[0].get("message", ""))
    return "", ""


def classify(exc: BaseException, retry_after: float | None = None) -> Outcome:
    """The one table: what a failed Salesforce call means (each reason one line: the HTTP
    status, Salesforce's errorCode and message, what to do)."""
    import requests
    from simple_salesforce import exceptions as sfe

    code, message = _error_code(exc)
    status = getattr(exc, "status", None)
    what = f"HTTP {status} {code}".strip() + (f": {message}" if message else "")
    if isinstance(exc, requests.Timeout | requests.ConnectionError):
        return Outcome(Action.RETRY, f"network: {type(exc).__name__}")
    if isinstance(exc, sfe.SalesforceAuthenticationFailed):
        return Outcome(Action.STOP, f"Salesforce login failed: {exc.code}")
    if isinstance(exc, sfe.SalesforceExpiredSession):
        # reached only when a fresh session is refused too (one re-login is done before)
        return Outcome(Action.STOP, f"Salesforce refused a fresh session ({what}): check the "
                                    "integration user is active and allowed to use the API")
    if code == "REQUEST_LIMIT_EXCEEDED":
        if "concurrent" in message.lower():  # ConcurrentRequests: long requests in flight
            return Outcome(Action.RETRY, what, retry_after, Applied.NO)  # refused, not run
        return Outcome(Action.STOP, f"Salesforce daily API request limit exceeded ({what}); "
                                    "the rest is sent on the next run")
    if isinstance(exc, sfe.SalesforceRefusedRequest):
        return Outcome(Action.STOP, f"Salesforce refused the request ({what}): give the "
                                    "integration user access to the object and fields "
                                    "(profile or permission set)")
    if isinstance(exc, sfe.SalesforceMalformedRequest):
        return Outcome(Action.STOP, f"Salesforce rejected the request ({what}): check the "
                                    "destination's object, field and campaign in the mapping")
    if isinstance(exc, sfe.SalesforceGeneralError) and exc.status == 429:
        return Outcome(Action.RETRY, what, retry_after, Applied.NO)  # throttled
    if isinstance(exc, sfe.SalesforceGeneralError) and exc.status >= 500:
        return Outcome(Action.RETRY, what, retry_after)
    return Outcome(Action.FAIL, repr(exc))


class SalesforceClient:
    """A logged-in simple-salesforce client with crmsync's retry, re-login and limit rules."""

    bulk_wait: ClassVar[int] = 2  # seconds before the first poll of a Bulk API 2.0 job

    def __init__(self, conn: SalesforceConnection, ctx: Context):
        self.conn, self.ctx = conn, ctx
        self._sf: Any = None
        self.org = _ORGS.setdefault(
            (self.login_base, conn.username, conn.client_id, conn.api_version), _Org())
        self.last_headers: dict[str, str] = {}
        self.session = self._http_session()

    # ------------------------------------------------------------ HTTP
    def _http_session(self) -> Any:
        import requests

        client = self

        class Session(requests.Session):
            def request(self, method: str, url: str, *args: Any, **kw: Any) -> Any:  # type: ignore[override]
                kw.setdefault("timeout", client.conn.timeout)
                client.ctx.meter.add("calls")
                resp = super().request(method, url, *args, **kw)
                client._observe(resp)
                return resp

        session = Session()
        if self.conn.ca_file:
            session.verify = self.conn.ca_file
            session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        return session

    def _observe(self, resp: Any) -> None:
        self.last_headers = dict(resp.headers)
        m = re.search(r"api-usage=(\d+)/(\d+)", resp.headers.get("Sforce-Limit-Info", ""))
        if m:
            self.org.used, self.org.total = int(m.group(1)), int(m.group(2))

    @property
    def login_base(self) -> str:
        c = self.conn
        if c.base_url:
            return c.base_url.rstrip("/")
        return f"https://{c.domain}.salesforce.com" if c.domain else c.login_url.rstrip("/")

    # ------------------------------------------------------------ login
    def login(self, expired: str | None = None) -> None:
        """Use the session another client of this org got in this process, or log in
        (again, when that session is the ``expired`` one)."""
        from simple_salesforce import Salesforce

        if self.org.session is None or self.org.session[0] == expired:
            self.org.session = self._session_id()
            self.ctx.log.info("salesforce: logged in (%s)", self._flow())
        session_id, instance = self.org.session
        instance_url = self.conn.base_url or instance
        self._sf = Salesforce(session_id=session_id, instance_url=instance_url,
                              version=self.conn.api_version, session=self.session)

    def _flow(self) -> str:
        c = self.conn
        if c.username and c.password and c.security_token is not None:
            return "password"
        if c.client_id and c.private_key_file and c.username:
            return "jwt"
        if c.client_id and c.client_secret:
            return "client_credentials"
        missing = [n for n in ("username", "password", "security_token") if not getattr(c, n)]
        raise DestinationStopped(
            "Salesforce connection has no usable credentials: set username + password + "
            "security_token, client_id + client_secret, or client_id + private_key_file + "
            f"username (missing: {', '.join(self._env(n) for n in missing)})")

    def _env(self, name: str) -> str:
        var = self.ctx.env_var.get(name)
        return f"{name} (${{{var}}})" if var else name

    def _session_id(self) -> tuple[str, str]:
        from simple_salesforce.login import soap_login, token_login

        c, flow = self.conn, self._flow()
        if flow == "password":
            from html import escape

            body = _SOAP_LOGIN.format(
                username=escape(c.username or ""),
                password=escape(c.password.get_secret_value() + c.security_token.get_secret_value()))  # type: ignore[union-attr]
            url = f"{self.login_base}/services/Soap/u/{c.api_version}"
            sid, host = soap_login(url, body, {"content-type": "text/xml", "charset": "UTF-8",
                                               "SOAPAction": "login"}, None, self.session)
            return sid, f"https://{host}"
        token_url = f"{self.login_base}/services/oauth2/token"
        if flow == "jwt":
            import jwt

            key = self.ctx.resolve(c.private_key_file or "").read_bytes()
            aud = f"https://{c.domain}.salesforce.com" if c.domain else c.login_url.rstrip("/")
            claims = {"iss": c.client_id, "sub": c.username, "aud": aud,
                      "exp": int((datetime.now(UTC) + timedelta(minutes=3)).timestamp())}
            data = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": jwt.encode(claims, key, algorithm="RS256")}
            headers = None
        else:
            basic = f"{c.client_id}:{c.client_secret.get_secret_value()}"  # type: ignore[union-attr]
            data = {"grant_type": "client_credentials"}
            headers = {"Authorization": "Basic " + base64.b64encode(basic.encode()).decode()}
        sid, host = token_login(token_url, data, "login", c.client_id or "", headers, None,
                                self.session)
        return sid, f"https://{host}"

    # ------------------------------------------------------------ calls
    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(sf)`` under the outcome table, logging in first and once more on expiry."""
        self.attempts = 0
        return Calls(self.ctx, self._classify, RETRY, count=False)(self._attempt, fn)

    def _attempt(self, fn: Callable[[Any], T]) -> T:
        from simple_salesforce.exceptions import SalesforceExpiredSession

        self.attempts += 1
        self._check_reserve()
        if self._sf is None:
            self.login()
        try:
            return fn(self._sf)
        except SalesforceExpiredSession:
            self.ctx.log.info("salesforce: session expired; logging in again")
            self.login(expired=self._sf.session_id)
            self._check_reserve()
            return fn(self._sf)

    def _classify(self, exc: BaseException) -> Outcome:
        return classify(exc, retry_after_seconds(self.last_headers.get("Retry-After")))

    def _check_reserve(self) -> None:
        used, total = self.org.used, self.org.total
        if used is None or not total:
            return
        if total - used <= total * self.conn.limit_reserve:
            raise DestinationStopped(
                f"Salesforce daily API allocation nearly used ({used}/{total}); "
                f"stopping to keep {self.conn.limit_reserve:.0%} in reserve", applied=False)

    def query(self, soql: str, *, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """Rows of a SOQL query, page by page (each page under the retry rules)."""
        return self.pages(self.first_page(soql, include_deleted=include_deleted))

    def first_page(self, soql: str, *, include_deleted: bool = False) -> dict[str, Any]:
        return self.call(lambda sf: sf.query(soql, include_deleted=include_deleted))

    def pages(self, page: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The rows of this page and of the next ones (over ``nextRecordsUrl``)."""
        while True:
            for rec in page["records"]:
                yield {k: v for k, v in rec.items() if k != "attributes"}
            if page["done"]:
                return
            url = page["nextRecordsUrl"]
            page = self.call(lambda sf, url=url: sf.query_more(url, identifier_is_url=True))

    def bulk_query(self, obj: str, soql: str) -> list[dict[str, Any]]:
        """Rows of a Bulk API 2.0 query job (CSV pages; empty cells are nulls). A failure
        retries the whole job: its pages cannot be resumed under a new session."""
        import csv
        import io

        pages = self.call(lambda sf: list(getattr(sf.bulk2, obj).query(
            soql, max_records=BULK_PAGE, wait=type(self).bulk_wait)))
        return [{k: (v if v != "" else None) for k, v in row.items()}
                for page in pages for row in csv.DictReader(io.StringIO(page))]

    def rest(self, method: str, path: str, **kw: Any) -> Any:
        return self.call(lambda sf: sf.restful(path, method=method, **kw))


_SOAP_LOGIN = """<?xml version="1.0" encoding="utf-8" ?>
<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:env="http://schemas.xmlsoap.org/soap/envelope/">
  <env:Body>
    <n1:login xmlns:n1="urn:partner.soap.sforce.com">
      <n1:username>{username}</n1:username>
      <n1:password>{password}</n1:password>
    </n1:login>
  </env:Body>
</env:Envelope>"""


def soql_str(value: str) -> str:
    """A SOQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def soql_time(dt: datetime) -> str:
    """A SOQL dateTime literal (UTC): crmsync's own ISO spelling."""
    return iso(dt)


def parse_sf_time(text: str) -> datetime:
    """Salesforce's 2026-11-24T10:00:00.000+0000 -> naive UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC).replace(tzinfo=None)


def object_of(key: str, default: str | None = None) -> str:
    """Contact or Lead, from the record id's key prefix (003 / 00Q) or the given default."""
    obj = KEY_PREFIX.get(key[:3]) or default
    if obj is None:
        raise ValueError(f"{key!r} is no Contact (003...) or Lead (00Q...) id; "
                         "map the source's Salesforce id as its key, or set `object:`")
    return obj


def _campaign_gone(result: dict[str, Any]) -> bool:
    """A CampaignMember insert refused because its CampaignId is deleted or unknown."""
    return any(e.get("fields") == ["CampaignId"] and e.get("statusCode") in (
        "ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY") for e in result.get("errors") or [])


def transient(result: dict[str, Any]) -> bool:
    """A failed row whose error is transient (``TRANSIENT_ROW_CODES``)."""
    return not result.get("success") and row_errors(result)[0] in TRANSIENT_ROW_CODES


def deferral(result: dict[str, Any]) -> str:
    return f"{row_errors(result)[1]} (transient: sent again on the next run)"


def row_errors(result: dict[str, Any]) -> tuple[str, str]:
    """(statusCode, 'CODE: message') of a failed sObject Collections row."""
    errs = result.get("errors") or [{}]
    code = str(errs[0].get("statusCode", "UNKNOWN"))
    return code, f"{code}: {errs[0].get('message', '')}".strip()


# ---------------------------------------------------------------- source


class SourceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["Contact", "Lead"] = "Contact"
    fields: list[str] = Field(default_factory=list)  # besides `properties:`; none = all
    full_every: Duration = timedelta(days=7)  # periodic full reconcile
    lookback: Duration = timedelta(minutes=10)  # re-read this much before the cursor
    bulk_threshold: int = Field(default=50_000, ge=0)  # full pulls above: Bulk API 2.0


class SalesforceSource(Source):
    """Contacts or leads: full pull first and every ``full_every`` (Bulk API 2.0 above
    ``bulk_threshold`` rows), else incremental on
    SystemModstamp (which, unlike LastModifiedDate, also moves on system changes) with a
    look-back window; deleted and merged-away rows come from queryAll (IsDeleted = true)."""

    Options = SourceOptions
    connection_types = ("salesforce",)

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.client = SalesforceClient(self.connection, self.ctx)  # type: ignore[arg-type]
        self._types: dict[str, FieldType] | None = None

    @property
    def key(self) -> str:
        return self.config.key or "Id"

    def declared_fields(self) -> list[str] | None:
        # only describe() knows the types; `validate` reads `properties:` as untyped fields
        # (a declared list would be typed as strings there, like a file's columns)
        return None

    def _wanted(self) -> list[str]:
        opts: SourceOptions = self.options  # type: ignore[assignment]
        return list(dict.fromkeys([*self.config.properties, *opts.fields]))

    def schema(self) -> dict[str, FieldType]:
        if self._types is None:
            obj = self.options.object  # type: ignore[attr-defined]
            desc = self.client.call(lambda sf: getattr(sf, obj).describe())
            described = {f["name"]: TYPES.get(f["type"], FieldType.string) for f in desc["fields"]}
            wanted = self._wanted() or list(described)
            unknown = [f for f in wanted if f not in described]
            if unknown:
                raise DestinationStopped(f"{obj} has no field(s) {', '.join(unknown)}")
            self._types = {self.key: described.get(self.key, FieldType.string),
                           **{f: described[f] for f in wanted}}
        return dict(self._types)

    def _full(self, select: str) -> list[dict[str, Any]]:
        """Every row: over REST pages, or one Bulk API 2.0 job when the first page's
        totalSize is over ``bulk_threshold`` (no extra call for small objects)."""
        opts: SourceOptions = self.options  # type: ignore[assignment]
        first = self.client.first_page(select)
        if first["totalSize"] <= opts.bulk_threshold:
            return list(self.client.pages(first))
        self.ctx.log.info("salesforce: %d %s rows: Bulk API 2.0", first["totalSize"], opts.object)
        return self.client.bulk_query(opts.object, select)

    def pull(self, state: SourceState) -> Pull:
        opts: SourceOptions = self.options  # type: ignore[assignment]
        fields = list(dict.fromkeys([self.key, *self.schema(), "SystemModstamp"]))
        select = f"SELECT {', '.join(fields)} FROM {opts.object}"
        since = (state.cursor or {}).get("since") if isinstance(state.cursor, dict) else None
        full = state.full_due(self.ctx.now, opts.full_every, since)
        gone: list[dict[str, Any]] = []
        if full:
            rows = self._full(select)
        else:
            bound = soql_time(datetime.fromisoformat(since) - opts.lookback)
            rows = list(self.client.query(
                f"{select} WHERE SystemModstamp > {bound} ORDER BY SystemModstamp ASC"))
            gone = list(self.client.query(
                f"SELECT {self.key}, SystemModstamp FROM {opts.object} WHERE IsDeleted = true "
                f"AND SystemModstamp > {bound}", include_deleted=True))
        stamps = [parse_sf_time(r["SystemModstamp"]) for r in rows + gone if r.get("SystemModstamp")]
        newest = max(stamps, default=datetime.fromisoformat(since) if since else None)
        deleted = [r[self.key] for r in gone]
        keep = set(self.schema())  # SystemModstamp only when asked for
        out = [{k: v for k, v in r.items() if k in keep} for r in rows]
        self.ctx.log.info("salesforce: %s pull of %s: %d rows, %d deleted",
                          "full" if full else "incremental", opts.object, len(out), len(deleted))
        return Pull(full=full, rows=out, deleted=deleted,
                    cursor={"since": newest.isoformat() if newest else None})


# ---------------------------------------------------------------- destinations


class _SalesforceDestination(Destination):
    connection_types = ("salesforce",)
    max_batch = COLLECTION_MAX

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.client = SalesforceClient(self.connection, self.ctx)  # type: ignore[arg-type]
        self.write_calls = 0

    def readback(self) -> dict[str, Any] | None:
        """What this run did (no extra API call): acknowledged write calls, API usage."""
        out: dict[str, Any] = {"write_calls": self.write_calls}
        if self.client.org.total:
            out["api_usage"] = f"{self.client.org.used}/{self.client.org.total}"
        return out

    def close(self) -> None:
        self.client.session.close()

    def _collection(self, method: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.write_calls += 1
        return self.client.rest(method, "composite/sobjects",
                                json={"allOrNone": False, "records": records})

    def write(self, op: Op, changes: list[Change]) -> BatchResult:
        """Reject keys that are no contact or lead id, write the others."""
        bad: dict[str, str] = {}
        for c in changes:
            try:
                object_of(c.key, self.options.object)  # type: ignore[attr-defined]
            except ValueError as exc:
                bad[c.key] = str(exc)
        good = [c for c in changes if c.key not in bad]
        out = self._write(op, good) if good else BatchResult()
        out.rejected.update(bad)
        return out

    def _write(self, op: Op, changes: list[Change]) -> BatchResult:
        raise NotImplementedError

    def _rows(self, items: list[T], send: Callable[[list[T]], list[dict[str, Any]]]
              ) -> list[tuple[T, dict[str, Any]]]:
        """``send(items)``'s per-row results, the rows that failed transiently sent once more
        after a short wait (their second result is the one returned)."""
        pairs = list(zip(items, send(items), strict=True))
        again = [i for i, (_, res) in enumerate(pairs) if transient(res)]
        if again:
            self.ctx.log.info("salesforce: %d rows failed transiently (%s); sending them again",
                              len(again), row_errors(pairs[again[0]][1])[0])
            self.ctx.sleep(ROW_RETRY_WAIT)
            for i, res in zip(again, send([pairs[i][0] for i in again]), strict=True):
                pairs[i] = (pairs[i][0], res)
        return pairs

    def _delete(self, ids: list[str]) -> list[dict[str, Any]]:
        self.write_calls += 1
        return self.client.rest("DELETE", "composite/sobjects",
                                params={"ids": ",".join(ids), "allOrNone": "false"})


class CampaignOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign: str  # the Campaign's Name; created when missing
    object: Literal["Contact", "Lead"] | None = None  # default: from the id prefix 003/00Q
    status: str | None = None  # CampaignMember Status for new members (org default if unset)


class CampaignDestination(_SalesforceDestination):
    """Keeps a Campaign's members (CampaignMember rows) equal to the segment."""

    Options = CampaignOptions
    target_option = "campaign"
    value = "none"

    def open(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        opts: CampaignOptions = self.options  # type: ignore[assignment]
        if state.get("campaign_id") and state.get("campaign") == opts.campaign:
            self.campaign_id = state["campaign_id"]  # known: no call at all
            return state
        return self._resolve()

    def _resolve(self) -> dict[str, Any]:
        """Find the campaign by name, or create it."""
        opts: CampaignOptions = self.options  # type: ignore[assignment]
        found = list(self.client.query(
            f"SELECT Id FROM Campaign WHERE Name = {soql_str(opts.campaign)}"))
        if found:
            self.campaign_id = found[0]["Id"]
        else:
            made = self.client.call(lambda sf: sf.Campaign.create(
                {"Name": opts.campaign, "IsActive": True}))
            self.campaign_id = made["id"]
            self.ctx.log.info("salesforce: created campaign %s", self.campaign_id)
        return {"campaign_id": self.campaign_id, "campaign": opts.campaign}

    def _who(self, key: str) -> str:
        return object_of(key, self.options.object) + "Id"  # type: ignore[attr-defined]

    def _write(self, op: Op, changes: list[Change]) -> BatchResult:
        if op is Op.UPDATE:  # membership carries no value: nothing to change
            return BatchResult.all_done(changes)
        return self._add(changes) if op is Op.ADD else self._remove(changes)

    def _insert(self, changes: list[Change]) -> list[dict[str, Any]]:
        status = self.options.status  # type: ignore[attr-defined]
        return self._collection("POST", [
            {"attributes": {"type": "CampaignMember"}, "CampaignId": self.campaign_id,
             self._who(c.key): c.key, **({"Status": status} if status else {})}
            for c in changes])

    def _add(self, changes: list[Change]) -> BatchResult:
        def insert(changes: list[Change]) -> list[dict[str, Any]]:
            results = self._insert(changes)
            if any(_campaign_gone(r) for r in results):  # deleted in Salesforce since
                self.ctx.log.warning("salesforce: campaign %s is gone; finding it again",
                                     self.campaign_id)
                self._resolve()
                results = self._insert(changes)
            return results

        out = BatchResult()
        for change, res in self._rows(changes, insert):
            if res.get("success"):
                out.done[change.key] = res["id"]  # kept in the ledger for the removal
                continue
            code, reason = row_errors(res)
            if code == "DUPLICATE_VALUE":  # "Already a campaign member."
                out.done[change.key] = None  # its Id is looked up if it is ever removed
                out.preexisting.add(change.key)  # (after a retry, the core knows better)
            elif code in TRANSIENT_ROW_CODES:
                out.deferred[change.key] = deferral(res)
            else:
                out.rejected[change.key] = reason
        return out

    def _remove(self, changes: list[Change]) -> BatchResult:
        ids = {c.key: c.previous for c in changes if c.previous}
        unknown = [c.key for c in changes if not c.previous]
        ids.update(self._member_ids(unknown))
        out = BatchResult(done={k: None for k in unknown if k not in ids})  # not a member
        keys = list(ids)
        if not keys:
            return out
        for key, res in self._rows(keys, lambda ks: self._delete([ids[k] for k in ks])):
            code, reason = row_errors(res) if not res.get("success") else ("", "")
            if not code or code in ("ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"):
                out.done[key] = None  # deleted now, or already gone
            elif code in TRANSIENT_ROW_CODES:
                out.deferred[key] = deferral(res)
            else:
                out.rejected[key] = reason
        return out

    def _member_ids(self, keys: list[str]) -> dict[str, str]:
        """CampaignMember Ids of these contacts/leads (when the ledger holds none)."""
        found: dict[str, str] = {}
        for who in sorted({self._who(k) for k in keys}):
            subset = [k for k in keys if self._who(k) == who]
            if not subset:
                continue
            rows = self.client.query(
                f"SELECT Id, {who} FROM CampaignMember WHERE CampaignId = "
                f"{soql_str(self.campaign_id)} AND {who} IN ({', '.join(map(soql_str, subset))})")
            found.update({r[who]: r["Id"] for r in rows})
        return found

    def members(self) -> Iterator[str]:
        rows = self.client.query(f"SELECT ContactId, LeadId FROM CampaignMember WHERE "
                                 f"CampaignId = {soql_str(self.campaign_id)}")
        return (r["ContactId"] or r["LeadId"] for r in rows)


class FieldOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str  # e.g. Segment__c: receives the segment name; cleared on removal
    object: Literal["Contact", "Lead"] | None = None  # default: from the id prefix 003/00Q


class FieldDestination(_SalesforceDestination):
    """Writes the segment (or group) name into a field of each contact or lead.

    crmsync creates no Salesforce field: the field must exist (Text, or a Picklist whose
    values are the segment names). A missing field stops the destination with how to make
    it; a value a restricted picklist does not hold is a reject of that row naming the value
    to add (Salesforce's INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST)."""

    Options = FieldOptions
    target_option = "field"
    value = "label"

    def _fix(self, obj: str) -> str:
        values = ", ".join(self.ctx.labels) or "the segment names"
        return (f"create it in Setup > Object Manager > {obj} > Fields & Relationships as Text "
                f"(255) or a Picklist with the values {values}, and give the integration user "
                "edit access to it")

    def _write(self, op: Op, changes: list[Change]) -> BatchResult:
        opts: FieldOptions = self.options  # type: ignore[assignment]
        value = (lambda c: None) if op is Op.REMOVE else (lambda c: c.value or c.label)
        def record(c: Change) -> dict[str, Any]:
            return {"attributes": {"type": object_of(c.key, opts.object)}, "id": c.key,
                    opts.field: value(c)}

        def patch(changes: list[Change]) -> list[dict[str, Any]]:
            return self._collection("PATCH", [record(c) for c in changes])

        try:
            rows = self._rows(changes, patch)
        except DestinationStopped as exc:
            if "INVALID_FIELD" not in str(exc):
                raise
            obj = object_of(changes[0].key, opts.object)
            raise DestinationStopped(f"Salesforce has no field {obj}.{opts.field} (INVALID_FIELD; "
                                     f"crmsync creates no field): {self._fix(obj)}") from None
        out = BatchResult()
        for change, res in rows:
            code, reason = row_errors(res) if not res.get("success") else ("", "")
            if not code or (op is Op.REMOVE and code == "ENTITY_IS_DELETED"):
                out.done[change.key] = None  # written, or the record is gone
            elif code in TRANSIENT_ROW_CODES:
                out.deferred[change.key] = deferral(res)
            elif code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST":
                out.rejected[change.key] = (
                    f"{object_of(change.key, opts.object)}.{opts.field} is a restricted "
                    f"picklist without the value '{value(change)}': add it to the picklist's "
                    "values in Setup")
            else:
                out.rejected[change.key] = reason
        return out
