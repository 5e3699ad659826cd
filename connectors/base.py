"""The two small interfaces every platform implements.

A platform is one module under ``connectors/`` that defines some of:

* a ``ConnectionConfig`` subclass (credentials; secrets typed ``SecretStr``),
* a ``Source``: schema + pull (full or incremental, deletions included),
* one or more ``Destination`` classes: open (find or create the audience), write one batch.

and registers them as entry points in pyproject.toml (groups ``crmsync.connections``,
``crmsync.sources``, ``crmsync.destinations``), exactly as a third-party plugin would.
Everything else (typing values, evaluating segments, diffing, batching, checkpointing the
ledger, run history, safeguards) is done once, in ``sync/``.

Platform SDKs are optional extras: import them inside methods, never at module top, so that
``crmsync validate`` works without them.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ..sync.errors import Problem, Reject
from ..sync.mapping.model import ConnectionConfig, DestinationConfig, FieldType, SourceConfig

__all__ = [
    "BatchResult", "Change", "Context", "Destination", "Membership", "Meter", "NoOptions",
    "Op", "Pull", "Reject", "Source", "SourceState",
]


class NoOptions(BaseModel):
    """Connector-specific mapping fields; subclass with the fields a connector takes."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Meter:
    """What a destination or source did, for run history: API calls, retries, 429s.
    ``uncertain``: the retries after an attempt that may have been applied (a 5xx, a reset,
    a timeout), as opposed to a throttled or refused one (see ``connectors.retry.Applied``).

    Count with ``add`` (a destination may write batches from several threads at once); what
    one thread counted is ``mine``."""

    calls: int = 0
    retries: int = 0
    throttled: int = 0
    uncertain: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _mine: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    def add(self, what: Literal["calls", "retries", "throttled", "uncertain"], n: int = 1
            ) -> None:
        """Count ``n`` more of ``what`` (for the run, and for the calling thread)."""
        with self._lock:
            setattr(self, what, getattr(self, what) + n)
        setattr(self._mine, what, getattr(self._mine, what, 0) + n)

    def mine(self, what: Literal["calls", "retries", "throttled", "uncertain"]) -> int:
        """What the calling thread has counted of ``what``."""
        return getattr(self._mine, what, 0)

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "retries": self.retries, "throttled": self.throttled}


@dataclass
class Context:
    """What the core hands a connector: the run's clock, paths, logger and meter."""

    now: datetime  # the run's "now" (UTC, naive): its start or --as-of
    base_dir: Path  # the mapping file's folder; relative paths resolve against it
    meter: Meter = field(default_factory=Meter)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("crmsync"))
    env_var: dict[str, str] = field(default_factory=dict)  # config path -> ${VAR} it came from
    #: how the connector's waits sleep (retry backoff, Retry-After, the rate limiter's
    #: holds): tests inject a fake one here, and only here
    sleep: Callable[[float], None] = time.sleep
    #: label destinations: every value they may write, in order (the segment, or each
    #: segment of the group), so a select's options can be made before the first write
    labels: tuple[str, ...] = ()

    def resolve(self, path: str | Path) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p


# ---------------------------------------------------------------- sources


class RemoteState(Mapping[str, Any]):
    """What a destination remembers of its remote object between runs (its id, the upload
    requests still to check...), read-only; ``resync``: the remote must be reconciled from
    its own membership (asked by ``crmsync resync``, or by the destination)."""

    __slots__ = ("_data", "resync")

    def __init__(self, data: Mapping[str, Any] | None = None, *, resync: bool = False):
        self._data = dict(data or {})
        self.resync = resync

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"RemoteState({self._data!r}{', resync=True' if self.resync else ''})"


@dataclass
class SourceState:
    """What the store remembers of a source between runs."""

    cursor: Any = None  # whatever the source returned as Pull.cursor last time (JSON-able)
    last_full_at: datetime | None = None  # when the last full pull was committed
    rows: int = 0  # contacts in the stored snapshot

    def full_due(self, now: datetime, every: timedelta, since: Any = ...) -> bool:
        """Whether the next pull must be full: never pulled, no cursor (``since``: the part
        of the cursor an incremental pull starts from, when not the whole cursor), or the
        last full pull is ``every`` old (the periodic full reconcile that catches deletes)."""
        cursor = self.cursor if since is ... else since
        return (cursor is None or self.last_full_at is None
                or now - self.last_full_at >= every)


@dataclass
class Pull:
    """One pull. Either ``rows`` (dicts of raw values, the key field included) or ``sql``
    (a DuckDB SELECT yielding the same columns, for files). Values may be str, int, float,
    bool, None, or a list (multi-select); the core types them by ``Source.schema()``.

    ``full=True`` means the rows are the whole population: stored contacts not in it are
    deleted. Otherwise rows are upserted and ``deleted`` keys removed. ``cursor`` is stored
    only after the snapshot is committed.

    ``warnings``: what the pull could not take as it is but did not stop for, each a whole
    sentence naming the source (e.g. a file's malformed rows, counted, with line numbers;
    never a value, which may be an email). The core logs them and lists them with the
    plan's and the run's warnings.

    ``fallback``: the pull to take instead when the store cannot read ``sql`` (a file read
    strictly first, for speed, that turns out to hold malformed rows).

    ``present``: for an incremental pull, optionally a DuckDB SELECT of one column, every
    key the source holds now (a key scan): stored contacts not in it are deleted.
    """

    full: bool
    rows: Iterable[Mapping[str, Any]] = ()
    sql: str | None = None
    deleted: Iterable[str] = ()
    cursor: Any = None
    warnings: list[str] = field(default_factory=list)
    fallback: Callable[[], Pull] | None = None
    present: str | None = None


class Source(ABC):
    """Pulls contacts and their typed properties."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    connection_types: ClassVar[tuple[str, ...]] = ()  # () = takes no connection (files)

    def __init__(self, name: str, config: SourceConfig, options: BaseModel,
                 connection: ConnectionConfig | None, ctx: Context):
        self.name, self.config, self.options, self.connection, self.ctx = (
            name, config, options, connection, ctx)

    @classmethod
    def check(cls, name: str, config: SourceConfig, options: BaseModel) -> list[Problem]:
        """This connector's own rules about its section of the mapping, checked by
        ``crmsync validate`` (and before every run) without network: each problem's path is
        relative to the section (``options.object``), the fix says what to write."""
        return []

    @property
    def key(self) -> str:
        """The field holding each contact's key (its id on the platform)."""
        return self.config.key or "id"

    def declared_fields(self) -> list[str] | None:
        """Fields known without I/O (for `validate`), or None when only the platform knows."""
        return None

    @abstractmethod
    def schema(self) -> dict[str, FieldType]:
        """Field name -> type, for every field the pull returns (may call the platform)."""

    @abstractmethod
    def pull(self, state: SourceState) -> Pull:
        """Full or incremental pull, starting from ``state``."""


# ---------------------------------------------------------------- destinations


class Op(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    UPDATE = "update"  # the member stays but its value changed (new label or identifiers)
    #: a ``whole`` destination's write: the staged membership replaces what it holds (the
    #: batch may hold adds, updates and removes)
    REPLACE = "replace"


@dataclass(frozen=True)
class Change:
    """One member change. ``value`` is what to send (add/update): the label, or the encoded
    identifiers; ``previous`` is the ledger's value (remove/update): what was sent before,
    or the remote reference the destination asked to keep at ack time."""

    key: str
    label: str | None = None
    value: str | None = None
    previous: str | None = None


@dataclass
class BatchResult:
    """A batch's acknowledgement. Keys in none of the maps failed transiently and are
    retried next run. ``done`` maps key -> value to keep in the ledger (None: the sent
    value). ``preexisting``: keys the platform says were already members before crmsync
    added them; mirror mode never removes those."""

    done: dict[str, str | None] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    deferred: dict[str, str] = field(default_factory=dict)
    preexisting: set[str] = field(default_factory=set)

    @classmethod
    def all_done(cls, changes: Iterable[Change]) -> BatchResult:
        return cls(done={c.key: None for c in changes})


@dataclass(frozen=True)
class Membership:
    """What a ``whole`` destination holds once a batch is applied, left in the store: ``sql``
    is a DuckDB SELECT of ``key`` and ``value`` (as ``encode_sql`` makes it), one row per
    member, to run on ``con`` (literals inline, no parameters)."""

    con: Any
    sql: str


class Destination(ABC):
    """Writes memberships. The core computes the diff and calls ``write`` once per batch of at
    most ``max_batch`` changes of one op (up to ``concurrency`` at once), checkpointing the
    ledger after each ack."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    connection_types: ClassVar[tuple[str, ...]] = ()
    max_batch: ClassVar[int] = 10_000
    #: the most batches of one op the core may have in flight at once (``write`` then runs
    #: on that many threads; the connector's rate limiter and meter are shared by them):
    #: more than 1 only where the platform takes concurrent writes within its rate limit,
    #: so that the time a request waits for its answer does not idle the allowed rate
    max_concurrency: ClassVar[int] = 1
    #: what a member's synced value depends on; a change of it is an UPDATE
    #: "none": only membership (lists, campaigns); "label": the segment name (property
    #: write-back); "identity": the identifiers (ad audiences, files)
    value: ClassVar[Literal["none", "label", "identity"]] = "none"
    #: identity destinations: True when identifiers must be normalised and hashed
    hashed: ClassVar[bool] = False

    #: the option naming the remote object written (a list, an audience, a file): two
    #: destinations of one type and connection naming the same one would undo each other
    #: (None: the destination's whole options name it)
    target_option: ClassVar[str | None] = None

    #: True for a destination rewritten whole at each write and replaced atomically (a
    #: file): the core ``stage``s the whole membership a batch (of any ops, by key range)
    #: leads to before each ``write(Op.REPLACE, [])`` (the changes stay in the store),
    #: keeps no per-member write-ahead marks (either the new membership landed or none of
    #: it did), and saves ``remember()`` with the batch's checkpoint
    whole: ClassVar[bool] = False

    def __init__(self, config: DestinationConfig, options: BaseModel,
                 connection: ConnectionConfig | None, ctx: Context):
        self.config, self.options, self.connection, self.ctx = config, options, connection, ctx

    @classmethod
    def check(cls, config: DestinationConfig, options: BaseModel) -> list[Problem]:
        """This connector's own rules about its section of the mapping (e.g. the identifiers
        a platform takes), checked by ``crmsync validate`` (and before every run) without
        network: each problem's path is relative to the section (``identifiers[1]``)."""
        return []

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def batch_size(self) -> int:
        return min(self.config.batch_size or self.max_batch, self.max_batch)

    @property
    def concurrency(self) -> int:
        """Batches in flight at once: the mapping's ``concurrency`` (capped at the
        connector's maximum), else that maximum; 1 when the mapping sets ``batch_size``
        alone (a push paced batch by batch)."""
        c = self.config
        if c.concurrency is None and c.batch_size is not None:
            return 1
        return min(c.concurrency or self.max_concurrency, self.max_concurrency)

    def encode(self, identity: Mapping[str, str | None]) -> str:
        """Identity destinations: the identifiers (raw values by identifier name, plus
        ``phone_region``) -> the value to send and keep (e.g. a JSON row of SHA-256 hashes).
        Raise ``Reject(reason)`` when no usable identifier is left. Results are cached by
        the core per distinct input, so this runs once per new or changed contact."""
        raise NotImplementedError

    def encode_sql(self, columns: Mapping[str, str], dialect: str = "duckdb") -> str | None:
        """Optionally, the same as ``encode`` as a SQL expression over the identifier columns
        (identifier name -> SQL column) in ``dialect`` (``duckdb``, or ``postgres`` for
        ``engine: postgres``; None where it has none), for destinations that send raw
        values: the same text in every dialect."""
        return None

    def needs_open(self, state: RemoteState) -> bool:
        """Whether ``open`` must run on a run with nothing to send. By default it does not, so
        such a run makes no API call at all; say True for a free check (a file) or for work
        left from the last run (e.g. upload statuses to read)."""
        return False

    def open(self, state: RemoteState) -> Mapping[str, Any]:
        """Find or create the remote audience/list/property (called only when the run has
        changes to send, a resync to do, or ``needs_open``; always before ``write``).
        ``state`` is what was remembered last time (e.g. the remote id); return what to
        remember now, never changed afterwards (a ``RemoteState(..., resync=True)`` when the
        remote must be reconciled, e.g. its file is gone). What the writes add (e.g. upload
        request ids) is ``remember``'s."""
        return state

    def remember(self) -> Mapping[str, Any] | None:
        """After the push: what to remember for next time when it is more than what ``open``
        returned (None: that)."""
        return None

    @abstractmethod
    def write(self, op: Op, changes: list[Change]) -> BatchResult:
        """Apply one batch (all of one op). Return per-key outcomes; raise
        ``DestinationStopped`` to stop this destination for the run."""

    def stage(self, members: Membership | None) -> None:
        """``whole`` destinations: what the next ``write`` puts in place (None: nothing)."""
        raise NotImplementedError

    def readback(self) -> dict[str, Any] | None:
        """The platform's own view after the push (size, match rate), or None."""
        return None

    def members(self) -> Iterator[str] | None:
        """Keys currently in the remote audience, for ``resync``; None when unreadable."""
        return None

    def member_values(self) -> dict[str, str] | None:
        """Members and the value each holds, as ``encode_sql`` writes it, where the remote
        shows them (a file), for ``resync``; None otherwise (``members`` is used)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and files."""

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
