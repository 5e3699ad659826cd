"""A stateful fake of the HubSpot CRM API, served over HTTP on loopback for the real SDK.

State: contacts (with properties, archived flag, merges), contact property definitions, lists v3
and their memberships. Limits: the rolling 10-second window and the daily allowance with
HubSpot's 429 body and ``X-HubSpot-RateLimit-*`` headers, the search rate, search's 10,000
result cap and 200 page size, 100 inputs per batch call. Auth: bearer tokens, which can expire.
Faults (5xx, latency, dropped connections) come from ``FakeServer``.

Docs encoded here:
- usage guidelines and 429 body (policyName DAILY / TEN_SECONDLY_ROLLING, rate-limit headers):
  https://developers.hubspot.com/docs/guides/apps/api-usage/usage-details
  (429 body example quoted in https://community.hubspot.com/t5/APIs-Integrations/Hubspot-User-experience/m-p/511719)
- search (limit <= 200, 10,000 results per query, paging past it is a 400, ~5 req/s):
  https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm
- contacts list / batch update (100 inputs; "values can be cleared by passing an empty string"):
  https://developers.hubspot.com/docs/api-reference/2026-03/crm/objects/contacts/batch/update-contacts.md
- lists v3 (MANUAL lists, add-and-remove returning recordsIdsAdded / recordIdsRemoved /
  recordIdsMissing, memberships page limit 250): HubSpot/HubSpot-public-api-spec-collection
  PublicApiSpecs/CRM/Lists/Rollouts/144891/v3/lists.json
"""

from __future__ import annotations

import bisect
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .server import FakeServer, Request, Response, route

SEARCH_CAP = 10_000
SEARCH_PAGE_MAX = 200
LIST_PAGE_MAX = 100
MEMBERSHIP_PAGE_MAX = 250
BATCH_MAX = 100
#: add-and-remove: HubSpot documents no per-call maximum; the one bound its lists docs state is
#: 100,000 memberships (add-from source lists, https://developers.hubspot.com/docs/api-reference/
#: 2026-03/crm/lists/memberships/add-to-list-from-source-list): the fake refuses more per call
MEMBERSHIP_CHANGE_MAX = 100_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _error(status: int, message: str, category: str, **extra: Any) -> Response:
    body = {"status": "error", "message": message, "category": category,
            "correlationId": str(uuid.uuid4()), "context": {}, "links": {}, "errors": []}
    body.update(extra)
    return Response(status, body)


def hs_route(method: str, pattern: str, *, search: bool = False) -> Callable:
    """A route behind HubSpot's gate: bearer auth, then the rate limits."""

    def wrap(fn: Callable) -> Callable:
        def gated(self: FakeHubSpot, req: Request) -> Response:
            return self._gate(req, search) or fn(self, req)
        gated.__name__ = fn.__name__
        return route(method, pattern)(gated)
    return wrap


class FakeHubSpot(FakeServer):
    """Fake HubSpot. ``rate_limit`` requests per ``window`` seconds (100 / 10 s: Free and
    Starter), ``search_rate`` searches per second, ``daily_limit`` requests a day."""

    def __init__(self, *, token: str = "pat-test", rate_limit: int = 100, window: float = 10.0,
                 search_rate: float = 5.0, daily_limit: int = 250_000,
                 search_window: float = 1.0, **kw: Any):
        super().__init__(**kw)
        self.tokens = {token}
        self.expired: set[str] = set()
        self.rate_limit, self.window, self.search_rate = rate_limit, window, search_rate
        self.search_window = search_window  # benchmarks scale it with ``window``
        self._version = 0  # bumped on every contact change: keys search pages to a snapshot
        self._search_cache: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._keys: tuple[int, list[str]] = (-1, [])
        self.daily_limit, self.daily_used = daily_limit, 0
        self._recent: deque[float] = deque()
        self._recent_search: deque[float] = deque()
        self.throttled = 0  # 429s answered by the limiter
        self.contacts: dict[str, dict[str, Any]] = {}
        self.properties: dict[str, dict[str, Any]] = {}
        self.lists: dict[str, dict[str, Any]] = {}
        self._next_id = 1
        self._next_list = 1
        self.clock_ms = 1_767_225_600_000  # 2026-01-01T00:00:00Z; tick() moves it
        for name, typ, field in (("email", "string", "text"), ("firstname", "string", "text"),
                                 ("lastname", "string", "text"),
                                 ("lastmodifieddate", "datetime", "date"),
                                 ("createdate", "datetime", "date"),
                                 ("hs_object_id", "number", "number"),
                                 ("hs_merged_object_ids", "enumeration", "checkbox")):
            self.define_property(name, typ, field)

    # ------------------------------------------------------------ test helpers
    def tick(self, ms: int = 1000) -> None:
        self.clock_ms += ms

    def define_property(self, name: str, type: str = "string", field_type: str = "text",
                        options: list[str] | None = None, group: str = "contactinformation") -> None:
        self.properties[name] = {
            "name": name, "label": name, "type": type, "fieldType": field_type,
            "groupName": group, "description": "", "hidden": False, "formField": False,
            "options": [{"label": o, "value": o, "hidden": False, "displayOrder": i}
                        for i, o in enumerate(options or [])],
        }

    def add_contact(self, props: dict[str, Any] | None = None, *, at: int | None = None) -> str:
        cid = str(self._next_id)
        self._next_id += 1
        self._version += 1
        ms = self.clock_ms if at is None else at
        self.contacts[cid] = {"id": cid, "archived": False, "created": ms, "modified": ms,
                              "props": {k: (None if v is None else str(v))
                                        for k, v in (props or {}).items()}}
        return cid

    def update_contact(self, cid: str, props: dict[str, Any], *, at: int | None = None) -> None:
        self._version += 1
        c = self.contacts[cid]
        c["props"].update({k: (None if v is None else str(v)) for k, v in props.items()})
        c["modified"] = self.clock_ms if at is None else at

    def archive_contact(self, cid: str) -> None:
        """Delete (archive) a contact: it leaves lists and shows in archived=true listings."""
        self._version += 1
        self.contacts[cid]["archived"] = True
        self.contacts[cid]["modified"] = self.clock_ms
        for lst in self.lists.values():
            lst["members"].pop(cid, None)

    def merge_contacts(self, primary: str, merged: str) -> None:
        """Merge ``merged`` into ``primary``: the merged id disappears (not archived) and
        is recorded in the primary's ``hs_merged_object_ids``."""
        self._version += 1
        gone = self.contacts.pop(merged)
        for lst in self.lists.values():
            lst["members"].pop(merged, None)
        p = self.contacts[primary]
        ids = [i for i in (p["props"].get("hs_merged_object_ids") or "").split(";") if i]
        p["props"]["hs_merged_object_ids"] = ";".join([*ids, merged, *[
            i for i in (gone["props"].get("hs_merged_object_ids") or "").split(";") if i]])
        p["modified"] = self.clock_ms

    def expire_token(self, token: str | None = None) -> None:
        for t in [token] if token else list(self.tokens):
            self.tokens.discard(t)
            self.expired.add(t)

    def list_named(self, name: str) -> dict[str, Any] | None:
        return next((x for x in self.lists.values() if x["name"].lower() == name.lower()), None)

    def members(self, name: str) -> set[str]:
        lst = self.list_named(name)
        return set(lst["members"]) if lst else set()

    # ------------------------------------------------------------ gate
    def _headers(self, remaining: int, interval_ms: int) -> dict[str, str]:
        return {"X-HubSpot-RateLimit-Max": str(self.rate_limit),
                "X-HubSpot-RateLimit-Remaining": str(max(0, remaining)),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(interval_ms),
                "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self.daily_used))}

    def _gate(self, req: Request, search: bool) -> Response | None:
        auth = req.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        if token in self.expired:
            return _error(401, "The OAuth token used to make this call expired.",
                          "EXPIRED_AUTHENTICATION")
        if token not in self.tokens:
            return _error(401, "Authentication credentials not found.", "INVALID_AUTHENTICATION")
        with self.lock:
            if self.daily_used >= self.daily_limit:
                self.throttled += 1
                return self._limited("DAILY", "You have reached your daily limit.",
                                     self._headers(0, 86_400_000))
            now = time.monotonic()
            recent, limit, window = ((self._recent_search, max(1, int(self.search_rate)),
                                      self.search_window)
                                     if search else (self._recent, self.rate_limit, self.window))
            while recent and recent[0] <= now - window:
                recent.popleft()
            if len(recent) >= limit:
                self.throttled += 1
                policy = "SECONDLY" if search else "TEN_SECONDLY_ROLLING"
                headers = self._headers(0, int(window * 1000))
                # when the oldest call leaves the window (whole seconds, at least 1)
                headers["Retry-After"] = str(max(1, math.ceil(recent[0] + window - now)))
                return self._limited(policy, "You have reached your secondly limit.", headers)
            recent.append(now)
            self.daily_used += 1
            self._last_headers = self._headers(limit - len(recent), int(window * 1000))
        return None

    def _limited(self, policy: str, message: str, headers: dict[str, str]) -> Response:
        # https://developers.hubspot.com/docs/guides/apps/api-usage/usage-details (429 body)
        body = {"status": "error", "message": message, "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()), "policyName": policy,
                "requestId": str(uuid.uuid4())}
        return Response(429, body, headers)

    def _ok(self, body: Any, status: int = 200) -> Response:
        return Response(status, body, dict(getattr(self, "_last_headers", {})))

    # ------------------------------------------------------------ contacts
    def _public(self, c: dict[str, Any], props: list[str] | None) -> dict[str, Any]:
        names = props if props else ["email", "firstname", "lastname"]
        out = {n: c["props"].get(n) for n in names}
        out["hs_object_id"] = c["id"]
        out["lastmodifieddate"] = iso(c["modified"])
        out["createdate"] = iso(c["created"])
        if "hs_merged_object_ids" in names:
            out["hs_merged_object_ids"] = c["props"].get("hs_merged_object_ids")
        return {"id": c["id"], "properties": out, "createdAt": iso(c["created"]),
                "updatedAt": iso(c["modified"]), "archived": c["archived"]}

    @staticmethod
    def _prop_names(req: Request) -> list[str]:
        out: list[str] = []
        for v in req.query.get("properties", []):
            out += [p for p in v.split(",") if p]
        return out

    def _ids_after(self, after: int) -> list[str]:
        """Contact ids above ``after``; the dict keeps insertion order, which is id order."""
        if self._keys[0] != self._version:
            self._keys = (self._version, list(self.contacts))
        keys = self._keys[1]
        return keys[bisect.bisect_right(keys, after, key=int):]

    @hs_route("GET", r"/crm/v3/objects/contacts")
    def list_contacts(self, req: Request) -> Response:
        """Paged by id, at most 100 a page, no total cap; ``archived=true`` lists deleted ones."""
        limit = int(req.arg("limit", "10"))
        if limit > LIST_PAGE_MAX:
            limit = LIST_PAGE_MAX  # the API clamps list page sizes to 100
        archived = (req.arg("archived", "false") or "false").lower() == "true"
        after = int(req.arg("after") or 0)
        page, more = [], False
        for cid in self._ids_after(after):  # ids are issued in increasing order
            c = self.contacts.get(cid)
            if c is None or c["archived"] != archived:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(c)
        props = self._prop_names(req)
        body: dict[str, Any] = {"results": [self._public(c, props) for c in page]}
        if more:
            body["paging"] = {"next": {"after": page[-1]["id"], "link": ""}}
        return self._ok(body)

    @hs_route("POST", r"/crm/v3/objects/contacts/search", search=True)
    def search(self, req: Request) -> Response:
        q = req.json() or {}
        limit = int(q.get("limit") or 10)
        after = int(q.get("after") or 0)
        if limit > SEARCH_PAGE_MAX:
            return _error(400, f"limit must be at most {SEARCH_PAGE_MAX}", "VALIDATION_ERROR")
        if after + limit > SEARCH_CAP:
            # paging past the 10,000th result is refused
            return _error(400, "The 'after' and 'limit' together must be at most 10000.",
                          "VALIDATION_ERROR")
        # one query's pages share its result while no contact changes (HubSpot's index)
        sig = json.dumps([q.get("filterGroups"), q.get("sorts")], sort_keys=True)
        cached = self._search_cache.get(sig)
        if cached is not None and cached[0] == self._version:
            rows = cached[1]
        else:
            rows = [c for c in self.contacts.values() if not c["archived"]
                    and self._matches(c, q.get("filterGroups") or [])]
            for s in reversed(q.get("sorts") or [{"propertyName": "hs_object_id"}]):
                rows.sort(key=lambda c, n=s["propertyName"]: self._sort_value(c, n),
                          reverse=s.get("direction", "ASCENDING") == "DESCENDING")
            self._search_cache = {sig: (self._version, rows)}
        page = rows[after:after + limit]
        body: dict[str, Any] = {"total": len(rows),
                                "results": [self._public(c, q.get("properties")) for c in page]}
        if after + limit < len(rows):
            body["paging"] = {"next": {"after": str(after + limit), "link": ""}}
        return self._ok(body)

    @staticmethod
    def _sort_value(c: dict[str, Any], name: str) -> Any:
        if name == "hs_object_id":
            return int(c["id"])
        if name in ("lastmodifieddate", "hs_lastmodifieddate"):
            return c["modified"]
        return c["props"].get(name) or ""

    def _matches(self, c: dict[str, Any], groups: list[dict[str, Any]]) -> bool:
        if not groups:
            return True
        return any(all(self._holds(c, f) for f in g.get("filters", [])) for g in groups)

    def _holds(self, c: dict[str, Any], f: dict[str, Any]) -> bool:
        name, op = f["propertyName"], f["operator"]
        left = self._sort_value(c, name)
        right: Any = f.get("value")
        if name in ("hs_object_id", "lastmodifieddate", "hs_lastmodifieddate"):
            right = int(right)
        return {"EQ": left == right, "NEQ": left != right, "GT": left > right,
                "GTE": left >= right, "LT": left < right, "LTE": left <= right}[op]

    @hs_route("POST", r"/crm/v3/objects/contacts/batch/update")
    def batch_update(self, req: Request) -> Response:
        inputs = (req.json() or {}).get("inputs") or []
        if len(inputs) > BATCH_MAX:
            return _error(400, f"Batch size must be at most {BATCH_MAX}", "VALIDATION_ERROR")
        bad = self._invalid_values(inputs)
        if bad:
            return _error(400, "Property values were not valid", "VALIDATION_ERROR",
                          errors=[{"message": msg, "code": "INVALID_OPTION",
                                   "context": {"id": [cid]}} for cid, msg in bad])
        self._version += 1
        started = iso(self.clock_ms)
        done, missing = [], []
        for item in inputs:
            c = self.contacts.get(str(item["id"]))
            if c is None or c["archived"]:
                missing.append(str(item["id"]))
                continue
            for k, v in (item.get("properties") or {}).items():
                c["props"][k] = v if v != "" else None  # "" clears the value
            c["modified"] = self.clock_ms
            done.append(self._public(c, list(item.get("properties") or {})))
        body: dict[str, Any] = {"status": "COMPLETE", "results": done, "startedAt": started,
                                "completedAt": started}
        if missing:
            body["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                               "message": "Could not get some CONTACT objects, they may be "
                                          "deleted or not exist.",
                               "context": {"ids": missing}, "links": {}, "errors": []}]
            body["numErrors"] = 1
            return self._ok(body, 207)
        return self._ok(body)

    def _invalid_values(self, inputs: list[dict[str, Any]]) -> list[tuple[str, str]]:
        bad = []
        for item in inputs:
            for k, v in (item.get("properties") or {}).items():
                d = self.properties.get(k)
                if d is None:
                    bad.append((str(item["id"]), f"Property {k!r} does not exist"))
                elif d["type"] == "enumeration" and v not in ("", None) and v not in {
                        o["value"] for o in d["options"]}:
                    bad.append((str(item["id"]), f"{v!r} was not one of the allowed options"))
        return bad

    # ------------------------------------------------------------ properties
    @hs_route("GET", r"/crm/v3/properties/contacts")
    def get_properties(self, req: Request) -> Response:
        return self._ok({"results": list(self.properties.values())})

    @hs_route("GET", r"/crm/v3/properties/contacts/(?P<name>[^/]+)")
    def get_property(self, req: Request) -> Response:
        p = self.properties.get(req.match["name"])
        if p is None:
            return _error(404, f"Unable to find property {req.match['name']}", "OBJECT_NOT_FOUND")
        return self._ok(p)

    @hs_route("POST", r"/crm/v3/properties/contacts")
    def create_property(self, req: Request) -> Response:
        b = req.json()
        if b["name"] in self.properties:
            return _error(409, f"Property named '{b['name']}' already exists.", "CONFLICT")
        # an enumeration is its options: HubSpot answers one without any with a 400
        # VALIDATION_ERROR (https://developers.hubspot.com/docs/api/crm/properties, "Property
        # type and fieldType values": enumeration properties take their options)
        if b.get("type") == "enumeration" and not b.get("options"):
            return _error(400, "Enumeration properties must have at least one option.",
                          "VALIDATION_ERROR")
        for o in b.get("options") or []:
            if not (o.get("label") and o.get("value")):
                return _error(400, "Every option needs a label and a value.", "VALIDATION_ERROR")
        self.define_property(b["name"], b["type"], b["fieldType"],
                             [o["value"] for o in b.get("options") or []], b["groupName"])
        self.properties[b["name"]]["label"] = b.get("label", b["name"])
        return self._ok(self.properties[b["name"]], 201)

    @hs_route("PATCH", r"/crm/v3/properties/contacts/(?P<name>[^/]+)")
    def update_property(self, req: Request) -> Response:
        p = self.properties.get(req.match["name"])
        if p is None:
            return _error(404, "not found", "OBJECT_NOT_FOUND")
        b = req.json()
        if "options" in b and p["type"] == "enumeration" and not b["options"]:
            return _error(400, "Enumeration properties must have at least one option.",
                          "VALIDATION_ERROR")
        if "options" in b:  # the options sent replace them all (no way to append one)
            p["options"] = [{"label": o["label"], "value": o["value"], "hidden": False,
                             "displayOrder": i} for i, o in enumerate(b["options"])]
        return self._ok(p)

    # ------------------------------------------------------------ lists v3
    def _list_body(self, lst: dict[str, Any]) -> dict[str, Any]:
        return {"listId": lst["listId"], "name": lst["name"], "objectTypeId": lst["objectTypeId"],
                "processingType": lst["processingType"], "processingStatus": "COMPLETE",
                "listVersion": 1, "size": len(lst["members"])}

    @hs_route("POST", r"/crm/v3/lists/?")
    def create_list(self, req: Request) -> Response:
        b = req.json()
        if self.list_named(b["name"]):
            return _error(400, f"A list named {b['name']!r} already exists", "VALIDATION_ERROR")
        lid = str(self._next_list)
        self._next_list += 1
        self.lists[lid] = {"listId": lid, "name": b["name"], "objectTypeId": b["objectTypeId"],
                           "processingType": b["processingType"], "members": {}}
        return self._ok({"list": self._list_body(self.lists[lid])})

    @hs_route("GET", r"/crm/v3/lists/object-type-id/(?P<ot>[^/]+)/name/(?P<name>[^/]+)")
    def list_by_name(self, req: Request) -> Response:
        from urllib.parse import unquote
        lst = self.list_named(unquote(req.match["name"]))
        if lst is None or lst["objectTypeId"] != req.match["ot"]:
            return _error(404, "List does not exist", "OBJECT_NOT_FOUND")
        return self._ok({"list": self._list_body(lst)})

    @hs_route("GET", r"/crm/v3/lists/(?P<id>\d+)")
    def list_by_id(self, req: Request) -> Response:
        lst = self.lists.get(req.match["id"])
        if lst is None:
            return _error(404, "List does not exist", "OBJECT_NOT_FOUND")
        return self._ok({"list": self._list_body(lst)})

    @hs_route("DELETE", r"/crm/v3/lists/(?P<id>\d+)")
    def delete_list(self, req: Request) -> Response:
        self.lists.pop(req.match["id"], None)
        return self._ok(None, 204)

    @hs_route("PUT", r"/crm/v3/lists/(?P<id>\d+)/memberships/add-and-remove")
    def add_and_remove(self, req: Request) -> Response:
        lst = self.lists.get(req.match["id"])
        if lst is None:
            return _error(404, "List does not exist", "OBJECT_NOT_FOUND")
        if lst["processingType"] not in ("MANUAL", "SNAPSHOT"):
            return _error(400, "Only MANUAL and SNAPSHOT lists can be edited", "VALIDATION_ERROR")
        b = req.json() or {}
        if "recordIdsToAdd" not in b or "recordIdsToRemove" not in b:
            return _error(400, "recordIdsToAdd and recordIdsToRemove are required",
                          "VALIDATION_ERROR")
        if len(b["recordIdsToAdd"]) + len(b["recordIdsToRemove"]) > MEMBERSHIP_CHANGE_MAX:
            return _error(400, f"at most {MEMBERSHIP_CHANGE_MAX} record ids per call",
                          "VALIDATION_ERROR")
        added, removed, missing = [], [], []
        for rid in map(str, b["recordIdsToAdd"]):
            c = self.contacts.get(rid)
            if c is None or c["archived"]:
                missing.append(rid)
            elif rid not in lst["members"]:
                lst["members"][rid] = iso(self.clock_ms)
                added.append(rid)
        for rid in map(str, b["recordIdsToRemove"]):
            if rid in lst["members"]:
                del lst["members"][rid]
                removed.append(rid)
            elif rid not in self.contacts:
                missing.append(rid)
        return self._ok({"recordsIdsAdded": added, "recordIdsRemoved": removed,
                         "recordIdsMissing": missing})

    @hs_route("GET", r"/crm/v3/lists/(?P<id>\d+)/memberships")
    def memberships(self, req: Request) -> Response:
        lst = self.lists.get(req.match["id"])
        if lst is None:
            return _error(404, "List does not exist", "OBJECT_NOT_FOUND")
        limit = min(int(req.arg("limit", "100")), MEMBERSHIP_PAGE_MAX)
        after = int(req.arg("after") or 0)
        ids = sorted(int(i) for i in lst["members"] if int(i) > after)
        page = ids[:limit]
        body: dict[str, Any] = {"results": [{"recordId": str(i),
                                             "membershipTimestamp": lst["members"][str(i)]}
                                            for i in page], "total": len(lst["members"])}
        if len(ids) > limit:
            body["paging"] = {"next": {"after": str(page[-1]), "link": ""}}
        return self._ok(body)
