"""Google Customer Match through the Data Manager API (``google-ads-datamanager``).

Why not the ``google-ads`` library: since 1 April 2026 the Google Ads API refuses Customer
Match uploads (OfflineUserDataJobService, UserDataService) from developer tokens that were not
already using them (``CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE``) and directs new
integrations to the Data Manager API
(https://developers.google.com/ads/blog/posts/2026/03/changes-to-customer-match-support-in).

The destination finds or creates the Customer Match user list by display name
(UserListService), then adds (``audienceMembers:ingest``) and removes
(``audienceMembers:remove``) members in requests of at most 10,000 members
(https://developers.google.com/data-manager/api/devguides/limits). Identifiers are normalised
and hashed by ``sync.identity`` (Google section) and sent HEX encoded.

Auth: a service-account key file named by the connection's ``credentials_file`` (usually
``${GOOGLE_APPLICATION_CREDENTIALS}``), else application default credentials, with the Data
Manager scope; the access token comes from the key file's ``token_uri`` (OAuth 2.0 JWT bearer
grant) and is renewed by google-auth. Only a connection with no ``credentials_file`` whose
``base_url`` is a plain-HTTP loopback address (a test fake) uses anonymous credentials.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..sync.errors import ConfigError, DestinationStopped, Problem, Reject
from ..sync.mapping.model import ConnectionConfig, DestinationConfig, Duration
from . import identity as ident
from .base import BatchResult, Change, Destination, Op, RemoteState
from .ratelimit import RollingWindow
from .retry import Action, Applied, Calls, Outcome, RetryPolicy, retry_after_seconds

SCOPE = "https://www.googleapis.com/auth/datamanager"
MAX_MEMBERS = 10_000  # audience members per request
MAX_IDENTIFIERS = 10  # user identifiers per audience member
PER_MINUTE = 300  # ingestion requests per minute per Cloud project
MAX_MEMBERSHIP = timedelta(days=540)  # Customer Match membership duration cap
SUPPORTED = ("email", "phone", "first_name", "last_name", "country", "zip")
ADDRESS = ("first_name", "last_name", "country", "zip")  # AddressInfo: all four or none

#: one limiter per process: the quota is per Google Cloud project, shared by destinations
_LIMITER = RollingWindow(PER_MINUTE, 60.0)


def _account_id(value: Any) -> str:
    digits = re.sub(r"[\s-]", "", str(value or ""))
    if not digits.isdigit():
        raise ValueError(f"bad Google Ads account id {value!r}: use digits, e.g. 1234567890")
    return digits


class GoogleAdsConnection(ConnectionConfig):
    """``type: google_ads``: the credentials file and the Google Ads accounts.

    ``base_url`` replaces the Data Manager endpoint; a loopback ``http://`` address (a test
    fake) is used with anonymous credentials."""

    credentials_file: str | None = None
    operating_account: str
    login_account: str | None = None

    _ids = field_validator("operating_account", "login_account", mode="before")(
        lambda v: None if v is None else _account_id(v))


ConsentValue = Literal["granted", "denied", "unspecified"]


class AdConsent(BaseModel):
    """Request-level consent sent with every upload (contacts without the mapping's consent
    field are never sent at all)."""

    model_config = ConfigDict(extra="forbid")
    ad_user_data: ConsentValue = "granted"
    ad_personalization: ConsentValue = "granted"


class CustomerMatchOptions(BaseModel):
    """Mapping fields of a ``google_ads_customer_match`` destination. ``audience:`` names the
    Customer Match list (as on Meta); ``list:`` is its deprecated spelling, still read
    (``validate`` warns)."""

    model_config = ConfigDict(extra="forbid")
    audience: str = Field("", description="display name of the Customer Match list")
    list: str | None = Field(None, min_length=1, description="deprecated: use audience")
    description: str | None = None
    terms_of_service: Literal["accepted", "not_accepted"] | bool = "not_accepted"
    ad_consent: AdConsent = Field(default_factory=AdConsent)
    membership_duration: Duration | None = None

    @model_validator(mode="after")
    def _audience(self) -> CustomerMatchOptions:
        if self.list is not None and self.audience and self.audience != self.list:
            raise ValueError("give the list's name once, as audience: (list: is its old name)")
        if self.list is not None:
            self.audience = self.list
        if not self.audience.strip():
            raise ValueError("audience: is required: the display name of the Customer Match "
                             "list (created when missing)")
        return self

    @field_validator("membership_duration")
    @classmethod
    def _cap(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and not timedelta(days=1) <= v <= MAX_MEMBERSHIP:
            raise ValueError("membership_duration must be between 1d and 540d")
        return v

    @property
    def terms_accepted(self) -> bool:
        return self.terms_of_service in ("accepted", True)


# ---------------------------------------------------------------- outcome table

_RETRY_STATUS = {408, 500, 502, 503, 504}


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return int(code) if isinstance(code, int) else None


def classify(exc: BaseException, *, where: str = "") -> Outcome:
    """Data Manager outcomes -> retry / stop / reject (one table for the platform).

    | HTTP / status                 | reason                              | action |
    | 429 RESOURCE_EXHAUSTED        | quota_limit ...PerMinute...         | retry (Retry-After, else backoff) |
    | 429 RESOURCE_EXHAUSTED        | quota_limit ...PerDay...            | stop: the day's quota is used |
    | 401 / 403                     | UNAUTHENTICATED / PERMISSION_DENIED | stop: credentials or access |
    | 400 INVALID_ARGUMENT          | TERMS_AND_CONDITIONS_NOT_SIGNED     | stop: accept the terms |
    | 400 INVALID_ARGUMENT          | INVALID_USER_LIST_ID                | stop: list gone, resync |
    | 400 INVALID_ARGUMENT          | anything else                       | reject the rows |
    | 408, 5xx, connection errors   |                                     | retry |
    """
    import requests
    from google.auth import exceptions as auth_exc

    status = _status(exc)
    reason = getattr(exc, "reason", None) or ""
    meta = getattr(exc, "metadata", None) or {}
    if isinstance(exc, auth_exc.RefreshError | auth_exc.InvalidOperation):
        return Outcome(Action.STOP, f"Google refused the credentials (HTTP 401 "
                                    f"UNAUTHENTICATED{where}): {one_reason(exc)}; check the "
                                    "service-account key file and that the key is not revoked")
    if status == 429:
        limit = meta.get("quota_limit", "")
        if "PerDay" in limit:
            return Outcome(Action.STOP, f"the Data Manager daily quota ({limit}) is used up; "
                                        "the rest is sent on the next run")
        resp = getattr(exc, "response", None)
        ra = retry_after_seconds(resp.headers.get("Retry-After")) if resp is not None else None
        return Outcome(Action.RETRY, "rate limited (HTTP 429 RESOURCE_EXHAUSTED)", ra, Applied.NO)
    if status == 403 and reason == "ACCESS_TOKEN_SCOPE_INSUFFICIENT":
        return Outcome(Action.STOP, f"Google refused the access token's scopes (HTTP 403 "
                                    f"{reason}{where}): the token needs the scope {SCOPE}; "
                                    "if the Workspace admin restricts the service account's "
                                    "scopes, allow that one")
    if status in (401, 403):
        return Outcome(Action.STOP, f"Google denied access (HTTP {status} {reason}{where}): give "
                                    "the service account access to the Google Ads account (or "
                                    "set login_account to its manager account)")
    if status == 400 and reason == "TERMS_AND_CONDITIONS_NOT_SIGNED":
        return Outcome(Action.STOP, f"the Customer Match terms of service are not accepted"
                                    f"{where}: accept them in Google Ads, then set "
                                    "`terms_of_service: accepted` on the destination")
    if status == 400 and reason == "INVALID_USER_LIST_ID":
        return Outcome(Action.STOP, f"the Customer Match list is gone{where}; run "
                                    "`crmsync resync` for this destination")
    if status == 400:
        return Outcome(Action.REJECT, reason or "INVALID_ARGUMENT")
    if status == 404:
        return Outcome(Action.STOP, f"Google has no such resource (HTTP 404 {reason}{where}): "
                                    "check operating_account, then `crmsync resync` the "
                                    "destination")
    if status in _RETRY_STATUS or isinstance(exc, requests.ConnectionError | requests.Timeout):
        return Outcome(Action.RETRY, f"transient error ({status or type(exc).__name__})")
    return Outcome(Action.FAIL, str(exc))


def one_reason(exc: BaseException) -> str:
    """An auth library error's first line (its args may hold a whole response)."""
    return str(exc.args[0] if exc.args else exc).splitlines()[0][:200]


_MEMBER_PATH = re.compile(r"audience_?[mM]embers\[(\d+)\]")


def rejected_members(exc: BaseException) -> dict[int, str]:
    """Indexes of the members a 400 names in its BadRequest field violations, with reasons."""
    out: dict[int, str] = {}
    for d in getattr(exc, "details", None) or ():
        if not isinstance(d, dict):
            continue
        for v in d.get("fieldViolations", ()):
            m = _MEMBER_PATH.search(v.get("field", ""))
            if m:
                out[int(m.group(1))] = (getattr(exc, "reason", None) or
                                        v.get("description") or "invalid audience member")
    return out


# ---------------------------------------------------------------- encoding


def encode_identity(identity: Mapping[str, str | None], wanted: list[str] | tuple[str, ...]
                    ) -> list[dict[str, Any]]:
    """Raw identifiers -> Data Manager ``UserIdentifier`` dicts (hashed where Google hashes).

    Email and phone are one identifier each; an address needs first and last name, country
    and zip together (AddressInfo requires all four). Reject when nothing usable is left."""
    def get(name: str) -> str | None:
        v = identity.get(name) if name in wanted else None
        return v if v is not None and str(v).strip() else None

    out: list[dict[str, Any]] = []
    problems: list[str] = []

    def add(kind: str, raw: str | None, norm: Callable[[str], str]) -> None:
        if raw is None:
            return
        try:
            text = str(raw).strip()
            out.append({kind: text.lower() if ident.is_sha256(text)
                        else ident.hash_normalised(norm(text))})
        except Reject as r:
            problems.append(r.reason)

    add("emailAddress", get("email"), ident.google_email)
    country = identity.get("country")
    add("phoneNumber", get("phone"), lambda p: ident.google_phone(
        p, country, identity.get("phone_region")))
    parts = [get(n) for n in ("first_name", "last_name", "country", "zip")]
    if all(parts):
        try:
            region = ident.google_region(parts[2])  # type: ignore[arg-type]
            out.append({"address": {
                "givenName": _hashed(parts[0], ident.google_given_name),  # type: ignore[arg-type]
                "familyName": _hashed(parts[1], ident.google_family_name),  # type: ignore[arg-type]
                "regionCode": region,
                "postalCode": ident.google_postal(parts[3], region),  # type: ignore[arg-type]
            }})
        except Reject as r:
            problems.append(r.reason)
    if not out:
        raise Reject("no usable identifier" + (f": {'; '.join(problems)}" if problems else ""))
    return out[:MAX_IDENTIFIERS]


def _hashed(raw: str, norm: Callable[[str], str]) -> str:
    text = raw.strip()
    return text.lower() if ident.is_sha256(text) else ident.hash_normalised(norm(text))


# ---------------------------------------------------------------- the destination


class CustomerMatchDestination(Destination):
    """``google_ads_customer_match``: a Customer Match list kept equal to a segment."""

    Options: ClassVar[type[BaseModel]] = CustomerMatchOptions
    connection_types: ClassVar[tuple[str, ...]] = ("google_ads",)
    target_option: ClassVar[str | None] = "audience"
    max_batch: ClassVar[int] = MAX_MEMBERS
    value: ClassVar[Literal["none", "label", "identity"]] = "identity"
    hashed: ClassVar[bool] = True
    #: the quota is requests per minute per Cloud project, not requests in flight
    #: (developers.google.com/data-manager/api/devguides/limits): several ingests go at
    #: once under the one per-minute limiter
    max_concurrency: ClassVar[int] = 4

    #: tests shrink waits; the limiter is per process (the quota is per Cloud project)
    limiter: RollingWindow = _LIMITER
    policy: RetryPolicy = RetryPolicy()
    timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ingest: Any = None
        self._lists: Any = None
        self._remote = RemoteState()  # what open() found; never changed after
        self._pending: list[str] = []  # upload requests whose status is still to be read
        self._size: dict[str, Any] = {}  # size and match rate, as last read back
        self._request_ids: list[str] = []
        self._previous: dict[str, Any] = {}
        if problems := [p for p in self.check(self.config, self.options)
                        if p.severity == "error"]:
            raise ConfigError(problems)

    @classmethod
    def check(cls, config: DestinationConfig, options: BaseModel) -> list[Problem]:
        """Customer Match's rules, for ``validate``: the identifiers it takes, an address's
        four parts together, the terms, the deprecated ``list:``."""
        ids = list(config.identifiers)
        out = [Problem(f"identifiers[{j}]", f"Customer Match does not take {i}",
                       f"use some of: {', '.join(SUPPORTED)}")
               for j, i in enumerate(ids) if i not in SUPPORTED]
        address = [n for n in ADDRESS if n in ids]
        if address and len(address) < len(ADDRESS):
            missing = [n for n in ADDRESS if n not in ids]
            out.append(Problem("identifiers", "Customer Match matches an address only with "
                               "first_name, last_name, country and zip together; "
                               f"{', '.join(address)} alone are never sent",
                               f"add {', '.join(missing)}, or remove {', '.join(address)}",
                               severity="warning"))
        opts: CustomerMatchOptions = options  # type: ignore[assignment]
        if opts.list is not None:
            out.append(Problem("list", "'list:' is deprecated for google_ads_customer_match",
                               "write audience: instead (the same name as before)",
                               severity="warning"))
        if not opts.terms_accepted:
            out.append(Problem("terms_of_service", "the Customer Match terms are not marked "
                               "accepted: every upload stops until they are",
                               "accept them in Google Ads, then set terms_of_service: accepted",
                               severity="warning"))
        return out

    # ------------------------------------------------------------ plumbing
    @property
    def conn(self) -> GoogleAdsConnection:
        c = self.connection
        return c if isinstance(c, GoogleAdsConnection) else GoogleAdsConnection.model_validate(
            c.model_dump() if c is not None else {})

    @property
    def opts(self) -> CustomerMatchOptions:
        return self.options  # type: ignore[return-value]

    def _credentials(self) -> Any:
        """The service account of ``credentials_file`` (always, even against a fake: the token
        comes from the key file's ``token_uri``); with no file, anonymous credentials only
        towards a plain-HTTP loopback ``base_url`` (tests), else application defaults."""
        conn = self.conn
        if not conn.credentials_file and conn.base_url and re.match(
                r"^http://(127\.0\.0\.1|localhost|\[::1\])[:/]", conn.base_url + "/"):
            from google.auth.credentials import AnonymousCredentials
            return AnonymousCredentials()
        if conn.credentials_file:
            from google.oauth2 import service_account
            path = self.ctx.resolve(conn.credentials_file)
            try:
                return service_account.Credentials.from_service_account_file(
                    str(path), scopes=[SCOPE])
            except (OSError, ValueError) as exc:
                var = self.ctx.env_var.get("credentials_file", "GOOGLE_APPLICATION_CREDENTIALS")
                raise DestinationStopped(
                    f"cannot read the Google credentials file named by ${var}: "
                    f"{type(exc).__name__}") from exc
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
        try:
            creds, _ = google.auth.default(scopes=[SCOPE])
        except DefaultCredentialsError as exc:
            raise DestinationStopped(
                "no Google credentials: set credentials_file: ${GOOGLE_APPLICATION_CREDENTIALS} "
                "on the connection, or configure application default credentials") from exc
        return creds

    def _clients(self) -> tuple[Any, Any]:
        """REST clients whose service-account credentials get an access token from the key
        file's ``token_uri`` (OAuth 2.0 JWT bearer grant) rather than a self-signed JWT, so a
        missing scope or a revoked key is answered by Google's token endpoint; google-auth
        renews the token before expiry and once on a 401."""
        if self._ingest is None:
            from google.ads import datamanager_v1 as dm
            from google.ads.datamanager_v1.services.ingestion_service.transports.rest import (
                IngestionServiceRestTransport,
            )
            from google.ads.datamanager_v1.services.user_list_service.transports.rest import (
                UserListServiceRestTransport,
            )
            host = self.conn.base_url or "datamanager.googleapis.com"
            creds = self._credentials()
            self._ingest = dm.IngestionServiceClient(transport=IngestionServiceRestTransport(
                host=host, credentials=creds, always_use_jwt_access=False))
            self._lists = dm.UserListServiceClient(transport=UserListServiceRestTransport(
                host=host, credentials=creds, always_use_jwt_access=False))
        return self._ingest, self._lists

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call through the shared retry loop; SDK retries off; every attempt counted
        (the limiter is waited on before each upload, in ``write``)."""
        where = f" (account {self.conn.operating_account})"
        calls = Calls(self.ctx, lambda e: classify(e, where=where), self.policy, self.limiter,
                      acquire=False, throttle=lambda e: _status(e) == 429)
        return calls(fn, *args, retry=None, timeout=self.timeout, **kwargs)

    @property
    def _parent(self) -> str:
        return f"accountTypes/GOOGLE_ADS/accounts/{self.conn.operating_account}"

    @property
    def _metadata(self) -> list[tuple[str, str]]:
        login = self.conn.login_account
        return [("login-account", f"accountTypes/GOOGLE_ADS/accounts/{login}")] if login else []

    # ------------------------------------------------------------ open
    def needs_open(self, state: Mapping[str, Any]) -> bool:
        return bool(state.get("pending"))  # last run's upload statuses are still to be read

    def open(self, state: Mapping[str, Any]) -> RemoteState:
        """Find or create the list by display name; read the status of last run's requests."""
        data = {k: v for k, v in state.items() if k != "pending"}
        self._clients()
        if not (data.get("list_id") and data.get("list") == self.opts.audience
                and data.get("account") == self.conn.operating_account):
            data.update(list_id=self._find_or_create(), list=self.opts.audience,
                        account=self.conn.operating_account)
        self._size = {k: data[k] for k in ("size", "match_rate") if k in data}
        self._previous = self._read_statuses(list(state.get("pending", [])))
        self._pending = list(self._previous.get("pending", []))
        if self._pending:
            data["pending"] = list(self._pending)
        self._remote = RemoteState(data)
        return self._remote

    def remember(self) -> RemoteState:
        """The list, its size as read back, and the uploads still to check next run."""
        data = {k: v for k, v in self._remote.items() if k != "pending"}
        data.update(self._size)
        if self._pending:
            data["pending"] = list(self._pending)
        return RemoteState(data)

    def _find(self) -> str | None:
        from google.ads import datamanager_v1 as dm
        token = ""
        while True:
            req = dm.ListUserListsRequest(parent=self._parent, page_size=1000, page_token=token)
            page = self._call(self._lists.list_user_lists, request=req, metadata=self._metadata)
            for ul in page.user_lists:
                if ul.display_name == self.opts.audience:
                    return str(ul.id)
            token = page.next_page_token
            if not token:
                return None

    def _find_or_create(self) -> str:
        from google.ads import datamanager_v1 as dm
        from google.api_core import exceptions as gexc
        found = self._find()
        if found:
            return found
        ul = dm.UserList(
            display_name=self.opts.audience, description=self.opts.description or "",
            ingested_user_list_info=dm.IngestedUserListInfo(
                upload_key_types=[dm.IngestedUserListInfo.UploadKeyType.CONTACT_ID],
                contact_id_info=dm.ContactIdInfo(
                    data_source_type=dm.DataSourceType.DATA_SOURCE_TYPE_FIRST_PARTY)))
        if self.opts.membership_duration is not None:
            ul.membership_duration = self.opts.membership_duration
        try:
            created = self._call(self._lists.create_user_list, parent=self._parent, user_list=ul,
                                 metadata=self._metadata)
        except gexc.Conflict:  # 409 ALREADY_EXISTS: an attempt whose answer was lost
            found = self._find()
            if not found:
                raise
            return found
        self.ctx.log.info("google: created Customer Match list %s", created.id)
        return str(created.id)

    def _read_statuses(self, request_ids: list[str]) -> dict[str, Any]:
        """RetrieveRequestStatus for last run's requests: failed record counts by reason."""
        from google.ads import datamanager_v1 as dm
        done = dm.RequestStatusPerDestination.RequestStatus
        result: dict[str, Any] = {"checked": 0, "failed_records": 0, "errors": {}, "pending": []}
        for rid in request_ids:
            resp = self._call(self._ingest.retrieve_request_status,
                              request=dm.RetrieveRequestStatusRequest(request_id=rid))
            result["checked"] += 1
            for st in resp.request_status_per_destination:
                if st.request_status in (done.PROCESSING, done.REQUEST_STATUS_UNKNOWN):
                    result["pending"].append(rid)
                    continue
                for ec in st.error_info.error_counts:
                    name = ec.reason.name
                    result["errors"][name] = result["errors"].get(name, 0) + ec.record_count
                    result["failed_records"] += ec.record_count
        if result["failed_records"]:
            self.ctx.log.warning("google: %d members of earlier uploads failed: %s",
                                 result["failed_records"], result["errors"])
        return result if request_ids else {}

    # ------------------------------------------------------------ encode / write
    def encode(self, identity: Mapping[str, str | None]) -> str:
        wanted = self.config.identifiers or SUPPORTED
        ids = encode_identity(identity, wanted)
        return json.dumps(ids, sort_keys=True, separators=(",", ":"))

    def _destination(self) -> Any:
        from google.ads import datamanager_v1 as dm
        acct = dm.ProductAccount.AccountType.GOOGLE_ADS
        d = dm.Destination(operating_account=dm.ProductAccount(
            account_type=acct, account_id=self.conn.operating_account),
            product_destination_id=str(self._remote["list_id"]))
        if self.conn.login_account:
            d.login_account = dm.ProductAccount(account_type=acct,
                                                account_id=self.conn.login_account)
        return d

    def _consent(self) -> Any:
        from google.ads import datamanager_v1 as dm
        s = dm.ConsentStatus
        m = {"granted": s.CONSENT_GRANTED, "denied": s.CONSENT_DENIED,
             "unspecified": s.CONSENT_STATUS_UNSPECIFIED}
        c = self.opts.ad_consent
        return dm.Consent(ad_user_data=m[c.ad_user_data],
                          ad_personalization=m[c.ad_personalization])

    def write(self, op: Op, changes: list[Change]) -> BatchResult:
        """Send one batch: ADD/UPDATE ingest the new value, REMOVE removes the ledger's value.
        An UPDATE first removes the previous identifiers when they differ; if the ingest then
        fails the ledger keeps the update pending and the next run sends it again."""
        if op is not Op.REMOVE and not self.opts.terms_accepted:
            raise DestinationStopped(
                f"{self.name}: the Customer Match terms of service must be accepted for account "
                f"{self.conn.operating_account}: accept them in Google Ads, then set "
                "`terms_of_service: accepted` on the destination", applied=False)
        result = BatchResult()
        members: list[tuple[str, list[dict]]] = []
        stale: list[tuple[str, list[dict]]] = []
        for c in changes:
            raw = c.previous if op is Op.REMOVE else c.value
            try:
                ids = json.loads(raw or "")
                if not isinstance(ids, list) or not ids:
                    raise ValueError
            except ValueError:
                result.rejected[c.key] = "no encoded identifiers to send"
                continue
            members.append((c.key, ids))
            if op is Op.UPDATE and c.previous and c.previous != c.value:
                with contextlib.suppress(ValueError):
                    stale.append((c.key, json.loads(c.previous)))
        for start in range(0, len(stale), MAX_MEMBERS):  # old identifiers out first, so a
            self._send(Op.REMOVE, stale[start:start + MAX_MEMBERS], BatchResult())  # shared one
        for start in range(0, len(members), MAX_MEMBERS):  # is added back, not removed
            self._send(op, members[start:start + MAX_MEMBERS], result)
        self.ctx.log.info("google: %s %d members (%d rejected)", op.value, len(result.done),
                          len(result.rejected))
        return result

    def _send(self, op: Op, members: list[tuple[str, list[dict]]], result: BatchResult) -> None:
        """One request; members a 400 names are rejected and the rest resent."""
        from google.api_core import exceptions as gexc
        while members:
            try:
                rid = self._request(op, [ids for _, ids in members])
            except gexc.BadRequest as exc:
                bad = rejected_members(exc)
                if not bad:  # a refused request, not its rows': they go again next run
                    raise DestinationStopped(
                        f"Google refused a request to list {self._remote.get('list_id')}: "
                        f"{exc.reason or 'INVALID_ARGUMENT'}", applied=False) from None
                for i, reason in bad.items():
                    if i < len(members):
                        result.rejected[members[i][0]] = reason
                members = [m for i, m in enumerate(members) if i not in bad]
                continue
            self._request_ids.append(rid)
            self._pending.append(rid)
            for key, _ in members:
                result.done[key] = None
            return

    def _request(self, op: Op, members: list[list[dict]]) -> str:
        from google.ads import datamanager_v1 as dm
        audience = [dm.AudienceMember(user_data=dm.UserData(user_identifiers=[
            dm.UserIdentifier(**_snake(i)) for i in ids])) for ids in members]
        common = dict(destinations=[self._destination()], audience_members=audience,
                      encoding=dm.Encoding.HEX)
        self.limiter.acquire()
        if op is Op.REMOVE:
            resp = self._call(self._ingest.remove_audience_members,
                              request=dm.RemoveAudienceMembersRequest(**common))
        else:
            tos = dm.TermsOfService(customer_match_terms_of_service_status=(
                dm.TermsOfServiceStatus.ACCEPTED))
            resp = self._call(self._ingest.ingest_audience_members,
                              request=dm.IngestAudienceMembersRequest(
                                  **common, consent=self._consent(), terms_of_service=tos))
        return resp.request_id

    # ------------------------------------------------------------ readback
    def readback(self) -> dict[str, Any] | None:
        """Size and match rate after a push (one GET), the request ids sent this run, and
        what last run's request statuses reported. No call when nothing was written."""
        out: dict[str, Any] = {"list_id": self._remote.get("list_id"),
                               "request_ids": list(self._request_ids)}
        if self._previous:
            out["previous_requests"] = {k: v for k, v in self._previous.items() if k != "pending"}
        if self._request_ids and self._remote.get("list_id"):
            from google.api_core.exceptions import GoogleAPICallError
            name = f"{self._parent}/userLists/{self._remote['list_id']}"
            try:  # the members are acknowledged: a failed read-back must not fail the run
                ul = self._call(self._lists.get_user_list, name=name, metadata=self._metadata)
            except (GoogleAPICallError, DestinationStopped) as exc:
                self.ctx.log.warning("google: list read-back failed: %s", type(exc).__name__)
                ul = None
            if ul is not None:
                self._size["size"] = max(ul.size_info.search_network_members_count,
                                         ul.size_info.display_network_members_count)
                self._size["match_rate"] = (
                    ul.ingested_user_list_info.contact_id_info.match_rate_percentage)
        out["size"] = self._size.get("size")
        out["match_rate"] = self._size.get("match_rate")
        return out

    def members(self) -> Iterator[str] | None:
        """The Data Manager API does not list a Customer Match list's members."""
        return None

    def close(self) -> None:
        for client in (self._ingest, self._lists):
            if client is not None:
                client.transport.close()
        self._ingest = self._lists = None


def _snake(identifier: dict[str, Any]) -> dict[str, Any]:
    """``{"emailAddress": h}`` (the stored JSON form) -> UserIdentifier keyword arguments."""
    keys = {"emailAddress": "email_address", "phoneNumber": "phone_number", "address": "address",
            "givenName": "given_name", "familyName": "family_name",
            "regionCode": "region_code", "postalCode": "postal_code"}
    return {keys[k]: (_snake(v) if isinstance(v, dict) else v) for k, v in identifier.items()}
