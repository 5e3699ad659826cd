"""Careless and hostile input (issue 15): nothing hangs, nothing crashes, nothing leaks.

Every case runs the real CLI, most of them in a subprocess with a timeout (a hang fails the
test, it does not stall the suite), and checks the exit code, that the message names the file
and line (or the argument) and says what to do, and that no Python traceback reaches the
user. The corpus is in tests/data/hostile/: ``base/`` is a good project (mapping, contacts,
blocklist) that each case copies and breaks in one way; the large files (50 MB) are made
at test time, never committed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

HOSTILE = Path(__file__).parent / "data" / "hostile"
TIMEOUT = 30  # seconds any one command may take on the corpus (the slowest takes ~2 s)


def project(tmp_path: Path, mapping: str | None = None) -> Path:
    """A copy of the good project in ``tmp_path``, its mapping replaced by the corpus's
    ``mappings/<mapping>``; returns the mapping's path."""
    shutil.copytree(HOSTILE / "base", tmp_path, dirs_exist_ok=True)
    for f in (HOSTILE / "suppressions").iterdir():
        shutil.copy(f, tmp_path / f.name)
    if mapping:
        shutil.copy(HOSTILE / "mappings" / mapping, tmp_path / "crmsync.yaml")
    return tmp_path / "crmsync.yaml"


def crmsync(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, killed (and the test failed) after ``timeout`` seconds."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("CRMSYNC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "crmsync.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def clean(res: subprocess.CompletedProcess | object) -> str:
    """The command's whole output, checked to hold no Python traceback."""
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    return out


def config_error(res, *expected: str) -> str:
    """Exit 2, no traceback, and every ``expected`` text in the output."""
    out = clean(res)
    assert res.returncode == 2, out
    for text in expected:
        assert text in out, (text, out)
    return out


# ---------------------------------------------------------------- resources


def line_of(path: Path, snippet: str) -> int:
    text = path.read_bytes().decode("utf-8", "replace").splitlines()
    return next(i for i, t in enumerate(text, 1) if snippet in t)


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_billion_laughs_refused_at_once(tmp_path, command):
    cfg = project(tmp_path, "billion_laughs.yaml")
    res = crmsync(command, "-c", cfg, cwd=tmp_path)
    config_error(res, f"crmsync.yaml:{line_of(cfg, 'a0: &a0')}", "billion laughs",
                 "fewer, flatter aliases")


def test_self_referring_alias(tmp_path):
    cfg = project(tmp_path, "self_alias.yaml")
    config_error(crmsync("validate", "-c", cfg, cwd=tmp_path),
                 f"crmsync.yaml:{line_of(cfg, 'x-loop')}", "refers to the collection")


def test_deep_nesting(tmp_path):
    cfg = project(tmp_path, "deep_nesting.yaml")
    config_error(crmsync("validate", "-c", cfg, cwd=tmp_path),
                 f"crmsync.yaml:{line_of(cfg, 'x-deep')}", "nested more than", "flatten")


def test_merge_key_alias_still_allowed(tmp_path):
    """Aliases are bounded, not banned: `<<: *defaults` is how mappings share options."""
    cfg = project(tmp_path, "merge_key_ok.yaml")
    res = crmsync("validate", "-c", cfg, cwd=tmp_path)
    assert res.returncode == 0, clean(res)


def test_50mb_mapping_refused_by_size(tmp_path):
    cfg = project(tmp_path)
    seg = ("  s{0}:\n    description: generated\n    owner: a@b.example\n"
           "    where: {{ field: lifecyclestage, eq: customer }}\n")
    with cfg.open("a") as fh:
        fh.write("x-generated:\n")
        i = 0
        while fh.tell() < 50 << 20:
            fh.write("".join(seg.format(j) for j in range(i, i + 1000)))
            i += 1000
    res = crmsync("validate", "-c", cfg, cwd=tmp_path)
    config_error(res, "crmsync.yaml", "larger than 1024 KB", "split it")


def test_repeated_warnings_are_summarised(tmp_path):
    """Just under the size cap: ~7,000 segments without description or owner, feeding no
    destination. validate reports each kind of warning once with a count and a few names."""
    cfg = project(tmp_path)
    text = cfg.read_text().replace("segments:\n", "segments:\n" + "".join(
        f"  s{i}: {{ where: {{ field: lifecyclestage, eq: customer }} }}\n"
        for i in range(7000)))
    cfg.write_text(text)
    assert len(text) < 1 << 20
    res = crmsync("validate", "-c", cfg, cwd=tmp_path)
    out = clean(res)
    assert res.returncode == 0, out
    lines = out.splitlines()
    assert len(lines) < 40, len(lines)
    assert "7000 × " in out or "7,000 × " in out, out[:2000]
    assert "and 6997 more" in out or "and 6,997 more" in out, out[:2000]
    # the JSON output keeps every finding (machines count them)
    data = json.loads(crmsync("validate", "-c", cfg, "--json", cwd=tmp_path).stdout)
    assert len(data) >= 3 * 7000


# ---------------------------------------------------------------- crashes -> clear errors


def test_mapping_not_utf8(tmp_path):
    cfg = project(tmp_path, "latin1.yaml")
    config_error(crmsync("validate", "-c", cfg, cwd=tmp_path),
                 f"crmsync.yaml:{line_of(cfg, 'Clients pay')}", "not UTF-8", "save it as UTF-8")


def test_python_object_tag_refused(tmp_path):
    cfg = project(tmp_path, "python_object.yaml")
    for command in ("validate", "run"):
        res = crmsync(command, "-c", cfg, cwd=tmp_path)
        config_error(res, f"crmsync.yaml:{line_of(cfg, 'python/object')}", "remove the tag")
    assert not (tmp_path / "pwned.txt").exists()


def test_within_last_overflow(tmp_path):
    cfg = project(tmp_path, "within_overflow.yaml")
    for command in ("validate", "plan"):
        config_error(crmsync(command, "-c", cfg, cwd=tmp_path),
                     f"crmsync.yaml:{line_of(cfg, 'within_last')}", "too long", "36525d")


def test_dotenv_bad_bytes(tmp_path):
    cfg = project(tmp_path)
    shutil.copy(HOSTILE / "env" / "bad_bytes.env", tmp_path / ".env")
    for command in ("validate", "run"):
        config_error(crmsync(command, "-c", cfg, cwd=tmp_path), ".env:2", "not UTF-8",
                     "save .env as UTF-8")


def test_mapping_path_is_a_folder(tmp_path):
    project(tmp_path)
    (tmp_path / "folder.yaml").mkdir()
    for command in ("validate", "run", "history"):
        config_error(crmsync(command, "-c", tmp_path / "folder.yaml", cwd=tmp_path),
                     "is a folder", "-c PATH")


def test_suppression_file_not_utf8_found_by_validate(tmp_path):
    cfg = project(tmp_path, "latin1_suppression.yaml")
    line = line_of(cfg, "latin1.txt")
    config_error(crmsync("validate", "-c", cfg, cwd=tmp_path), f"crmsync.yaml:{line}",
                 "latin1.txt", "not UTF-8", "UTF-8")
    config_error(crmsync("run", "-c", cfg, cwd=tmp_path), f"crmsync.yaml:{line}", "not UTF-8")


@pytest.mark.parametrize("mapping", ["store_under_proc.yaml", "store_under_file.yaml"])
def test_unwritable_store_found_by_validate(tmp_path, mapping):
    cfg = project(tmp_path, mapping)
    line = line_of(cfg, "store:")
    for command in ("validate", "run"):
        config_error(crmsync(command, "-c", cfg, cwd=tmp_path), f"crmsync.yaml:{line}",
                     "store", "folder you can write")


def test_empty_key_is_a_validation_error(tmp_path):
    cfg = project(tmp_path, "empty_key.yaml")
    config_error(crmsync("validate", "-c", cfg, cwd=tmp_path),
                 f"crmsync.yaml:{line_of(cfg, 'key:')}", "sources.crm.key", "key:")


# ---------------------------------------------------------------- bad arguments, plan files


def test_history_negative_limit(tmp_path):
    cfg = project(tmp_path)
    res = crmsync("history", "-c", cfg, "--limit", "-1", cwd=tmp_path)
    config_error(res, "--limit", "greater than or equal to")


def _plan(cli, cfg: Path, out: Path) -> dict:
    res = cli("plan", "-c", cfg, "-o", out)
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


@pytest.mark.parametrize(("field", "value", "said"), [
    ("as_of", 12345, "as_of: must be an ISO 8601 time (text), not int"),
    ("as_of", "yesterday", "as_of: cannot read 'yesterday'"),
    ("mapping", 42, "mapping: must be the mapping file's path (text), not int"),
    ("mapping", ["crmsync.yaml"], "mapping: must be the mapping file's path (text), not list"),
    ("snapshot_version", "3", "snapshot_version: must be a whole number, not str"),
    ("changes", {"leads-file": "all of them"}, "changes.leads-file: must be a list"),
])
def test_apply_plan_with_wrong_types(tmp_path, cli, field, value, said):
    cfg = project(tmp_path)
    plan = _plan(cli, cfg, tmp_path / "plan.json")
    plan[field] = value
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    res = cli("apply", tmp_path / "plan.json")
    assert res.exit_code == 2, res.output
    assert f"plan.json: {said}" in res.stderr and "crmsync plan" in res.stderr, res.stderr
    assert "Traceback" not in res.output


def test_plan_applies_from_another_folder(tmp_path):
    project(tmp_path)
    res = crmsync("plan", "-c", "crmsync.yaml", "-o", "plans/plan.json", cwd=tmp_path)
    assert res.returncode == 0, clean(res)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = crmsync("apply", "../plans/plan.json", cwd=elsewhere)
    assert res.returncode == 0, clean(res)
    assert (tmp_path / "out" / "customers.csv").exists()


def test_unknown_only_exits_2_before_pulling(tmp_path, cli):
    cfg = project(tmp_path)
    for command in ("run", "plan"):
        res = crmsync(command, "-c", cfg, "--only", "nope", cwd=tmp_path)
        config_error(res, "--only names no destination 'nope'", "customers-file, leads-file")
    assert json.loads(cli("history", "-c", cfg, "--json").stdout) == []
    res = cli("plan", "-c", cfg, "--offline", "--json")  # nothing was pulled: no snapshot
    assert res.exit_code != 0 or json.loads(res.stdout)["segments"]["customers"]["matched"] == 0


def test_history_records_config_error_as_exit_2(tmp_path, cli, monkeypatch):
    """The source file loses its key column between the check and the pull (a new export
    landing mid-run): exit 2, and history says so."""
    from crmsync.connectors import files

    cfg = project(tmp_path)
    pull = files._FileSource.pull

    def export_lands(self, state):
        (tmp_path / "contacts.csv").write_text("uid,email\nu1,a@acme.example\n")
        files._HEADERS.clear()
        self._columns = None
        return pull(self, state)

    monkeypatch.setattr(files._FileSource, "pull", export_lands)
    res = cli("run", "-c", cfg)
    assert res.exit_code == 2, res.output
    assert "no column 'id'" in res.stderr and "crmsync.yaml" in res.stderr, res.stderr
    monkeypatch.undo()
    runs = json.loads(cli("history", "-c", cfg, "--json").stdout)
    assert (runs[0]["status"], runs[0]["exit_code"]) == ("config error", 2)


def test_explain_trims_its_argument(tmp_path, cli):
    cfg = project(tmp_path)
    assert cli("run", "-c", cfg).exit_code == 0
    res = cli("explain", " c000014 ", "-c", cfg, "--json")
    assert res.exit_code == 0, res.output
    assert "c000014" in res.stdout and json.loads(res.stdout)


@pytest.mark.parametrize("fmt", ["json", "human"])
def test_unexpected_error_is_one_line_naming_what_failed(tmp_path, cli, monkeypatch, fmt):
    """A bug (here: the evaluation raising KeyError) is one line, in the log format asked
    for, naming the command, the error and where it was raised; the traceback only with
    CRMSYNC_DEBUG=1."""
    from crmsync.sync.pipeline import runner

    cfg = project(tmp_path)

    def broken(*a, **k):
        raise KeyError("m:customers")

    monkeypatch.setattr(runner.Evaluation, "build", broken)
    res = cli("plan", "-c", cfg, "--log-format", fmt)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    last = res.stderr.strip().splitlines()[-1]
    if fmt == "json":
        assert all(json.loads(line) for line in res.stderr.strip().splitlines())
        last = json.loads(last)["msg"]
    assert "unexpected error in plan: KeyError: 'm:customers'" in last, res.stderr
    assert "runner.py" in last and "CRMSYNC_DEBUG=1" in last
    with pytest.raises(KeyError):
        cli("plan", "-c", cfg, env={"CRMSYNC_DEBUG": "1"})


# ---------------------------------------------------------------- nothing leaks


def _members(path: Path) -> dict[str, list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return {r[0]: r[1:] for r in rows[1:]}


def test_kill_during_csv_write_leaves_nothing_the_next_run_keeps(tmp_path):
    """SIGKILL while the csv destination writes a big file (once the temp file is written,
    before it is put in place: a write is too fast to catch midway by polling): the temp
    file it leaves is found and removed by the next run, which writes the file in full."""
    cfg = project(tmp_path)
    with (tmp_path / "contacts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "phone", "first_name", "country", "lifecyclestage",
                    "consent", "orders"])
        w.writerows([f"k{i:07d}", f"p{i}@acme.example", "", f"N{i}", "US", "customer",
                     "true", "1"] for i in range(300_000))
    # the first replace puts the empty file in place when the destination opens; the
    # second is the big write
    killpoint = Path(__file__).with_name("killpoint.py")
    proc = subprocess.run([sys.executable, str(killpoint), "before:replace:2", "--", "run",
                           "-c", str(cfg)], cwd=tmp_path, capture_output=True,
                          timeout=TIMEOUT * 4)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-500:]
    tmp = tmp_path / "out" / ".customers.csv.crmsync-tmp"
    assert tmp.stat().st_size > 1 << 20  # what the kill left: contacts' emails
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
    res = crmsync("run", "-c", cfg, cwd=tmp_path, timeout=TIMEOUT * 4)
    assert res.returncode == 0, clean(res)
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert len(_members(tmp_path / "out" / "customers.csv")) == 300_000


def test_old_random_temp_files_are_removed(tmp_path, cli):
    cfg = project(tmp_path)
    (tmp_path / "out").mkdir()
    stale = tmp_path / "out" / ".customers.csv.k2j4_x9a"  # tempfile.mkstemp's, before
    stale.write_text("key,email\nc1,leaked@acme.example\n")
    keep = tmp_path / "out" / ".customers.csv.notes"
    keep.write_text("not ours")
    assert cli("run", "-c", cfg).exit_code == 0
    assert not stale.exists() and keep.exists()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_files_holding_pii_are_private(tmp_path):
    cfg = project(tmp_path)
    os.umask(0o022)
    res = crmsync("plan", "-c", cfg, "-o", "plan.json", cwd=tmp_path)
    assert res.returncode == 0, clean(res)
    assert crmsync("run", "-c", cfg, cwd=tmp_path).returncode == 0
    store = tmp_path / ".crmsync"
    assert _mode(store) == 0o700
    files = [*store.iterdir(), tmp_path / "plan.json", *(tmp_path / "out").iterdir()]
    assert any(f.name.endswith(".duckdb") for f in files)
    assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}


def test_store_of_an_earlier_version_made_private(tmp_path, cli):
    cfg = project(tmp_path)
    assert cli("run", "-c", cfg).exit_code == 0
    db = tmp_path / ".crmsync" / "state.duckdb"
    db.chmod(0o644)
    assert cli("history", "-c", cfg).exit_code == 0
    assert _mode(db) == 0o600


def test_json_warnings_redacted_like_logs(tmp_path, cli):
    """With key: email, a warning about repeated keys names emails: masked on stdout too."""
    cfg = project(tmp_path)
    cfg.write_text(cfg.read_text().replace("    key: id\n", "    key: email\n"))
    with (tmp_path / "contacts.csv").open("a") as fh:
        fh.write("c999999,person3@acme.example,,Dup,US,customer,true,1\n")
    for command in ("plan", "run"):
        res = cli(command, "-c", cfg, "--json")
        assert "person3@acme.example" not in res.stdout, res.stdout
        assert "person3@acme.example" not in res.stderr
        assert any("repeat the key" in w and "<email>" in w
                   for w in json.loads(res.stdout)["warnings"]), res.stdout


def test_short_environment_values_are_masked(tmp_path, cli):
    from crmsync.sync.logs import redact

    cfg = project(tmp_path)
    cfg.write_text(cfg.read_text().replace(
        "    owner: revops@acme.example\n", "    owner: ${OWNER_TOKEN}\n"))
    res = cli("validate", "-c", cfg, env={"OWNER_TOKEN": "tok7777"})
    assert res.exit_code == 0, res.output
    assert redact("Authorization: Bearer tok7777") == "Authorization: Bearer <secret>"
    assert redact("status 200, tok77777 kept") == "status 200, tok77777 kept"


def test_nul_byte_and_json_object_are_invalid_identifiers(tmp_path, cli):
    cfg = project(tmp_path)
    shutil.copy(HOSTILE / "csv" / "nul_email.csv", tmp_path / "contacts.csv")
    res = cli("run", "-c", cfg)
    assert res.exit_code == 0, res.output
    out = (tmp_path / "out" / "customers.csv").read_bytes()
    assert b"\x00" not in out
    runs = json.loads(cli("history", "-c", cfg, "--json").stdout)
    dest = next(d for d in runs[0]["destinations"] if d["dest"] == "leads-file")
    assert dest["no_identifier"] == 1
    assert dest["reject_reasons"][0]["keys"] == ["c000003"]
    assert "no usable value for email" in dest["reject_reasons"][0]["reason"]
    # a JSON lines source with an object where the email should be
    shutil.copy(HOSTILE / "csv" / "json_identifier.jsonl", tmp_path / "contacts.jsonl")
    cfg.write_text(cfg.read_text().replace("type: csv\n    path: contacts.csv",
                                           "type: jsonl\n    path: contacts.jsonl"))
    res = cli("run", "-c", cfg)
    assert res.exit_code == 0, res.output
    assert b"nested" not in (tmp_path / "out" / "leads.csv").read_bytes()
    runs = json.loads(cli("history", "-c", cfg, "--json").stdout)
    dest = next(d for d in runs[0]["destinations"] if d["dest"] == "leads-file")
    assert dest["reject_reasons"][0]["keys"] == ["j2"], dest


# ---------------------------------------------------------------- csv destination drift


def test_csv_file_edited_by_hand_is_put_right(tmp_path, cli):
    cfg = project(tmp_path)
    assert cli("run", "-c", cfg).exit_code == 0
    path = tmp_path / "out" / "customers.csv"
    want = _members(path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], *lines[2:], "stranger,evil@x.example,Eve"]) + "\n")
    res = cli("run", "-c", cfg)
    assert res.exit_code == 0, res.output
    assert _members(path) == want
    res = cli("run", "-c", cfg)  # and then nothing to do
    assert "customers-file: ok +0 -0 ~0 =9 " in res.stdout, res.stdout


def test_csv_file_replaced_by_a_folder_fails_the_destination(tmp_path, cli):
    cfg = project(tmp_path)
    assert cli("run", "-c", cfg).exit_code == 0
    path = tmp_path / "out" / "customers.csv"
    path.unlink()
    path.mkdir()
    res = cli("run", "-c", cfg)
    assert res.exit_code == 1, res.output
    assert "customers-file: failed" in res.stdout and "is not a file" in res.stdout
    assert "leads-file: ok" in res.stdout
    assert "Traceback" not in res.output


def test_resync_of_an_unchanged_csv_file_reports_unchanged(tmp_path, cli):
    cfg = project(tmp_path)
    assert cli("run", "-c", cfg).exit_code == 0
    assert cli("resync", "customers-file", "-c", cfg).exit_code == 0
    res = cli("run", "-c", cfg)
    assert "customers-file: ok +0 -0 ~0 =9 " in res.stdout, res.stdout


# ---------------------------------------------------------------- behaviour users rely on

_HOLD = """
import sys, time
from crmsync.sync.store.database import Store
store = Store.open(sys.argv[1])
store.acquire()  # what a run holds: the store's write connection and its lock
print("held", flush=True)
time.sleep(120)
"""


def test_read_only_commands_work_while_a_run_holds_the_store(tmp_path, cli):
    cfg = project(tmp_path)
    assert cli("run", "-c", cfg).exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", _HOLD,
                               str(tmp_path / ".crmsync" / "state.duckdb")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = crmsync("history", "-c", cfg, "--json", cwd=tmp_path)
        assert res.returncode == 0, clean(res)
        assert json.loads(res.stdout)[0]["status"] == "ok"
        res = crmsync("report", "-c", cfg, "-o", "r.html", cwd=tmp_path)
        assert res.returncode == 0 and (tmp_path / "r.html").exists(), clean(res)
        res = crmsync("segments", "-c", cfg, "--offline", "--json", cwd=tmp_path)
        assert res.returncode == 0, clean(res)
        assert json.loads(res.stdout)["segments"]["customers"]["matched"] == 10
        res = crmsync("explain", "c000014", "-c", cfg, "--offline", cwd=tmp_path)
        assert res.returncode == 0 and "c000014" in res.stdout, clean(res)
        for command in ("run", "plan"):  # those that write wait their turn: exit 4
            res = crmsync(command, "-c", cfg, cwd=tmp_path)
            assert res.returncode == 4, clean(res)
    finally:
        holder.kill()
        holder.wait()
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("crmsync-read-*/state.duckdb"))


def test_validate_reports_the_tiny_segment_lint_segments_reports(tmp_path, cli):
    cfg = project(tmp_path, "tiny_segment.yaml")
    res = crmsync("validate", "-c", cfg, cwd=tmp_path)  # no store yet: the file is read
    out = clean(res)
    assert res.returncode == 0, out
    tiny = [line for line in out.splitlines() if "customers" in line and "15" in line]
    assert tiny and tiny[0].startswith("warning:"), out
    assert not (tmp_path / ".crmsync").exists()  # validate wrote no store
    assert crmsync("validate", "-c", cfg, "--strict", cwd=tmp_path).returncode == 1
    assert cli("run", "-c", cfg).exit_code == 0
    seg = json.loads(cli("segments", "-c", cfg, "--json").stdout)["findings"]
    val = json.loads(cli("validate", "-c", cfg, "--json").stdout)  # over the snapshot now
    assert {(f["path"], f["message"]) for f in seg} <= {(f["path"], f["message"]) for f in val}


def test_destination_failure_is_one_line_on_stderr(tmp_path, cli, monkeypatch):
    """An SDK error nobody classified (chained, with a 6 KB body): one summary line per
    destination naming status, code, message and what to do; no traceback, no body."""
    from crmsync.connectors import files

    class ApiException(Exception):
        status = 401
        body = json.dumps({"status": "error", "category": "INVALID_AUTHENTICATION",
                           "message": "Authentication credentials not found.",
                           "context": {"detail": ["x" * 6000]}})

    def refuse(self, op, changes):
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as inner:
            raise ApiException("(401)\nReason: Unauthorized\nHTTP response headers: "
                               "{'Authorization': 'Bearer tok'}") from inner

    monkeypatch.setattr(files.CsvDestination, "write", refuse)
    cfg = project(tmp_path)
    res = cli("run", "-c", cfg)
    assert res.exit_code == 1
    assert "Traceback" not in res.output and "xxxxxxxxxx" not in res.output
    failed = [line for line in res.stderr.splitlines() if "customers-file: failed" in line]
    assert len(failed) == 1, res.stderr
    assert ("HTTP 401 INVALID_AUTHENTICATION: Authentication credentials not found.; check "
            "the connection's credentials") in failed[0]
    assert len(res.stderr.splitlines()) <= 5, res.stderr


def test_exit_code_precedence_safeguard_over_failure(tmp_path, cli):
    """README: one destination failing (1) and another tripping a safeguard (3) exit 3."""
    cfg = project(tmp_path)
    assert cli("run", "-c", cfg).exit_code == 0
    cfg.write_text(cfg.read_text().replace("lint: { min_size: 1 }",
                                           "lint: { min_size: 1 }\nsafeguards: "
                                           "{ max_remove_fraction: 0.1 }"))
    text = (tmp_path / "contacts.csv").read_text().replace(",lead,", ",other,")
    (tmp_path / "contacts.csv").write_text(text)  # every lead leaves: leads-file trips
    path = tmp_path / "out" / "customers.csv"
    path.unlink()
    path.mkdir()  # customers-file fails
    res = cli("run", "-c", cfg)
    assert "customers-file: failed" in res.stdout and "leads-file: safeguard" in res.stdout
    assert res.exit_code == 3, res.output


def test_readme_example_mapping_passes_validate(tmp_path):
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = re.search(r"## Mapping file.*?```yaml\n(.*?)```", readme, re.S).group(1)
    shutil.copytree(Path(__file__).parents[1] / "mappings" / "demo", tmp_path / "demo")
    (tmp_path / "crmsync.yaml").write_text(example)
    res = crmsync("validate", "-c", "crmsync.yaml", cwd=tmp_path,
                  env={"HUBSPOT_TOKEN": "pat-na1-example"})
    out = clean(res)
    assert res.returncode == 0 and "error" not in out, out
    table = readme.split("## Commands", 1)[1].split("## Mapping file", 1)[0]
    for command in ("validate", "plan", "apply", "run", "history", "resync", "explain",
                    "segments", "report", "lift"):
        assert f"`crmsync {command}" in table, command


def test_progress_lines_without_a_terminal(tmp_path):
    cfg = project(tmp_path)
    res = crmsync("run", "-c", cfg, cwd=tmp_path)
    assert res.returncode == 0, clean(res)
    assert "pushing customers-file: 9 of 9" in res.stderr, res.stderr


def test_on_one_terminal_summary_lines_are_not_repeated(tmp_path):
    """stdout and stderr on one terminal (a person at a shell): each destination's summary
    line once (stdout), a progress bar that clears itself, no traceback."""
    import pty

    cfg = project(tmp_path)
    main, tty = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "crmsync.cli", "run", "-c", str(cfg)],
                            cwd=tmp_path, stdin=tty, stdout=tty, stderr=tty, env=env)
    os.close(tty)
    out = b""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=TIMEOUT) == 0
    os.close(main)
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode("utf-8", "replace"))  # no colours
    assert "Traceback" not in text
    assert text.count("customers-file: ok +9") == 1, text
    assert text.count("leads-file: ok +10") == 1, text


def test_5mb_unquoted_field_is_reported_as_too_long(tmp_path, cli):
    cfg = project(tmp_path)
    with (tmp_path / "contacts.csv").open("a") as fh:
        fh.write("c000099,big@acme.example,," + "x" * (5 << 20) + ",US,lead,true,1\n")
        fh.write("c000100,after@acme.example,,After,US,lead,true,1\n")
    res = cli("plan", "-c", cfg, "--json")
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    said = " ".join(plan["warnings"])
    assert "line 22: a value is longer than 128 KB" in said, said
    assert "not closed" not in said
    assert plan["segments"]["leads"]["matched"] == 11  # the row after it is read


# ---------------------------------------------------------------- more of the corpus


@pytest.mark.parametrize(("mapping", "code", "said"), [
    ("empty.yaml", 2, ["crmsync.yaml:1", "must be a YAML mapping", "version: 1"]),
    ("list_at_top.yaml", 2, ["crmsync.yaml:1", "must be a YAML mapping"]),
    ("tab_indented.yaml", 2, ["crmsync.yaml:6", "not valid YAML", "indentation"]),
    ("include_tag.yaml", 2, ["crmsync.yaml:14", "'!include'", "remove the tag"]),
    ("binary.yaml", 2, ["crmsync.yaml:2", "not UTF-8", "save it as UTF-8"]),
    ("holdout_inf.yaml", 2, ["crmsync.yaml:16", "segments.customers.holdout", "100%"]),
    ("within_negative.yaml", 2, ["crmsync.yaml:19", "segments.leads.where"]),
    # RE2 (DuckDB) has no catastrophic backtracking: a "regex bomb" is just a regex
    ("regex_bomb.yaml", 0, ["segment 'leads' is empty"]),
    ("huge_int_key.yaml", 0, ["is tiny"]),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_corpus_mapping(tmp_path, mapping, code, said, command):
    cfg = project(tmp_path, mapping)
    res = crmsync(command, "-c", cfg, cwd=tmp_path)
    out = clean(res)
    assert res.returncode == code, out
    if command == "validate" or code:
        for text in said:
            assert text in out, (text, out)


def test_nesting_past_libyaml_limit(tmp_path):
    cfg = project(tmp_path)
    cfg.write_text("version: 1\nx: " + "[" * 200_000 + "]" * 200_000 + "\n")
    config_error(crmsync("validate", "-c", cfg, cwd=tmp_path), "crmsync.yaml:2",
                 "not valid YAML")
