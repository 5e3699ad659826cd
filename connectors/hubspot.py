"""HubSpot: contact source, static-list and property write-back destinations.

Talks to HubSpot through hubspot-api-client (the ``hubspot`` extra), with the SDK's own urllib3
retries turned off: every call goes through one client-side rolling-window limiter per account
and ``sync.retry.call`` driven by ``OUTCOMES`` below.

Choices worth knowing:

* The list destination keys are HubSpot record ids (the source's ``id``); ``value = "none"``.
* The property destination writes the segment name (``value = "label"``); a removal clears the
  property (empty string, as the batch-update docs say). A missing property is created as an
  enumeration (``select``) with one option (label and value) per segment of the destination's
  group (or its one segment): HubSpot refuses an enumeration without options. When the group
  gains a segment, ``open`` PATCHes the options (every option is sent: HubSpot has no way to
  append one, https://developers.hubspot.com/docs/methods/contacts/v2/update_contact_property);
  ``property_type: string`` in the mapping creates a plain text property instead.
* The source pulls fully through the list endpoint (no 10,000 cap), then incrementally through
  search on ``lastmodifieddate >= cursor - lookback`` in ``hs_object_id`` order, restarting the
  query past the last id when the 10,000-result cap is reached; archived contacts and ids merged
  into another contact (``hs_merged_object_ids``) come back as deletions.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field, SecretStr

from ..sync.errors import CrmsyncError, DestinationStopped
from ..sync.mapping.model import ConnectionConfig, Duration, FieldType
from .base import BatchResult, Change, Destination, NoOptions, Op, Pull, Source, SourceState
from .ratelimit import RollingWindow
from .retry import Action, Applied, Calls, Outcome, RetryPolicy, retry_after_seconds

__all__ = ["OUTCOMES", "HubSpotConnection", "HubSpotListDestination",
           "HubSpotPropertyDestination", "HubSpotSource", "classify"]

CONTACT = "0-1"  # objectTypeId of contacts
BATCH_UPDATE_MAX = 100
SEARCH_CAP = 10_000


class HubSpotConnection(ConnectionConfig):
    """A HubSpot account: a private-app token and the account's limits."""

    token: SecretStr
    rate_limit: int = Field(100, ge=1)  # requests per 10 s: 100 Free/Starter, 190 Pro/Ent, 250
    rate_window: float = Field(10.0, gt=0)
    search_rate: float = Field(5.0, gt=0)  # search requests per ``search_window``
    search_window: float = Field(1.0, gt=0)  # seconds (benchmarks scale it with rate_window)
    timeout: float = Field(30.0, gt=0)
    max_attempts: int = Field(6, ge=1)
    backoff: float = Field(0.5, gt=0)  # first retry wait for 5xx / resets (s)


# ---------------------------------------------------------------- outcomes (the one table)

#: status -> action. 429 depends on the body's policyName (DAILY stops, the rolling windows
#: retry after Retry-After or the interval header); 401/403 stop naming the token variable;
#: other 4xx reject the rows of the call; 5xx, timeouts and resets retry.
OUTCOMES: dict[int | str, Action] = {
    "429:DAILY": Action.STOP,
    429: Action.RETRY,
    401: Action.STOP,
    403: Action.STOP,
    400: Action.REJECT,
    409: Action.REJECT,
    422: Action.REJECT,
    404: Action.FAIL,
    "5xx": Action.RETRY,
    "network": Action.RETRY,  # urllib3 timeouts, dropped connections, refused connections
}


def _is_api_exception(exc: BaseException) -> bool:
    return type(exc).__name__.endswith("Exception") and hasattr(exc, "status") and hasattr(
        exc, "body") and type(exc).__module__.startswith("hubspot.")


def _body(exc: BaseException) -> dict[str, Any]:
    import json
    try:
        data = json.loads(getattr(exc, "body", None) or "{}")
        return data if isinstance(data, dict) else {}
    except (ValueError, TypeError):
        return {}


def _header(exc: BaseException, name: str) -> str | None:
    headers = getattr(exc, "headers", None) or {}
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def classify(exc: BaseException, token_var: str = "the token's environment variable") -> Outcome:
    """Map one failed HubSpot call to an Outcome through ``OUTCOMES``."""
    import urllib3
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return Outcome(OUTCOMES["network"], f"network: {type(exc).__name__}")
    if not _is_api_exception(exc):
        return Outcome(Action.FAIL, repr(exc))
    status = int(getattr(exc, "status", 0) or 0)
    body = _body(exc)
    what = body.get("category") or body.get("policyName") or ""
    if status == 0:  # SDK wraps SSL and similar transport failures as status 0
        return Outcome(OUTCOMES["network"], f"network: {getattr(exc, 'reason', '')}")
    if status == 429:
        policy = body.get("policyName", "")
        if policy == "DAILY":
            return Outcome(OUTCOMES["429:DAILY"], "HubSpot daily API limit reached (429 DAILY); "
                           "this destination stops for this run and resumes on the next")
        wait = retry_after_seconds(_header(exc, "Retry-After"))
        if wait is None:
            ms = _header(exc, "X-HubSpot-RateLimit-Interval-Milliseconds")
            wait = float(ms) / 1000 if ms and ms.isdigit() else 10.0
        # a throttled request was not applied: its retry's answers are to be believed
        return Outcome(OUTCOMES[429], f"429 {policy or 'rate limit'}", wait, Applied.NO)
    if status in (401, 403):
        return Outcome(OUTCOMES[status], f"HubSpot refused the access token ({status} {what}); "
                       f"set a valid private-app token in ${{{token_var}}}"
                       + (" with the required scopes" if status == 403 else ""))
    if status >= 500:
        return Outcome(OUTCOMES["5xx"], f"HubSpot {status}")
    action = OUTCOMES.get(status, Action.REJECT if 400 <= status < 500 else Action.FAIL)
    return Outcome(action, f"HubSpot {status} {what}: {body.get('message', '')}".strip())


# ---------------------------------------------------------------- client

_LIMITERS: dict[str, tuple[RollingWindow, RollingWindow]] = {}
_LIMITERS_LOCK = threading.Lock()


def _limiters(conn: HubSpotConnection) -> tuple[RollingWindow, RollingWindow]:
    """One pair of limiters (general, search) per account, shared by every connector."""
    account = hashlib.sha256(f"{conn.base_url}|{conn.token.get_secret_value()}".encode()
                             ).hexdigest()
    with _LIMITERS_LOCK:
        if account not in _LIMITERS:
            # a small margin: the server stamps a call when it arrives, a little after us
            _LIMITERS[account] = (
                RollingWindow(conn.rate_limit, conn.rate_window * 1.01 + 0.05),
                RollingWindow(max(1, int(conn.search_rate)),
                              conn.search_window * 1.02 + 0.02))
        return _LIMITERS[account]


class HubSpotClient:
    """The SDK plus the limiter and the retry loop: ``client.call(fn, ...)``."""

    def __init__(self, conn: HubSpotConnection, ctx: Any):
        from hubspot import HubSpot
        from urllib3.util.retry import Retry
        self.conn, self.ctx = conn, ctx
        kwargs: dict[str, Any] = {}
        if conn.base_url:
            kwargs["host"] = conn.base_url.rstrip("/")
        # no silent urllib3 retries (not even on 429 + Retry-After): retries happen in Calls
        retry = Retry(total=0, connect=0, read=0, status=0, redirect=0, other=0,
                      respect_retry_after_header=False, raise_on_status=False)
        self.sdk = HubSpot(access_token=conn.token.get_secret_value(), retry=retry, **kwargs)
        self.limiter, self.search_limiter = _limiters(conn)
        self.token_var = ctx.env_var.get("token", "HUBSPOT_TOKEN")
        self.calls = Calls(ctx, self.classify,
                           RetryPolicy(attempts=conn.max_attempts, initial_wait=conn.backoff),
                           self.limiter, throttle=lambda exc: getattr(exc, "status", None) == 429)

    def classify(self, exc: BaseException) -> Outcome:
        return classify(exc, self.token_var)

    def call(self, fn: Callable[..., Any], *args: Any, search: bool = False, **kw: Any) -> Any:
        return self.calls(fn, *args, _request_timeout=self.conn.timeout,
                          limiter=self.search_limiter if search else None, **kw)


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None) if _is_api_exception(exc) else None


# ---------------------------------------------------------------- source

_TYPES = {"number": FieldType.number, "bool": FieldType.bool, "date": FieldType.date,
          "datetime": FieldType.datetime, "enumeration": FieldType.enumeration,
          "string": FieldType.string, "phone_number": FieldType.string}


def results(page: Any) -> list[Any]:
    """A page's ``results``; an answer without them is not HubSpot's (a wrong ``base_url``,
    a proxy's error page): stop rather than take it for an empty CRM."""
    if getattr(page, "results", None) is None:
        raise CrmsyncError("HubSpot answered without 'results': is the connection's base_url "
                           "HubSpot's API?")
    return page.results


def field_type(definition: dict[str, Any]) -> FieldType:
    """HubSpot property definition -> crmsync type (multi-checkbox enumerations are ``multi``)."""
    t = definition.get("type")
    ft = definition.get("fieldType", definition.get("field_type"))
    if t == "enumeration" and ft == "checkbox":
        return FieldType.multi
    if t == "enumeration" and ft == "booleancheckbox":
        return FieldType.bool
    return _TYPES.get(t or "", FieldType.string)


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    s = str(value)
    if s.isdigit():
        return int(s)
    return _ms(datetime.fromisoformat(s.replace("Z", "+00:00")))


class HubSpotSourceOptions(NoOptions):
    object: Literal["contacts"] = "contacts"
    full_every: Duration = timedelta(days=7)
    lookback: Duration = timedelta(minutes=10)
    page_size: int = Field(100, ge=1, le=100)
    search_page_size: int = Field(200, ge=1, le=200)


class HubSpotSource(Source):
    """Contacts typed by HubSpot's property definitions; full, then incremental by search."""

    Options = HubSpotSourceOptions
    connection_types = ("hubspot",)

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self._client: HubSpotClient | None = None
        self._defs: dict[str, dict[str, Any]] | None = None

    @property
    def client(self) -> HubSpotClient:
        if self._client is None:
            self._client = HubSpotClient(self.connection, self.ctx)  # type: ignore[arg-type]
        return self._client

    def declared_fields(self) -> list[str] | None:
        return [self.key, *self.config.properties] if self.config.properties else None

    def _definitions(self) -> dict[str, dict[str, Any]]:
        if self._defs is None:
            api = self.client.sdk.crm.properties.core_api
            res = self.client.call(api.get_all, "contacts")
            self._defs = {p.name: p.to_dict() for p in results(res)}
        return self._defs

    def schema(self) -> dict[str, FieldType]:
        defs = self._definitions()
        wanted = self.config.properties or sorted(defs)
        unknown = [p for p in wanted if p not in defs]
        if unknown:
            raise CrmsyncError(f"source '{self.name}': HubSpot has no contact propert"
                               f"{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}")
        out = {self.key: FieldType.string}
        out.update({p: field_type(defs[p]) for p in wanted if p != self.key})
        return out

    def _props(self) -> list[str]:
        names = [n for n in self.schema() if n != self.key or n == "hs_object_id"]
        return list(dict.fromkeys([*names, "lastmodifieddate", "hs_merged_object_ids"]))

    def _row(self, obj: Any, types: dict[str, FieldType]) -> dict[str, Any]:
        props = obj.properties or {}
        row: dict[str, Any] = {self.key: str(obj.id)}
        for name, t in types.items():
            if name == self.key:
                continue
            v = props.get(name)
            row[name] = [x for x in v.split(";") if x] if (t is FieldType.multi and v) else v
        return row

    def pull(self, state: SourceState) -> Pull:
        opts: HubSpotSourceOptions = self.options  # type: ignore[assignment]
        full = state.full_due(self.ctx.now, opts.full_every)
        types = self.schema()
        rows: list[dict[str, Any]] = []
        merged: set[str] = set()
        newest = 0
        objects = self._list_all() if full else self._search_since(
            _ms(state.cursor["since"]) - int(opts.lookback.total_seconds() * 1000))
        for obj in objects:
            rows.append(self._row(obj, types))
            props = obj.properties or {}
            merged.update(i for i in (props.get("hs_merged_object_ids") or "").split(";") if i)
            newest = max(newest, _ms(props.get("lastmodifieddate") or obj.updated_at))
        since = max(newest, _ms(state.cursor["since"]) if state.cursor else 0)
        deleted = set() if full else merged | set(self._archived_ids())
        deleted -= {r[self.key] for r in rows}
        self.ctx.log.info("hubspot source %s: %s pull, %d contacts, %d deleted", self.name,
                          "full" if full else "incremental", len(rows), len(deleted))
        return Pull(full=full, rows=rows, deleted=sorted(deleted), cursor={"since": since})

    def _list_all(self, archived: bool = False) -> Iterator[Any]:
        api = self.client.sdk.crm.contacts.basic_api
        after = None
        props = [] if archived else self._props()
        while True:
            kw: dict[str, Any] = {"limit": self.options.page_size, "archived": archived}
            if props:
                kw["properties"] = props
            if after:
                kw["after"] = after
            page = self.client.call(api.get_page, **kw)
            yield from results(page)
            after = page.paging.next.after if page.paging and page.paging.next else None
            if not after:
                return

    def _archived_ids(self) -> Iterator[str]:
        return (str(o.id) for o in self._list_all(archived=True))

    def _search_since(self, since_ms: int) -> Iterator[Any]:
        """Every contact with lastmodifieddate >= since, in id order; past the 10,000-result
        cap the query restarts with ``hs_object_id > last id`` (equal timestamps lose nothing)."""
        from hubspot.crm.contacts import PublicObjectSearchRequest
        api = self.client.sdk.crm.contacts.search_api
        size = self.options.search_page_size
        last_id, after = 0, 0
        last_seen = last_id
        while True:
            req = PublicObjectSearchRequest(
                filter_groups=[{"filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(since_ms)},
                    {"propertyName": "hs_object_id", "operator": "GT", "value": str(last_id)}]}],
                sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                properties=self._props(), limit=size, after=str(after) if after else None)
            page = self.client.call(api.do_search, public_object_search_request=req, search=True)
            yield from results(page)
            if page.results:
                last_seen = int(page.results[-1].id)
            if not (page.paging and page.paging.next):
                return
            after = int(page.paging.next.after)
            if after + size > SEARCH_CAP:  # next page would pass the cap: restart the query
                last_id, after = last_seen, 0


# ---------------------------------------------------------------- destinations


class _HubSpotDestination(Destination):
    connection_types = ("hubspot",)
    #: HubSpot limits requests per 10 s per app, not requests in flight
    #: (developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines): several
    #: batches go at once under the account's one rolling-window limiter
    max_concurrency = 4

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self._client: HubSpotClient | None = None

    @property
    def client(self) -> HubSpotClient:
        if self._client is None:
            self._client = HubSpotClient(self.connection, self.ctx)  # type: ignore[arg-type]
        return self._client

    @staticmethod
    def _numeric(changes: list[Change], result: BatchResult) -> list[Change]:
        ok = [c for c in changes if c.key.isdigit()]
        for c in changes:
            if not c.key.isdigit():
                result.rejected[c.key] = "not a HubSpot record id (ids are numeric)"
        return ok


class HubSpotListOptions(NoOptions):
    list: str
    chunk_size: int = Field(10_000, ge=1, le=100_000)


class HubSpotListDestination(_HubSpotDestination):
    """A MANUAL contact list, found or created by name; membership by add-and-remove."""

    Options = HubSpotListOptions
    target_option = "list"
    value = "none"
    max_batch = 100_000

    @property
    def batch_size(self) -> int:
        return min(self.config.batch_size or self.options.chunk_size, self.options.chunk_size)

    @property
    def list_id(self) -> str:
        """The list ``open`` found or made (the core always opens before it writes)."""
        if getattr(self, "_list_id", None) is None:
            raise DestinationStopped(f"hubspot_list {self.name}: write before open")
        return self._list_id

    def open(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        api = self.client.sdk.crm.lists.lists_api
        found = None
        if state.get("list_id"):
            found = self._get(api.get_by_id, state["list_id"])
        if found is None:
            found = self._get(api.get_by_name, self.options.list, CONTACT)
        if found is None:
            found = self.client.call(api.create, list_create_request={
                "name": self.options.list, "objectTypeId": CONTACT,
                "processingType": "MANUAL"}).list
            self.ctx.log.info("hubspot_list %s: created list %s", self.name, found.list_id)
        if found.processing_type not in ("MANUAL", "SNAPSHOT"):
            raise DestinationStopped(f"HubSpot list '{self.options.list}' is "
                                     f"{found.processing_type}; crmsync writes MANUAL lists only")
        self._list_id = str(found.list_id)
        return {"list_id": self._list_id}

    def _get(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return self.client.call(fn, *args).list
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise

    def write(self, op: Op, changes: list[Change]) -> BatchResult:
        result = BatchResult()
        if op is Op.UPDATE:  # membership only: nothing to send
            return BatchResult.all_done(changes)
        todo = self._numeric(changes, result)
        for start in range(0, len(todo), self.batch_size):
            self._send(op, todo[start:start + self.batch_size], result)
        return result

    def _send(self, op: Op, chunk: list[Change], result: BatchResult) -> None:
        api = self.client.sdk.crm.lists.memberships_api
        ids = [c.key for c in chunk]
        body = {"recordIdsToAdd": ids if op is Op.ADD else [],
                "recordIdsToRemove": ids if op is Op.REMOVE else []}
        try:
            res = self.client.call(api.add_and_remove, self.list_id,
                                   membership_change_request=body)
        except Exception as exc:
            outcome = self.client.classify(exc)
            if outcome.action is not Action.REJECT:
                raise
            # HubSpot names unknown records inside a 200 (recordIdsMissing): a refused call
            # is a request problem, not its rows' (they are sent again on the next run)
            raise DestinationStopped(f"HubSpot refused a membership change of list "
                                     f"{self.list_id}: {outcome.reason}", applied=False) from None
        missing = set(map(str, res.record_ids_missing or []))
        added = set(map(str, res.records_ids_added or []))
        for k in ids:
            if k in missing and op is Op.ADD:
                result.rejected[k] = "contact no longer exists in HubSpot (deleted or merged)"
            else:
                result.done[k] = None
                if op is Op.ADD and k not in added:
                    result.preexisting.add(k)

    def readback(self) -> dict[str, Any] | None:
        lst = self.client.call(self.client.sdk.crm.lists.lists_api.get_by_id, self.list_id).list
        return {"list_id": self.list_id, "size": lst.size}

    def members(self) -> Iterator[str] | None:
        api = self.client.sdk.crm.lists.memberships_api
        after = None
        while True:
            kw: dict[str, Any] = {"limit": 250}
            if after:
                kw["after"] = after
            page = self.client.call(api.get_page, self.list_id, **kw)
            yield from (str(m.record_id) for m in results(page))
            after = page.paging.next.after if page.paging and page.paging.next else None
            if not after:
                return


class HubSpotPropertyOptions(NoOptions):
    property: str
    label: str | None = None
    group_name: str = "contactinformation"
    property_type: Literal["enumeration", "string"] = "enumeration"


class HubSpotPropertyDestination(_HubSpotDestination):
    """Write-back of the segment name into a contact property by batch update (100 a call)."""

    Options = HubSpotPropertyOptions
    target_option = "property"
    value = "label"
    max_batch = BATCH_UPDATE_MAX

    def open(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        api = self.client.sdk.crm.properties.core_api
        o: HubSpotPropertyOptions = self.options  # type: ignore[assignment]
        try:
            prop = self.client.call(api.get_by_name, "contacts", o.property).to_dict()
        except Exception as exc:
            if _status(exc) != 404:
                raise
            seed = self._labels()
            enum = o.property_type == "enumeration"
            if enum and not seed:
                raise DestinationStopped(
                    f"cannot create HubSpot property '{o.property}': an enumeration needs its "
                    "options and this destination names no segment or group") from None
            prop = self.client.call(api.create, "contacts", property_create={
                "name": o.property, "label": o.label or o.property, "groupName": o.group_name,
                "type": "enumeration" if enum else "string",
                "fieldType": "select" if enum else "text",
                "options": [self._option(v, i) for i, v in enumerate(seed)] if enum else [],
            }).to_dict()
            self.ctx.log.info("hubspot_property %s: created property %s", self.name, o.property)
        if prop.get("type") not in ("enumeration", "string"):
            raise DestinationStopped(f"HubSpot property '{o.property}' has type "
                                     f"{prop.get('type')}; crmsync writes enumeration or string")
        self._enum = prop.get("type") == "enumeration"
        self._options = [x["value"] for x in prop.get("options") or []]
        self._ensure_options(set(self._labels()))  # the group grew since the last run
        return state

    def _labels(self) -> list[str]:
        """Every value this destination may write: the group's segments, or its segment."""
        if self.ctx.labels:
            return list(self.ctx.labels)
        return [self.config.segment] if self.config.segment else []

    @staticmethod
    def _option(value: str, order: int) -> dict[str, Any]:
        return {"label": value, "value": value, "displayOrder": order, "hidden": False}

    _options_lock = threading.Lock()  # batches written at once must not PATCH over each other

    def _ensure_options(self, values: set[str]) -> None:
        order = {v: i for i, v in enumerate(self._labels())}
        with self._options_lock:
            new = sorted((v for v in values if v and v not in self._options),
                         key=lambda v: (order.get(v, len(order)), v))
            if not (self._enum and new):
                return
            opts = [*self._options, *new]
            self.client.call(self.client.sdk.crm.properties.core_api.update, "contacts",
                             self.options.property, property_update={
                                 "options": [self._option(v, i) for i, v in enumerate(opts)]})
            self._options = opts

    def write(self, op: Op, changes: list[Change]) -> BatchResult:
        result = BatchResult()
        todo = self._numeric(changes, result)
        if op is not Op.REMOVE:
            self._ensure_options({c.value for c in todo if c.value})
        for start in range(0, len(todo), BATCH_UPDATE_MAX):
            self._send(op, todo[start:start + BATCH_UPDATE_MAX], result)
        return result

    def _send(self, op: Op, chunk: list[Change], result: BatchResult, again: bool = True) -> None:
        api = self.client.sdk.crm.contacts.batch_api
        prop = self.options.property
        inputs = [{"id": c.key, "properties": {prop: "" if op is Op.REMOVE else (c.value or "")}}
                  for c in chunk]
        try:
            res = self.client.call(api.update, batch_input_simple_public_object_batch_input={
                "inputs": inputs})
        except Exception as exc:
            o = self.client.classify(exc)
            if o.action is not Action.REJECT:
                raise
            bad = self._error_ids(_body(exc).get("errors") or [])
            if bad and again:  # reject the named rows, send the rest once more
                for k, why in bad.items():
                    result.rejected[k] = why
                rest = [c for c in chunk if c.key not in bad]
                if rest:
                    self._send(op, rest, result, again=False)
            else:
                result.rejected.update({c.key: o.reason for c in chunk})
            return
        missing: set[str] = set()
        for err in getattr(res, "errors", None) or []:
            missing.update(map(str, (err.context or {}).get("ids", [])))
        for c in chunk:
            if c.key in missing:
                if op is Op.REMOVE:
                    result.done[c.key] = None  # the contact is gone: nothing left to clear
                else:
                    result.rejected[c.key] = "contact no longer exists in HubSpot (deleted or merged)"
            else:
                result.done[c.key] = None

    @staticmethod
    def _error_ids(errors: list[dict[str, Any]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in errors:
            ctx = e.get("context") or {}
            for k in ctx.get("id") or ctx.get("ids") or []:
                out[str(k)] = f"HubSpot refused the value: {e.get('message', '')}"
        return out
