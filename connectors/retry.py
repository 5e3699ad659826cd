"""The one retry loop every platform client uses (tenacity), driven by an outcome table.

Each connector maps what can happen on a call (an exception, a status, an error code) to an
``Outcome`` with ``classify``; this module does the rest: wait (honouring Retry-After, else
exponential backoff with jitter), count retries on the meter, stop the destination, or give
the exception back for the caller to turn into per-row rejects.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from ..sync.errors import DestinationStopped

T = TypeVar("T")


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

    STOP raises ``DestinationStopped``; REJECT and FAIL re-raise the original exception
    (a ``Retryable`` is unwrapped to its outcome). ``meter.retries`` counts retries."""
    policy = policy or RetryPolicy()
    backoff = wait_exponential_jitter(multiplier=policy.initial_wait, max=policy.max_wait,
                                     jitter=policy.initial_wait)

    def outcome_of(exc: BaseException) -> Outcome:
        return exc.outcome if isinstance(exc, Retryable) else classify(exc)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        ra = outcome_of(exc).retry_after if exc else None
        return ra if ra is not None else backoff(state)

    def before_sleep(state: RetryCallState) -> None:
        if meter is not None:
            meter.retries += 1

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
        if o.action is Action.STOP:
            raise DestinationStopped(o.reason) from exc
        if o.action is Action.RETRY and (o.retry_after or 0) > policy.max_retry_after:
            raise DestinationStopped(f"the platform asks to wait {o.retry_after:.0f}s: "
                                     f"stopped for this run: {o.reason}") from exc
        if o.action is Action.RETRY:
            raise DestinationStopped(f"gave up after {policy.attempts} attempts: {o.reason}") from exc
        raise
