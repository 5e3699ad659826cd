"""The one retry loop every platform client uses (tenacity), driven by an outcome table.

Each connector maps what can happen on a call (an exception, a status, an error code) to an
``Outcome`` with ``classify`` (in the spirit of Airbyte's error-resolution table,
``airbyte_cdk/sources/streams/http/error_handlers/default_error_mapping.py``); ``Calls``
does the rest: wait on the client-side limiter, count each attempt, count a throttle answer
and hold the limiter for its Retry-After, wait (Retry-After, else exponential backoff with
jitter, as ``dlt.sources.helpers.requests`` does), count retries, stop the destination, or
give the exception back for the caller to turn into per-row rejects. The waits sleep with
the run's ``Context.sleep``: tests inject one sleep there.

An outcome also says whether the failed attempt may have been applied (``Applied``): a
throttling answer (429, REQUEST_LIMIT_EXCEEDED) or a refused token means the platform did
nothing, while a 5xx, a reset connection or a timeout may follow a change that was made.
Retries after the latter are counted in ``meter.uncertain``, and a ``DestinationStopped``
carries ``applied=False`` only when no attempt of the call may have been applied: the push
keeps "already a member" answers after a retry that was certainly not applied, and rolls
back the write-ahead marks of a batch that was refused before it was applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from ..sync.errors import DestinationStopped
from .ratelimit import RollingWindow

T = TypeVar("T")


class Applied(StrEnum):
    """Whether a failed attempt may have changed anything on the platform."""

    NO = "not_applied"  # refused before doing anything: throttled, bad token, bad request
    MAYBE = "maybe_applied"  # a 5xx after the request was sent, a reset, a timeout


class Action(StrEnum):
    RETRY = "retry"  # transient: wait and try again
    STOP = "stop"  # stop this destination for the run (daily limit, auth, terms)
    REJECT = "reject"  # the rows of this call are bad: the caller records rejects
    FAIL = "fail"  # unexpected: raise as is


@dataclass(frozen=True)
class Outcome:
    action: Action
    reason: str = ""
    retry_after: float | None = None  # seconds the platform asked us to wait
    #: None: MAYBE for RETRY and FAIL (the safe guess), NO for STOP and REJECT (a refusal)
    applied: Applied | None = None

    @property
    def may_have_applied(self) -> bool:
        if self.applied is not None:
            return self.applied is Applied.MAYBE
        return self.action in (Action.RETRY, Action.FAIL)


class Retryable(Exception):
    """Raise from a call to ask for a retry with a known outcome (e.g. an error in a 200 body)."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass
class RetryPolicy:
    attempts: int = 6
    initial_wait: float = 0.5
    max_wait: float = 60.0
    #: a Retry-After longer than this is not waited for: the destination stops for this run
    max_retry_after: float = 300.0


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header (seconds; HTTP dates are treated as 'unknown')."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def call(fn: Callable[..., T], *args: Any, classify: Callable[[BaseException], Outcome],
         meter: Any = None, policy: RetryPolicy | None = None,
         sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)``, retrying what ``classify`` says is transient.

    STOP raises ``DestinationStopped`` (``applied``: whether any attempt may have been
    applied); REJECT and FAIL re-raise the original exception (a ``Retryable`` is unwrapped
    to its outcome). ``meter.retries`` counts retries, ``meter.uncertain`` those after an
    attempt that may have been applied."""
    policy = policy or RetryPolicy()
    backoff = wait_exponential_jitter(multiplier=policy.initial_wait, max=policy.max_wait,
                                     jitter=policy.initial_wait)

    def outcome_of(exc: BaseException) -> Outcome:
        return exc.outcome if isinstance(exc, Retryable) else classify(exc)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        ra = outcome_of(exc).retry_after if exc else None
        return ra if ra is not None else backoff(state)

    maybe = False  # an attempt of this call may have been applied

    def before_sleep(state: RetryCallState) -> None:
        nonlocal maybe
        exc = state.outcome.exception() if state.outcome else None
        uncertain = exc is None or outcome_of(exc).may_have_applied
        maybe = maybe or uncertain
        if meter is not None:
            meter.add("retries")
            if uncertain:
                meter.add("uncertain")

    def should_retry(exc: BaseException) -> bool:
        o = outcome_of(exc)
        if o.action is Action.RETRY and (o.retry_after or 0) > policy.max_retry_after:
            return False
        return o.action is Action.RETRY

    retrying = Retrying(
        retry=retry_if_exception(should_retry), wait=wait, sleep=sleep, reraise=True,
        stop=stop_after_attempt(policy.attempts), before_sleep=before_sleep,
    )
    try:
        return retrying(fn, *args, **kwargs)
    except DestinationStopped:
        raise
    except Exception as exc:
        o = outcome_of(exc)
        applied = maybe or o.may_have_applied
        if o.action is Action.STOP:
            raise DestinationStopped(o.reason, applied=applied) from exc
        if o.action is Action.RETRY and (o.retry_after or 0) > policy.max_retry_after:
            raise DestinationStopped(f"the platform asks to wait {o.retry_after:.0f}s: "
                                     f"stopped for this run: {o.reason}",
                                     applied=applied) from exc
        if o.action is Action.RETRY:
            raise DestinationStopped(f"gave up after {policy.attempts} attempts: {o.reason}; "
                                     "the next run carries on from the last checkpoint",
                                     applied=applied) from exc
        raise


@dataclass
class Calls:
    """One connector's calls to its platform: ``calls(fn, *args, **kwargs)``.

    ``ctx``: the run's context (its ``meter`` counts, its ``sleep`` waits); ``limiter``: the
    client-side rate limit, waited on before each attempt when ``acquire`` (else only held
    on a throttle answer); ``throttle``: whether an exception is the platform saying "slow
    down" (a 429, a rate-limit code); ``count``: count each attempt as a call (False: the
    connector counts its HTTP requests itself)."""

    ctx: Any
    classify: Callable[[BaseException], Outcome]
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    limiter: RollingWindow | None = None
    acquire: bool = True
    throttle: Callable[[BaseException], bool] = lambda exc: False
    count: bool = True

    def __call__(self, fn: Callable[..., T], *args: Any, limiter: RollingWindow | None = None,
                 **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` under the outcome table (``limiter``: this call's own,
        e.g. HubSpot's search limit)."""
        lim = limiter or self.limiter
        meter = self.ctx.meter

        def attempt() -> T:
            if lim is not None and self.acquire:
                lim.acquire()
            if self.count:
                meter.add("calls")
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if self.throttle(exc):
                    meter.add("throttled")
                    o = exc.outcome if isinstance(exc, Retryable) else self.classify(exc)
                    if lim is not None and o.action is Action.RETRY and o.retry_after:
                        lim.pause(o.retry_after)  # hold every caller, not just this one
                raise

        return call(attempt, classify=self.classify, meter=meter, policy=self.policy,
                    sleep=self.ctx.sleep)
