"""Conformance batteries for connectors, installed with crmsync (as ``singer_sdk.testing``):
a third-party source or destination runs the same checks as the built-in ones.

* ``DESTINATION_CHECKS`` (``destination.py``): membership, batching, mirror / add-only,
  no call without a change, convergence after transient failures;
* ``SOURCE_CHECKS`` (``source.py``): a first pull reads every contact, later pulls see
  changes (and deletions), a pull without a change moves nothing.
"""

from __future__ import annotations

from .destination import CHECKS as DESTINATION_CHECKS
from .destination import Harness, HashedKeys, email_of
from .files import Cli, write_csv, write_mapping
from .source import CHECKS as SOURCE_CHECKS
from .source import SourceHarness

__all__ = ["DESTINATION_CHECKS", "SOURCE_CHECKS", "Cli", "Harness", "HashedKeys",
           "SourceHarness", "email_of", "write_csv", "write_mapping"]
