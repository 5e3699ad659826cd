"""Meta Custom Audiences (customer lists) through facebook-business, an optional extra.

``open`` finds the audience by name in the ad account or creates it; ``write`` adds with a
POST to ``/{audience_id}/users`` and removes with the same POST carrying ``method=DELETE``, the
payload in the body (the SDK's ``remove_users`` puts the whole payload in a DELETE URL, far past
any server's limit at 10,000 rows); each write is one upload session of at most 10,000 rows a
call. ``usersreplace`` is never used: it would wipe members crmsync did not add.
https://developers.facebook.com/docs/marketing-api/audiences/guides/custom-audiences
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from ..sync.errors import DestinationStopped, Problem, Reject
from ..sync.mapping.model import ConnectionConfig
from . import identity as ident
from .base import BatchResult, Change, Destination, Op
from .retry import Action, Applied, Calls, Outcome, RetryPolicy, retry_after_seconds

log = logging.getLogger("crmsync.meta")

MAX_ROWS = 10_000  # rows per /users call (custom-audience users reference)

#: identifier name -> Meta multi-key schema key(s); date_of_birth spans three columns
SCHEMA: dict[str, tuple[str, ...]] = {
    "email": ("EMAIL",), "phone": ("PHONE",), "first_name": ("FN",), "last_name": ("LN",),
    "city": ("CT",), "state": ("ST",), "zip": ("ZIP",), "country": ("COUNTRY",),
    "date_of_birth": ("DOBY", "DOBM", "DOBD"), "gender": ("GEN",), "external_id": ("EXTERN_ID",),
}
#: identifiers that can match a person on their own; names need each other
STRONG = ("email", "phone", "external_id")

# Throttling (https://developers.facebook.com/docs/marketing-api/overview/rate-limiting and the
# error reference): 4 app, 17 user (subcode 2446079), 32 page, 613 ad account (subcode 1487742),
# 80003 custom-audience business-use-case limit.
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80003})
TRANSIENT_CODES = frozenset({1, 2})  # "unknown error" / "service temporarily unavailable"
TOS_CODES = frozenset({2655, 2663})  # "Terms of service has not been accepted"
AUTH_CODES = frozenset({102, 190})  # session / access token invalid or expired
PERMISSION_CODES = frozenset({10, 200, 294})
CANNOT_EDIT = (100, 1713230)  # audience flagged (operation_status 471): users reference
MISSING_OBJECT = (100, 33)  # "Unsupported post request. Object ... does not exist" (error reference)
_MIN_SIZE = re.compile(r"audience size too low|low audience size", re.I)


class MetaConnection(ConnectionConfig):
    """``type: meta``: a system-user access token and the ad account."""

    access_token: SecretStr
    ad_account_id: str
    app_secret: SecretStr | None = None
    api_version: str | None = None

    @property
    def account(self) -> str:
        a = str(self.ad_account_id).strip()
        return a if a.startswith("act_") else f"act_{a}"


class CustomAudienceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audience: str
    customer_file_source: Literal["USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY",
                                  "BOTH_USER_AND_PARTNER_PROVIDED"] = "USER_PROVIDED_ONLY"
    description: str | None = None


def is_min_size_refusal(exc: BaseException) -> bool:
    """A removal refused because the audience would fall below its minimum size."""
    body = getattr(exc, "body", lambda: None)()
    err = body.get("error", {}) if isinstance(body, dict) else {}
    text = f"{err.get('message', '')} {err.get('error_user_title', '')}"
    return bool(_MIN_SIZE.search(text))


def _regain_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Retry-After, else the longest ``estimated_time_to_regain_access`` (minutes) of the
    business-use-case usage header."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    if (ra := retry_after_seconds(headers.get("retry-after"))) is not None:
        return ra
    try:
        usage = json.loads(headers.get("x-business-use-case-usage") or "{}")
        mins = [u.get("estimated_time_to_regain_access", 0)
                for uses in usage.values() for u in uses]
    except (ValueError, AttributeError, TypeError):
        return None
    return float(max(mins)) * 60 if mins else None


class _RedactToken(logging.Filter):
    """The SDK sends the token in the query string, which urllib3 logs at DEBUG: mask it."""

    _SECRET = re.compile(r"((?:access_token|appsecret_proof)=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "access_token=" in msg or "appsecret_proof=" in msg:
            record.msg, record.args = self._SECRET.sub(r"\1***", msg), None
        return True


_REDACT = _RedactToken()


def _checked(resp: Any) -> dict[str, Any]:
    """The SDK counts any non-JSON body as success (a proxy's 502 page, a 414): only a 2xx
    JSON object is."""
    from facebook_business.exceptions import FacebookRequestError

    body = resp.json()
    if not 200 <= resp.status() < 300 or not isinstance(body, dict):
        raise FacebookRequestError("Call was not successful", {}, resp.status(), resp.headers(),
                                   json.dumps(body) if isinstance(body, dict) else None)
    return body


class CustomAudienceDestination(Destination):
    """``type: meta_custom_audience``: a customer-list Custom Audience kept current."""

    Options = CustomAudienceOptions
    target_option = "audience"
    connection_types = ("meta",)
    max_batch = MAX_ROWS
    value = "identity"
    hashed = True
    policy = RetryPolicy()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._api: Any = None
        self.audience_id: str | None = None
        self._wrote = False

    @classmethod
    def check(cls, config: Any, options: BaseModel) -> list[Problem]:
        """Meta's rules, for ``validate``: identifiers it takes, at least one that matches."""
        ids = list(config.identifiers)
        out = [Problem(f"identifiers[{j}]", f"Meta Custom Audiences do not take '{n}'",
                       f"use some of: {', '.join(SCHEMA)}")
               for j, n in enumerate(ids) if n not in SCHEMA]
        if not ids:
            out.append(Problem("identifiers", "a Meta customer list needs identifiers",
                               "e.g. identifiers: [email, phone]"))
        elif not (set(ids) & set(STRONG) or {"first_name", "last_name"} <= set(ids)):
            out.append(Problem("identifiers", f"{', '.join(ids)} cannot match anyone on its "
                               "own on Meta", "add email, phone or external_id (or both "
                               "first_name and last_name)"))
        return out

    # ------------------------------------------------------------ encoding
    @property
    def schema(self) -> list[str]:
        return [k for name in self.config.identifiers for k in SCHEMA[name]]

    def encode(self, identity: Mapping[str, str | None]) -> str:
        """JSON row of normalised SHA-256 values in schema order ("" when missing)."""
        values: dict[str, list[str]] = {}
        reasons: list[str] = []
        for name in self.config.identifiers:
            raw = identity.get(name)
            if raw is None or not str(raw).strip():
                continue
            try:
                values[name] = self._encode_one(name, str(raw), identity)
            except Reject as exc:
                reasons.append(exc.reason)
        strong = any(n in values for n in STRONG)
        names = "first_name" in values and "last_name" in values
        if not (strong or names):
            why = "; ".join(reasons) or "none of " + ", ".join(self.config.identifiers) + " is set"
            raise Reject(f"no valid identifier: {why}")
        row = [v for name in self.config.identifiers
               for v in values.get(name, [""] * len(SCHEMA[name]))]
        return json.dumps(row, separators=(",", ":"))

    @staticmethod
    def _encode_one(name: str, raw: str, identity: Mapping[str, str | None]) -> list[str]:
        if name == "external_id":
            return [ident.meta_extern_id(raw)]
        if ident.is_sha256(raw) and name != "date_of_birth":
            return [raw.strip().lower()]
        country = identity.get("country")
        norm: dict[str, Callable[[], list[str]]] = {
            "email": lambda: [ident.meta_email(raw)],
            "phone": lambda: [ident.meta_phone(raw, country, identity.get("phone_region"))],
            "first_name": lambda: [ident.meta_name(raw, "first name")],
            "last_name": lambda: [ident.meta_name(raw, "last name")],
            "city": lambda: [ident.meta_city(raw)],
            "state": lambda: [ident.meta_state(raw, country)],
            "zip": lambda: [ident.meta_zip(raw, country)],
            "country": lambda: [ident.meta_country(raw)],
            "date_of_birth": lambda: list(ident.meta_dob(raw)),
            "gender": lambda: [ident.meta_gender(raw)],
        }
        return [ident.hash_normalised(v) for v in norm[name]()]

    # ------------------------------------------------------------ HTTP
    def _client(self) -> Any:
        if self._api is None:
            from facebook_business.api import FacebookAdsApi
            from facebook_business.session import FacebookSession

            conn: MetaConnection = self.connection  # type: ignore[assignment]
            for name in ("urllib3.connectionpool", "requests"):
                if _REDACT not in logging.getLogger(name).filters:
                    logging.getLogger(name).addFilter(_REDACT)
            session = FacebookSession(
                access_token=conn.access_token.get_secret_value(),
                app_secret=conn.app_secret.get_secret_value() if conn.app_secret else None,
                timeout=120)
            if conn.base_url:
                session.GRAPH = conn.base_url.rstrip("/")
            # no crash reporter, no default-api globals: one client per destination
            self._api = FacebookAdsApi(session, conn.api_version)  # None: the SDK's own
        return self._api

    def _call(self, method: str, path: tuple[str, ...],
              params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One Graph call through the retry loop; every attempt is counted."""
        from facebook_business.exceptions import FacebookRequestError

        calls = Calls(self.ctx, self._classify, self.policy,
                      throttle=lambda e: isinstance(e, FacebookRequestError)
                      and e.api_error_code() in THROTTLE_CODES)
        return calls(lambda: _checked(self._client().call(method, path, params=params or {})))

    def _classify(self, exc: BaseException) -> Outcome:
        """The one table: Graph error code/subcode, HTTP status or exception -> action."""
        import requests
        from facebook_business.exceptions import FacebookRequestError

        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return Outcome(Action.RETRY, f"network error ({type(exc).__name__})")
        if not isinstance(exc, FacebookRequestError):
            return Outcome(Action.FAIL, type(exc).__name__)
        code, sub, status = exc.api_error_code(), exc.api_error_subcode(), exc.http_status()
        what = (f"HTTP {status}, Meta error {code}" + (f"/{sub}" if sub else "")
                + f": {exc.api_error_message()}")
        if code in THROTTLE_CODES:  # throttled: the call was not applied
            return Outcome(Action.RETRY, what, _regain_seconds(exc.http_headers()), Applied.NO)
        if code in TRANSIENT_CODES or exc.api_transient_error() or (status or 0) >= 500:
            return Outcome(Action.RETRY, what, retry_after_seconds(
                (exc.http_headers() or {}).get("Retry-After")))
        if (code, sub) == CANNOT_EDIT:
            return Outcome(Action.STOP, f"audience '{self.options.audience}' cannot be edited "
                           "(flagged by Meta): in Ads Manager > Audiences, resolve or appeal its "
                           f"restrictions, or create a new audience name in the mapping ({what})")
        if (code, sub) == MISSING_OBJECT:
            return Outcome(Action.STOP, f"audience '{self.options.audience}' no longer exists or "
                           "the token cannot reach it: check the system user is an admin of the "
                           f"ad account, or run `crmsync resync {self.name}` ({what})")
        if code in TOS_CODES:
            acct = self.connection.account.removeprefix("act_")  # type: ignore[union-attr]
            return Outcome(Action.STOP, "the Custom Audience terms are not accepted for ad "
                           f"account act_{acct}: an admin must accept them at https://www.facebook"
                           f".com/customaudiences/app/tos/?act={acct}, then re-run")
        if code in AUTH_CODES:
            var = self.ctx.env_var.get("access_token", "the access_token")
            return Outcome(Action.STOP, f"Meta rejected the access token: set ${{{var}}} to a "
                           f"valid system-user token with ads_management ({what})")
        if code in PERMISSION_CODES or status in (401, 403):
            return Outcome(Action.STOP, f"the token lacks permission on "
                           f"{self.connection.account}: add the system user to the ad account "  # type: ignore[union-attr]
                           f"with ads_management ({what})")
        return Outcome(Action.REJECT, what)

    # ------------------------------------------------------------ lifecycle
    def open(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        name = self.options.audience
        if state.get("audience_id") and state.get("audience") == name:
            self.audience_id = state["audience_id"]
            return state
        acct = self.connection.account  # type: ignore[union-attr]
        flt = [{"field": "name", "operator": "EQUAL", "value": name}]
        found = self._call("GET", (acct, "customaudiences"),
                           {"fields": "id,name", "filtering": flt}).get("data", [])
        found = [a for a in found if a.get("name") == name]
        if found:
            self.audience_id = str(found[0]["id"])
        else:
            params = {"name": name, "subtype": "CUSTOM",
                      "customer_file_source": self.options.customer_file_source}
            if self.options.description:
                params["description"] = self.options.description
            self.audience_id = str(self._call("POST", (acct, "customaudiences"), params)["id"])
            log.info("%s: created audience %s", self.name, self.audience_id)
        return {"audience_id": self.audience_id, "audience": name}

    def write(self, op: Op, changes: list[Change]) -> BatchResult:
        self._wrote = True
        if op is Op.REMOVE:
            return self._send(changes, [c.previous for c in changes], remove=True)
        if op is Op.UPDATE:
            gone = self._send(changes, [c.previous for c in changes], remove=True)
            moved = [c for c in changes if c.key in gone.done]
            res = self._send(moved, [c.value for c in moved], remove=False)
            res.rejected.update(gone.rejected)
            res.deferred.update(gone.deferred)
            return res
        return self._send(changes, [c.value for c in changes], remove=False)

    def _send(self, changes: list[Change], values: list[str | None], *,
              remove: bool) -> BatchResult:
        """One upload session: rows in chunks of at most 10,000, in order."""
        result = BatchResult()
        schema = self.schema
        rows: list[tuple[Change, list[str]]] = []
        for c, v in zip(changes, values, strict=True):
            row = json.loads(v) if v else None
            if not isinstance(row, list) or len(row) != len(schema):
                result.rejected[c.key] = ("stored identifiers do not match the destination's "
                                          "identifiers; run `crmsync resync` for it")
                continue
            rows.append((c, row))
        if not rows:
            return result
        chunks = [rows[i:i + MAX_ROWS] for i in range(0, len(rows), MAX_ROWS)]
        session_id = random.getrandbits(63)
        for seq, chunk in enumerate(chunks, start=1):
            params: dict[str, Any] = {
                "payload": {"schema": schema, "data": [r for _, r in chunk]},
                "session": {"session_id": session_id, "batch_seq": seq,
                            "last_batch_flag": seq == len(chunks),
                            "estimated_num_total": len(rows)}}
            if remove:
                params["method"] = "DELETE"
            keys = [c.key for c, _ in chunk]
            try:
                body = self._call("POST", (self.audience_id, "users"), params)
            except DestinationStopped:
                raise
            except Exception as exc:
                self._refused(exc, keys, remove, result)
                continue
            result.done.update(dict.fromkeys(keys))
            log.info("%s: %s %d rows (%s invalid) in session %d batch %d", self.name,
                     "removed" if remove else "added", len(keys),
                     body.get("num_invalid_entries", 0), session_id, seq)
        return result

    def _refused(self, exc: BaseException, keys: list[str], remove: bool,
                 result: BatchResult) -> None:
        from facebook_business.exceptions import FacebookRequestError

        if not isinstance(exc, FacebookRequestError):
            raise exc
        if remove and is_min_size_refusal(exc):
            reason = ("Meta refused the removal: the audience would fall below its minimum "
                      "size; retried next run")
            result.deferred.update(dict.fromkeys(keys, reason))
            log.warning("%s: %d removals deferred (audience minimum size)", self.name, len(keys))
            return
        # Meta counts invalid rows inside a success (num_invalid_entries): a refused call is
        # a request problem, not its rows' (they are sent again on the next run)
        raise DestinationStopped(f"Meta refused a request to audience "
                                 f"'{self.options.audience}': {self._classify(exc).reason}",
                                 applied=False)

    def readback(self) -> dict[str, Any] | None:
        """The audience's own reported size range (Meta updates it within 24 h). Only after a
        run that wrote something: a run with nothing to change makes no call at all."""
        if not self.audience_id or not self._wrote:
            return None
        fields = "approximate_count_lower_bound,approximate_count_upper_bound,operation_status"
        body = self._call("GET", (self.audience_id,), {"fields": fields})
        return {k: body.get(k) for k in ("approximate_count_lower_bound",
                                         "approximate_count_upper_bound", "operation_status")}

    def close(self) -> None:
        if self._api is not None:
            self._api._session.requests.close()
            self._api = None
