"""A stateful fake of Google's Data Manager API (REST, v1), for Customer Match.

The real client (``google.ads.datamanager_v1`` with ``transport="rest"``) talks to it over
HTTP on loopback; the paths are the ones the installed client's REST transport sends
(``services/*/transports/rest_base.py``). Requests are JSON in camelCase with enums as
integers (the client sets ``$alt=json;enum-encoding=int``); answers may use enum names.

What it models, with the docs it follows:

* UserListService: create, list (paged), get, with ``sizeInfo`` and
  ``ingestedUserListInfo.contactIdInfo.matchRatePercentage``
  (https://developers.google.com/data-manager/api/reference/rest/v1/accountTypes.accounts.userLists).
* IngestionService: ``audienceMembers:ingest`` / ``audienceMembers:remove`` /
  ``requestStatus:retrieve``
  (https://developers.google.com/data-manager/api/reference/rest/v1/audienceMembers).
* Request limits: at most 10,000 audience members, 10 user identifiers per member and
  10 destinations per request (ErrorReason TOO_MANY_AUDIENCE_MEMBERS /
  TOO_MANY_USER_IDENTIFIERS / TOO_MANY_DESTINATIONS); per project 300 ingestion requests a
  minute and 100,000 a day, answered with HTTP 429 RESOURCE_EXHAUSTED whose ErrorInfo names
  the quota in ``metadata.quota_limit``
  (https://developers.google.com/data-manager/api/devguides/limits).
* Identifier format: HEX encoding; email, phone, given and family names must be SHA-256
  hex; region code is two letters and postal code is sent unhashed
  (https://developers.google.com/data-manager/api/devguides/concepts/formatting). A bad
  value fails the whole request with 400 INVALID_ARGUMENT and a BadRequest field violation
  naming the member.
* Terms: uploads need ``termsOfService.customerMatchTermsOfServiceStatus = ACCEPTED``
  unless the account already accepted them, else 400 TERMS_AND_CONDITIONS_NOT_SIGNED
  (https://developers.google.com/data-manager/api/devguides/audiences/google-ads/customer-match/upload-data).
* Accounts: an operating account the credentials cannot reach answers 403
  PERMISSION_DENIED.
* Matching: ``google_users`` holds the SHA-256 hashes Google "knows"; a member matches when
  one of its email or phone hashes is known. Size counts matched members, match rate is
  matched / uploaded (percent, rounded down).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .server import FakeServer, Request, Response, route

HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
REGION = re.compile(r"^[A-Z]{2}$")
MAX_MEMBERS, MAX_IDENTIFIERS, MAX_DESTINATIONS = 10_000, 10, 10
DOMAIN = "datamanager.googleapis.com"

# enum values as the client sends them (integers) or names
HEX_ENCODING = (1, "HEX")
ACCEPTED = (1, "ACCEPTED")
DENIED = (2, "CONSENT_DENIED")
GOOGLE_ADS = (1, "GOOGLE_ADS")


def error(status: int, code: str, message: str, reason: str | None = None,
          metadata: dict[str, str] | None = None, violations: list[dict] | None = None,
          headers: dict[str, str] | None = None) -> Response:
    """A google.rpc.Status body as the REST surface sends it."""
    details: list[dict] = []
    if reason:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                        "domain": DOMAIN, "metadata": metadata or {}})
    if violations:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": violations})
    return Response(status, {"error": {"code": status, "message": message, "status": code,
                                       "details": details}}, headers or {})


def quota_error(limit: str, retry_after: float | None = None) -> Response:
    headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
    return error(429, "RESOURCE_EXHAUSTED", f"Quota exceeded for quota metric {limit}",
                 "RESOURCE_EXHAUSTED", {"quota_limit": limit}, headers=headers)


class BadRequest(Exception):
    def __init__(self, reason: str, message: str, field_path: str | None = None):
        super().__init__(message)
        self.reason, self.message, self.field_path = reason, message, field_path

    def response(self) -> Response:
        violations = ([{"field": self.field_path, "description": self.message}]
                      if self.field_path else None)
        return error(400, "INVALID_ARGUMENT", self.message, self.reason, violations=violations)


@dataclass
class UserList:
    account: str
    id: int
    display_name: str
    description: str = ""
    membership_duration: str | None = None
    members: set[str] = field(default_factory=set)  # canonical JSON of each member's identifiers

    @property
    def name(self) -> str:
        return f"accountTypes/GOOGLE_ADS/accounts/{self.account}/userLists/{self.id}"


@dataclass
class Status:
    destination: dict
    kind: str  # "ingest" or "remove"
    records: int
    identifiers: int
    errors: dict[str, int]
    polls_left: int  # answers PROCESSING this many more times


class DataManagerFake(FakeServer):
    """Data Manager API on loopback. Configure ``accounts`` (account id -> reachable),
    ``terms_accepted`` and ``google_users`` before the run; inspect ``lists`` after."""

    def __init__(self, *, per_minute: int = 300, per_day: int = 100_000, page_size: int = 100,
                 clock: Callable[[], float] = time.monotonic, processing_polls: int = 0,
                 window: float = 60.0, **kw: Any):
        super().__init__(**kw)
        self.accounts: dict[str, bool] = {}
        self.terms_accepted: set[str] = set()
        self.google_users: set[str] = set()
        #: identifier kind -> SHA-256 of the normal forms a test expects; a hash of anything
        #: else (e.g. an un-normalised value) is recorded in ``invalid``
        self.expected: dict[str, set[str]] = {}
        self.invalid: list[tuple[str, str]] = []
        self.lists: dict[int, UserList] = {}
        self.statuses: dict[str, Status] = {}
        self.per_minute, self.per_day, self.page_size = per_minute, per_day, page_size
        self.processing_polls = processing_polls
        self.clock = clock
        self.window = window  # the per-minute quota's window (benchmarks may scale it)
        self._ids = itertools.count(9_000_000_001)
        self._minute: deque[float] = deque()
        self._day = 0
        self._quota_lock = threading.Lock()
        #: OAuth 2.0 for service accounts. Once a service account is added, every API call
        #: needs ``Authorization: Bearer <token>`` with a token from ``/token``.
        self.service_accounts: dict[str, bytes] = {}  # client_email -> public key (PEM)
        self.granted_scopes: set[str] | None = None  # None: whatever is asked
        self.access_tokens: dict[str, set[str]] = {}  # token -> scopes
        self.token_requests = 0

    # ------------------------------------------------------------ helpers for tests
    def add_account(self, account_id: str, *, reachable: bool = True,
                    terms_accepted: bool = False) -> None:
        self.accounts[account_id] = reachable
        if terms_accepted:
            self.terms_accepted.add(account_id)

    def expect(self, kind: str, normalised: list[str]) -> None:
        """Declare the normal forms of one identifier kind (emailAddress, phoneNumber,
        givenName, familyName) the client should send, as Google's guide defines them."""
        self.expected.setdefault(kind, set()).update(
            hashlib.sha256(v.encode()).hexdigest() for v in normalised)

    def _check_normalised(self, kind: str, value: str) -> None:
        if kind in self.expected and value.lower() not in self.expected[kind]:
            with self.lock:
                self.invalid.append((kind, value))

    def list_named(self, display_name: str) -> UserList | None:
        return next((u for u in self.lists.values() if u.display_name == display_name), None)

    def member_rows(self, list_id: int) -> list[dict]:
        return [json.loads(m) for m in sorted(self.lists[list_id].members)]

    # ------------------------------------------------------------ OAuth 2.0
    def add_service_account(self, email: str, public_key_pem: bytes) -> None:
        """Trust this service account's key; from now on API calls need a bearer token."""
        self.service_accounts[email] = public_key_pem

    def expire_access_tokens(self) -> None:
        self.access_tokens.clear()

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @route("POST", r"/token")
    def token(self, req: Request) -> Response:
        """The JWT bearer grant of a service account (RFC 7523), as Google's token endpoint
        answers it: https://developers.google.com/identity/protocols/oauth2/service-account#httprest
        (a bad signature or claim is 400 invalid_grant)."""
        import jwt

        form = req.form()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Response(400, {"error": "unsupported_grant_type"})
        assertion = form.get("assertion", "")
        try:
            iss = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
            key = self.service_accounts[iss]
            # "aud ... is always https://oauth2.googleapis.com/token", whatever the token_uri
            claims = jwt.decode(assertion, key, algorithms=["RS256"],
                                audience="https://oauth2.googleapis.com/token")
        except (KeyError, jwt.PyJWTError) as exc:
            return Response(400, {"error": "invalid_grant",
                                  "error_description": f"Invalid JWT: {type(exc).__name__}"})
        asked = set((claims.get("scope") or "").split())
        scopes = asked if self.granted_scopes is None else asked & self.granted_scopes
        token = f"ya29.fake-{uuid.uuid4().hex}"
        with self.lock:
            self.access_tokens[token] = scopes
            self.token_requests += 1
        return Response(200, {"access_token": token, "token_type": "Bearer",
                              "expires_in": 3599})

    def _pick_fault(self, req: Request):  # auth is checked before any route
        if self.service_accounts and req.path != "/token":
            token = req.headers.get("authorization", "").removeprefix("Bearer ").strip()
            scopes = self.access_tokens.get(token)
            if scopes is None:
                from .server import Fault
                e = error(401, "UNAUTHENTICATED", "Request had invalid authentication "
                          "credentials. Expected OAuth 2 access token.", "ACCESS_TOKEN_EXPIRED"
                          if token.startswith("ya29.") else "CREDENTIALS_MISSING")
                return Fault(status=e.status, body=e.body)
            if "https://www.googleapis.com/auth/datamanager" not in scopes:
                from .server import Fault
                e = error(403, "PERMISSION_DENIED", "Request had insufficient authentication "
                          "scopes.", "ACCESS_TOKEN_SCOPE_INSUFFICIENT")
                return Fault(status=e.status, body=e.body)
        return super()._pick_fault(req)

    # ------------------------------------------------------------ quota
    def _take_ingestion_quota(self) -> Response | None:
        with self._quota_lock:
            now = self.clock()
            while self._minute and self._minute[0] <= now - self.window:
                self._minute.popleft()
            if self._day >= self.per_day:
                return quota_error("IngestionMutateRequestsPerDayPerProject")
            if len(self._minute) >= self.per_minute:
                return quota_error("IngestionMutateRequestsPerMinutePerProject",
                                   retry_after=max(0.0, self._minute[0] + self.window - now))
            self._minute.append(now)
            self._day += 1
        return None

    # ------------------------------------------------------------ access
    def _account(self, req: Request, account: str) -> Response | None:
        if not self.accounts.get(account):
            return error(403, "PERMISSION_DENIED",
                         f"The caller does not have permission on account {account}",
                         "PERMISSION_DENIED")
        login = req.headers.get("login-account")
        if login:
            login_id = login.rsplit("/", 1)[-1]
            if not self.accounts.get(login_id):
                return error(403, "PERMISSION_DENIED",
                             f"The caller does not have permission on {login}",
                             "PERMISSION_DENIED")
        return None

    # ------------------------------------------------------------ UserListService
    def _user_list_json(self, ul: UserList) -> dict:
        matched = sum(1 for m in ul.members if self._matches(json.loads(m)))
        rate = (100 * matched // len(ul.members)) if ul.members else 0
        body = {
            "name": ul.name, "id": str(ul.id), "displayName": ul.display_name,
            "description": ul.description, "membershipStatus": "OPEN",
            "accessReason": "OWNED", "accountAccessStatus": "ENABLED",
            "sizeInfo": {"displayNetworkMembersCount": str(matched),
                         "searchNetworkMembersCount": str(matched)},
            "ingestedUserListInfo": {"uploadKeyTypes": ["CONTACT_ID"], "contactIdInfo": {
                "dataSourceType": "DATA_SOURCE_TYPE_FIRST_PARTY",
                "matchRatePercentage": rate}},
        }
        if ul.membership_duration:
            body["membershipDuration"] = ul.membership_duration
        return body

    @route("POST", r"/v1/accountTypes/GOOGLE_ADS/accounts/(\d+)/userLists")
    def create_user_list(self, req: Request) -> Response:
        account = req.match.group(1)
        if (denied := self._account(req, account)) is not None:
            return denied
        body = req.json() or {}
        name = (body.get("displayName") or "").strip()
        if not name:
            return BadRequest("REQUIRED_FIELD_MISSING", "display_name is required",
                              "user_list.display_name").response()
        with self.lock:
            if any(u.account == account and u.display_name == name for u in self.lists.values()):
                return error(409, "ALREADY_EXISTS", f"A user list named {name!r} exists")
            ul = UserList(account, next(self._ids), name, body.get("description", ""),
                          body.get("membershipDuration"))
            self.lists[ul.id] = ul
        return Response(200, self._user_list_json(ul))

    @route("GET", r"/v1/accountTypes/GOOGLE_ADS/accounts/(\d+)/userLists")
    def list_user_lists(self, req: Request) -> Response:
        account = req.match.group(1)
        if (denied := self._account(req, account)) is not None:
            return denied
        # the server may return fewer than asked: the client must follow nextPageToken
        size = min(int(req.arg("pageSize") or self.page_size), self.page_size)
        start = int(req.arg("pageToken") or 0)
        mine = [u for u in sorted(self.lists.values(), key=lambda u: u.id) if u.account == account]
        page = mine[start:start + size]
        body: dict[str, Any] = {"userLists": [self._user_list_json(u) for u in page]}
        if start + size < len(mine):
            body["nextPageToken"] = str(start + size)
        return Response(200, body)

    @route("GET", r"/v1/accountTypes/GOOGLE_ADS/accounts/(\d+)/userLists/(\d+)")
    def get_user_list(self, req: Request) -> Response:
        account, list_id = req.match.group(1), int(req.match.group(2))
        if (denied := self._account(req, account)) is not None:
            return denied
        ul = self.lists.get(list_id)
        if ul is None or ul.account != account:
            return error(404, "NOT_FOUND", f"user list {list_id} not found", "NOT_FOUND")
        return Response(200, self._user_list_json(ul))

    # ------------------------------------------------------------ IngestionService
    def _destination(self, req: Request, body: dict) -> tuple[UserList | None, Response | None]:
        dests = body.get("destinations") or []
        if not dests:
            return None, BadRequest("REQUIRED_FIELD_MISSING", "destinations is required",
                                    "destinations").response()
        if len(dests) > MAX_DESTINATIONS:
            return None, BadRequest("TOO_MANY_DESTINATIONS", "at most 10 destinations",
                                    "destinations").response()
        d = dests[0]  # crmsync sends one destination; the fake models one
        op = d.get("operatingAccount") or {}
        if op.get("accountType") not in GOOGLE_ADS:
            return None, BadRequest("INVALID_DESTINATION", "operating account type",
                                    "destinations[0].operating_account").response()
        account = str(op.get("accountId", ""))
        if (denied := self._account(req, account)) is not None:
            return None, denied
        login = d.get("loginAccount")
        if login and not self.accounts.get(str(login.get("accountId"))):
            return None, error(403, "PERMISSION_DENIED", "no access to the login account",
                               "PERMISSION_DENIED")
        try:
            ul = self.lists.get(int(d.get("productDestinationId", "")))
        except ValueError:
            ul = None
        if ul is None or ul.account != account:
            return None, BadRequest("INVALID_USER_LIST_ID", "user list not found",
                                    "destinations[0].product_destination_id").response()
        return ul, None

    def _member_key(self, i: int, member: dict) -> tuple[str, int]:
        """Validate one audience member; its canonical key and identifier count."""
        ids = ((member.get("userData") or {}).get("userIdentifiers")) or []
        where = f"audience_members[{i}].user_data.user_identifiers"
        if not ids:
            raise BadRequest("REQUIRED_FIELD_MISSING", "at least one identifier", where)
        if len(ids) > MAX_IDENTIFIERS:
            raise BadRequest("TOO_MANY_USER_IDENTIFIERS", "at most 10 identifiers", where)
        canon = []
        for j, ident in enumerate(ids):
            path = f"{where}[{j}]"
            if len(ident) != 1:
                raise BadRequest("INVALID_ARGUMENT", "exactly one identifier kind", path)
            ((kind, value),) = ident.items()
            if kind in ("emailAddress", "phoneNumber"):
                if not HEX64.match(str(value)):
                    raise BadRequest("INVALID_SHA256_FORMAT", f"{kind} is not SHA-256 hex", path)
                self._check_normalised(kind, str(value))
                canon.append({kind: str(value).lower()})
            elif kind == "address":
                addr = {k: value.get(k) for k in
                        ("givenName", "familyName", "regionCode", "postalCode")}
                if not all(addr.values()):
                    raise BadRequest("REQUIRED_FIELD_MISSING",
                                     "address needs given and family name, region and postal code",
                                     path)
                for k in ("givenName", "familyName"):
                    if not HEX64.match(addr[k]):
                        raise BadRequest("INVALID_SHA256_FORMAT", f"{k} is not SHA-256 hex", path)
                    addr[k] = addr[k].lower()
                    self._check_normalised(k, addr[k])
                if not REGION.match(addr["regionCode"]):
                    raise BadRequest("INVALID_FORMAT", "region code is ISO-3166-1 alpha-2", path)
                if HEX64.match(addr["postalCode"]) or (
                        addr["regionCode"] == "US"
                        and not re.match(r"^\d{5}(-\d{4})?$", addr["postalCode"])):
                    raise BadRequest("INVALID_POSTAL_CODE", "postal code is sent unhashed", path)
                canon.append({"address": addr})
            else:
                raise BadRequest("INVALID_ARGUMENT", f"unknown identifier {kind}", path)
        canon.sort(key=lambda c: json.dumps(c, sort_keys=True))
        return json.dumps(canon, sort_keys=True, separators=(",", ":")), len(ids)

    def _matches(self, identifiers: list[dict]) -> bool:
        return any(v in self.google_users for c in identifiers for k, v in c.items()
                   if k in ("emailAddress", "phoneNumber"))

    def _members(self, body: dict) -> list[tuple[str, int, dict]]:
        members = body.get("audienceMembers") or []
        if not members:
            raise BadRequest("REQUIRED_FIELD_MISSING", "audience_members is required",
                             "audience_members")
        if len(members) > MAX_MEMBERS:
            raise BadRequest("TOO_MANY_AUDIENCE_MEMBERS", "at most 10000 audience members",
                             "audience_members")
        if body.get("encoding") not in HEX_ENCODING:
            raise BadRequest("INVALID_ENUM_VALUE", "encoding must be HEX for these uploads",
                             "encoding")
        return [(*self._member_key(i, m), m) for i, m in enumerate(members)]

    def _record(self, dest: dict, kind: str, records: int, identifiers: int,
                errors: dict[str, int]) -> str:
        rid = str(uuid.uuid4())
        self.statuses[rid] = Status(dest, kind, records, identifiers, errors,
                                    self.processing_polls)
        return rid

    @route("POST", r"/v1/audienceMembers:ingest")
    def ingest(self, req: Request) -> Response:
        body = req.json() or {}
        if (quota := self._take_ingestion_quota()) is not None:
            return quota
        ul, bad = self._destination(req, body)
        if bad is not None:
            return bad
        assert ul is not None
        tos = (body.get("termsOfService") or {}).get("customerMatchTermsOfServiceStatus")
        if tos in ACCEPTED:
            self.terms_accepted.add(ul.account)
        elif ul.account not in self.terms_accepted:
            return error(400, "INVALID_ARGUMENT", "Customer Match terms of service not accepted",
                         "TERMS_AND_CONDITIONS_NOT_SIGNED")
        try:
            members = self._members(body)
        except BadRequest as exc:
            return exc.response()
        request_consent = body.get("consent") or {}
        errors: dict[str, int] = {}
        count = 0
        with self.lock:
            for key, n, m in members:
                consent = {**request_consent, **(m.get("consent") or {})}
                if any(consent.get(k) in DENIED for k in ("adUserData", "adPersonalization")):
                    # https://developers.google.com/data-manager/api/reference/rest/v1/ProcessingErrorReason
                    errors["PROCESSING_ERROR_REASON_DENIED_CONSENT"] = errors.get(
                        "PROCESSING_ERROR_REASON_DENIED_CONSENT", 0) + 1
                    continue
                ul.members.add(key)
                count += n
        rid = self._record(body["destinations"][0], "ingest", len(members), count, errors)
        return Response(200, {"requestId": rid})

    @route("POST", r"/v1/audienceMembers:remove")
    def remove(self, req: Request) -> Response:
        body = req.json() or {}
        if (quota := self._take_ingestion_quota()) is not None:
            return quota
        ul, bad = self._destination(req, body)
        if bad is not None:
            return bad
        assert ul is not None
        try:
            members = self._members(body)
        except BadRequest as exc:
            return exc.response()
        with self.lock:
            for key, _, _ in members:
                ul.members.discard(key)
        rid = self._record(body["destinations"][0], "remove", len(members),
                           sum(n for _, n, _ in members), {})
        return Response(200, {"requestId": rid})

    @route("GET", r"/v1/requestStatus:retrieve")
    def retrieve(self, req: Request) -> Response:
        rid = req.arg("requestId") or ""
        st = self.statuses.get(rid)
        if st is None:
            return error(404, "NOT_FOUND", f"request {rid} not found", "NOT_FOUND")
        if st.polls_left > 0:
            st.polls_left -= 1
            state = "PROCESSING"
        elif not st.errors:
            state = "SUCCESS"
        else:
            state = "FAILED" if sum(st.errors.values()) >= st.records else "PARTIAL_SUCCESS"
        entry: dict[str, Any] = {"destination": st.destination, "requestStatus": state}
        counts = {"recordCount": str(st.records), "userIdentifierCount": str(st.identifiers)}
        if st.kind == "ingest":
            entry["audienceMembersIngestionStatus"] = {"userDataIngestionStatus": counts}
        else:
            entry["audienceMembersRemovalStatus"] = {"userDataRemovalStatus": counts}
        if st.errors and state != "PROCESSING":
            entry["errorInfo"] = {"errorCounts": [{"recordCount": str(n), "reason": r}
                                                  for r, n in sorted(st.errors.items())]}
        return Response(200, {"requestStatusPerDestination": [entry]})


def service_account_file(fake: DataManagerFake, folder: Any,
                         email: str = "crmsync@test-project.iam.gserviceaccount.com") -> Any:
    """A service-account key file made now with a throwaway RSA key (the format of a key
    Google issues, https://cloud.google.com/iam/docs/keys-create-delete), whose ``token_uri``
    is the fake's token endpoint; the fake trusts its public key."""
    from pathlib import Path

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    fake.add_service_account(email, public)
    path = Path(folder) / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test-project",
        "private_key_id": uuid.uuid4().hex, "private_key": pem, "client_email": email,
        "client_id": "1234567890", "token_uri": fake.token_uri,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth"}))
    return path
