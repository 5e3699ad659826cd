"""A stateful fake of the Graph API's custom-audience endpoints, for facebook-business.

Documented behaviour it encodes (links next to each rule):

* ``GET/POST /{v}/act_{id}/customaudiences``: list (``filtering`` on name) and create a
  customer-list audience (``subtype=CUSTOM`` and ``customer_file_source`` are required).
  https://developers.facebook.com/docs/marketing-api/reference/ad-account/customaudiences/
* ``POST /{v}/{audience_id}/users`` adds, with ``payload={"schema", "data"}`` and an optional
  upload ``session={"session_id", "batch_seq", "last_batch_flag", "estimated_num_total"}``;
  at most 10,000 rows per call. ``method=DELETE`` in the body removes instead (the custom
  audiences guide, "Remove users"); ``DELETE /{audience_id}/users`` with the payload in the
  query string also works, within the URL length limit (URL_LIMIT, then HTTP 414).
  https://developers.facebook.com/docs/marketing-api/reference/custom-audience/users/
* Every value is a SHA-256 hex digest (64 lower-case hex chars) except EXTERN_ID; rows with an
  unhashed or unknown value are counted in ``num_invalid_entries`` (and kept in ``invalid``).
  With ``known`` set (schema key -> normalised values the test expects), a digest must be the
  hash of one of them: a normalisation slip then fails the test.
* Errors: code 100 subcode 1713230 for an audience that cannot be edited (operation_status 471;
  custom-audience users reference); (#2663) "Terms of service has not been accepted" on create
  (facebook-php-business-sdk#43, facebook-nodejs-business-sdk#26); throttling codes 17 (subcode
  2446079), 613 (subcode 1487742) and 80003, with ``X-Business-Use-Case-Usage``
  (https://developers.facebook.com/docs/marketing-api/overview/rate-limiting).
* ``min_size``: a removal that would take the audience below it is refused with "Audience Size
  too low: You cannot remove users from this audience because it will result in a low audience
  size." (quoted in grouparoo/grouparoo#1108; Meta's docs give no code for it, so the fake uses
  the generic code 100 and crmsync recognises the refusal by its title/message).
* ``GET /{v}/{audience_id}`` returns ``approximate_count_lower_bound`` / ``_upper_bound``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .server import FakeServer, Request, Response, route

HASHED_KEYS = {"EMAIL", "PHONE", "FN", "LN", "FI", "CT", "ST", "ZIP", "COUNTRY", "DOBY", "DOBM",
               "DOBD", "GEN", "MADID"}
SCHEMA_KEYS = HASHED_KEYS | {"EXTERN_ID"}
MAX_ROWS = 10_000
URL_LIMIT = 16_384  # bytes of path + query accepted before HTTP 414
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
V = r"/v\d+\.\d+"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def graph_error(code: int, message: str, subcode: int | None = None, status: int = 400,
                headers: dict[str, str] | None = None, **extra: Any) -> Response:
    err = {"message": message, "type": "OAuthException", "code": code,
           "fbtrace_id": "AfakeTrace", **extra}
    if subcode is not None:
        err["error_subcode"] = subcode
    return Response(status, {"error": err}, dict(headers or {}))


@dataclass
class Audience:
    id: str
    name: str
    customer_file_source: str
    description: str = ""
    members: set[tuple[tuple[str, str], ...]] = field(default_factory=set)
    editable: bool = True
    min_size: int = 0
    sessions: dict[int, int] = field(default_factory=dict)  # session_id -> last batch_seq
    closed_sessions: set[int] = field(default_factory=set)

    def info(self) -> dict[str, Any]:
        n = len(self.members)
        return {"id": self.id, "name": self.name, "subtype": "CUSTOM",
                "customer_file_source": self.customer_file_source,
                "description": self.description,
                "approximate_count_lower_bound": n, "approximate_count_upper_bound": n,
                "operation_status": {"code": 200 if self.editable else 471,
                                     "description": "Normal" if self.editable else "Flagged"}}


class FakeGraph(FakeServer):
    """Ad account ``act_<account>`` with its custom audiences."""

    def __init__(self, account: str = "act_1234", **kw: Any):
        super().__init__(**kw)
        self.account = account
        self.audiences: dict[str, Audience] = {}
        self.tos_accepted = True
        self.known: dict[str, set[str]] | None = None  # schema key -> digests allowed
        self.invalid: list[tuple[str, str]] = []  # (schema key, bad value)
        self._next_id = 23840000000000
        #: access tokens the fake accepts (None: any); another one is answered as Graph
        #: answers an expired or revoked token: HTTP 400, OAuthException code 190
        #: (https://developers.facebook.com/docs/graph-api/guides/error-handling)
        self.tokens: set[str] | None = None

    # ------------------------------------------------------------ test helpers
    def expect(self, key: str, normalised: Iterable[str]) -> None:
        """Only accept, for schema ``key``, digests of these normalised values."""
        self.known = self.known or {}
        self.known.setdefault(key, set()).update(sha(v) for v in normalised)

    def add_audience(self, name: str, rows: Iterable[dict[str, str]] = (), **kw: Any) -> Audience:
        self._next_id += 1
        aud = Audience(str(self._next_id), name, kw.pop("customer_file_source",
                                                       "USER_PROVIDED_ONLY"), **kw)
        aud.members.update(tuple(sorted(r.items())) for r in rows)
        self.audiences[aud.id] = aud
        return aud

    def by_name(self, name: str) -> Audience | None:
        return next((a for a in self.audiences.values() if a.name == name), None)

    def throttle(self, code: int = 613, subcode: int | None = 1487742, n: int = 1,
                 regain_minutes: int = 0, path: str | None = None) -> None:
        """The next ``n`` calls get a throttling error with the BUC usage header."""
        usage = {self.account.removeprefix("act_"): [{
            "type": "custom_audience", "call_count": 100, "total_cputime": 10,
            "total_time": 10, "estimated_time_to_regain_access": regain_minutes}]}
        resp = graph_error(code, "There have been too many calls", subcode,
                           headers={"X-Business-Use-Case-Usage": json.dumps(usage)})
        self.fail_next(n, status=resp.status, body=resp.body, headers=resp.headers, path=path)

    def _pick_fault(self, req: Request):  # the token is checked before any route
        if self.tokens is not None:
            token = req.arg("access_token")
            if token is None and req.body:
                token = req.form().get("access_token")
            if token not in self.tokens:
                from .server import Fault
                err = graph_error(190, "Error validating access token: The session has been "
                                  "invalidated because the user changed their password or "
                                  "Facebook has changed the session for security reasons.", 460)
                return Fault(status=err.status, body=err.body)
        return super()._pick_fault(req)

    # ------------------------------------------------------------ routes
    def _account_ok(self, req: Request) -> Response | None:
        if req.match.group(1) != self.account:
            return graph_error(100, "Unsupported get request.", 33)
        return None

    @route("GET", rf"{V}/(act_\d+)/customaudiences")
    def list_audiences(self, req: Request) -> Response:
        if (bad := self._account_ok(req)) is not None:
            return bad
        found = list(self.audiences.values())
        for f in json.loads(req.arg("filtering") or "[]"):
            if f.get("field") == "name" and f.get("operator") == "EQUAL":
                found = [a for a in found if a.name == f.get("value")]
        return Response(200, {"data": [{"id": a.id, "name": a.name} for a in found]})

    @route("POST", rf"{V}/(act_\d+)/customaudiences")
    def create_audience(self, req: Request) -> Response:
        if (bad := self._account_ok(req)) is not None:
            return bad
        if not self.tos_accepted:
            return graph_error(2663, "Terms of service has not been accepted. To accept, go to "
                               f"https://www.facebook.com/customaudiences/app/tos/?act="
                               f"{self.account.removeprefix('act_')}", status=403)
        form = req.form()
        if form.get("subtype") != "CUSTOM":
            return graph_error(100, "Invalid parameter: subtype")
        if not form.get("customer_file_source"):
            return graph_error(100, "(#100) Missing parameter(s): customer_file_source")
        aud = self.add_audience(form["name"], customer_file_source=form["customer_file_source"],
                                description=form.get("description", ""))
        return Response(200, {"id": aud.id})

    @route("GET", rf"{V}/(\d+)")
    def get_audience(self, req: Request) -> Response:
        aud = self.audiences.get(req.match.group(1))
        if aud is None:
            return graph_error(100, "Object does not exist", 33)
        wanted = (req.arg("fields") or "id").split(",")
        info = aud.info()
        return Response(200, {k: info[k] for k in ["id", *wanted] if k in info})

    @route("POST", rf"{V}/(\d+)/users")
    def post_users(self, req: Request) -> Response:
        form = req.form()
        return self._users(req, form, remove=form.get("method", "").upper() == "DELETE")

    @route("DELETE", rf"{V}/(\d+)/users")
    def delete_users(self, req: Request) -> Response:
        url_len = len(req.path) + sum(len(k) + len(v) for k, vs in req.query.items() for v in vs)
        if url_len > URL_LIMIT:
            return Response(414, "URI Too Long")
        return self._users(req, {k: v[0] for k, v in req.query.items()}, remove=True)

    @route("POST", rf"{V}/(\d+)/usersreplace")
    def users_replace(self, req: Request) -> Response:  # never to be used by crmsync
        return graph_error(100, "fake: usersreplace wipes members crmsync did not add")

    # ------------------------------------------------------------ users add/remove
    def _users(self, req: Request, form: dict[str, str], remove: bool) -> Response:
        with self.lock:
            return self._users_locked(req, form, remove)

    def _users_locked(self, req: Request, form: dict[str, str], remove: bool) -> Response:
        aud = self.audiences.get(req.match.group(1))
        if aud is None:
            return graph_error(100, "Unsupported post request.", 33)
        if not aud.editable:
            return graph_error(100, "Invalid parameter", 1713230,
                               error_user_title="Audience Upload Blocked",
                               error_user_msg="Before updating user memberships, you must "
                               "resolve integrity restrictions on this Data File Custom "
                               "Audience. Go to Audience Manager to appeal the restrictions "
                               "or create a new audience with updated data")
        try:
            payload = json.loads(form["payload"])
            schema, data = payload["schema"], payload["data"]
        except (KeyError, ValueError, TypeError):
            return graph_error(100, "(#100) param payload must be an object with schema and data")
        schema = [schema] if isinstance(schema, str) else schema
        if not schema or any(k not in SCHEMA_KEYS for k in schema):
            return graph_error(100, f"(#100) Invalid schema: {schema}")
        if len(data) > MAX_ROWS:
            return graph_error(100, f"(#100) Too many users: at most {MAX_ROWS} per request")
        if (err := self._session(aud, form.get("session"))) is not None:
            return err
        rows, invalid = self._rows(schema, data)
        if remove:
            left = len(aud.members - set(rows))
            if aud.min_size and left < aud.min_size:
                return graph_error(100, "Audience Size too low: You cannot remove users from "
                                   "this audience because it will result in a low audience size.",
                                   error_user_title="Audience Size too low")
            aud.members.difference_update(rows)
        else:
            aud.members.update(rows)
        sid = json.loads(form["session"])["session_id"] if form.get("session") else None
        return Response(200, {"audience_id": aud.id, "session_id": sid,
                              "num_received": len(data), "num_invalid_entries": invalid,
                              "invalid_entry_samples": {}})

    def _session(self, aud: Audience, raw: str | None) -> Response | None:
        if not raw:
            return None
        s = json.loads(raw)
        sid, seq = int(s["session_id"]), int(s["batch_seq"])
        if sid in aud.closed_sessions:
            return graph_error(100, "(#100) upload session already finished")
        if seq != aud.sessions.get(sid, 0) + 1:
            return graph_error(100, f"(#100) batch_seq {seq} out of order")
        aud.sessions[sid] = seq
        if s.get("last_batch_flag"):
            aud.closed_sessions.add(sid)
        return None

    def _rows(self, schema: list[str], data: list[list[str]]) -> tuple[list[tuple], int]:
        rows, invalid = [], 0
        for row in data:
            if len(row) != len(schema) or not all(self._valid(k, v) for k, v in zip(schema, row, strict=True)):
                invalid += 1
                continue
            rows.append(tuple(sorted((k, v) for k, v in zip(schema, row, strict=True) if v)))
        return rows, invalid

    def _valid(self, key: str, value: str) -> bool:
        if value == "" or key == "EXTERN_ID":
            return True
        ok = bool(_HEX64.match(value)) and (
            self.known is None or key not in self.known or value in self.known[key])
        if not ok:
            self.invalid.append((key, value))
        return ok
