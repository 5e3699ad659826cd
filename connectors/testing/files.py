"""What the batteries write and how they run crmsync: a contacts file, a mapping, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_mapping(path: Path, mapping: dict) -> Path:
    path.write_text(yaml.safe_dump(mapping, sort_keys=False), encoding="utf-8")
    return path


class Cli:
    """``crmsync`` in a subprocess of this interpreter: ``json("run", "-c", m)`` returns what
    ``crmsync run -c m --json`` prints."""

    def json(self, *args: Any, env: dict[str, str] | None = None) -> dict:
        done = subprocess.run([sys.executable, "-m", "crmsync.cli", *map(str, args), "--json"],
                              capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, check=False)
        if not done.stdout.strip():
            raise AssertionError(f"crmsync {' '.join(map(str, args))}: {done.stderr}")
        return json.loads(done.stdout)
