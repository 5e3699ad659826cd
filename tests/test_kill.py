"""A real `crmsync run` killed with SIGKILL mid-push, at many points, then re-run: the
destination converges to the desired members with nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import read_csv_keys, write_csv, write_mapping

N = 3000


def _mapping(tmp_path, stage_of):
    write_csv(tmp_path / "contacts.csv", ["id", "email", "stage"],
              [[f"k{i:05d}", f"u{i}@x.example", stage_of(i)] for i in range(N)])
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "identity": {"email": "email"}}},
        "segments": {"s": {"where": {"field": "stage", "eq": "in"}}},
        "destinations": [{"name": "d", "segment": "s", "type": "csv", "path": "out.csv",
                          "identifiers": ["email"], "batch_size": 20}],
    })


def _rows(path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except OSError:
        return 0


def _run(m, kill_at_rows: int | None):
    """Run crmsync; with ``kill_at_rows``, SIGKILL it once the file holds that many members.
    Returns (exit code, output, members in the file when killed)."""
    cmd = [sys.executable, "-m", "crmsync.cli", "run", "-c", str(m)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if kill_at_rows is None:
        out, err = p.communicate(timeout=120)
        return p.returncode, out + err, None
    out_file = m.parent / "out.csv"
    deadline = time.monotonic() + 60
    while p.poll() is None and _rows(out_file) < kill_at_rows and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    return p.returncode, b"", _rows(out_file)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 200, 500, 900, 1300])
def test_sigkill_mid_push_then_rerun_converges(tmp_path, kill_at):
    m = _mapping(tmp_path, lambda i: "in" if i % 2 else "out")
    code, _, written = _run(m, kill_at)
    assert code == -signal.SIGKILL
    assert kill_at <= written < N // 2  # killed in the middle of the push
    # change the data between the killed run and the re-run, too
    m = _mapping(tmp_path, lambda i: "in" if i % 3 else "out")
    code, out, _ = _run(m, None)
    assert code == 0, out.decode()
    want = {f"k{i:05d}" for i in range(N) if i % 3}
    assert read_csv_keys(tmp_path / "out.csv") == want
    code, out, _ = _run(m, None)  # and a third run has nothing to do
    assert code == 0 and b"+0 -0 ~0" in out, out.decode()
    runs = subprocess.run([sys.executable, "-m", "crmsync.cli", "history", "-c", str(m),
                           "--json"], capture_output=True, check=True).stdout
    assert [r["status"] for r in json.loads(runs)] == ["ok", "ok", "interrupted"]
