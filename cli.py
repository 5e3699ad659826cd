"""`crmsync`: the command line. Parsing and printing only; the work is in sync/."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from .sync.errors import ConfigError, CrmsyncError, Problem
from .sync.logs import setup_logging

# no local variables in tracebacks: they may hold secrets or contacts' data
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Keep CRM segments current as lists, campaigns and ad audiences.")


_COMMAND = ["crmsync"]  # the command being run, for the message of an unexpected error


@app.callback()
def _command(ctx: typer.Context) -> None:
    _COMMAND[0] = ctx.invoked_subcommand or "crmsync"


class LogFormatName(StrEnum):
    human = "human"
    json = "json"


Config = Annotated[Path, typer.Option("-c", "--config", help="Mapping file.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AsOf = Annotated[str | None, typer.Option("--as-of", help="Fix 'now' (ISO 8601).")]
LogFormat = Annotated[LogFormatName, typer.Option("--log-format", help="Logs on stderr.")]
DEFAULT = Path("crmsync.yaml")


def _as_of(value: str | None) -> datetime | None:
    return _parse_date("--as-of", value)


def _parse_date(option: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    from .sync.mapping.values import parse_datetime

    dt = parse_datetime(value)
    if dt is None:
        raise ConfigError([Problem(option, f"cannot read {value!r} as ISO 8601",
                                   f"e.g. {option} 2026-11-23T00:00:00Z")])
    return dt


def _out(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=1, default=str))
    else:
        human()


@contextmanager
def _errors(log_format: LogFormatName = LogFormatName.human):
    """Map crmsync errors to their exit codes with a clear message on stderr (a JSON line
    each under ``--log-format json``, like every other log line)."""
    if log_format is LogFormatName.json:
        setup_logging("json")
    log = logging.getLogger("crmsync")

    def say(msg: str) -> None:
        if log_format is LogFormatName.json:
            log.error(msg)
        else:
            typer.echo(f"error: {msg}", err=True)

    try:
        yield
    except ConfigError as exc:
        for p in exc.problems:
            say(str(p))
        raise typer.Exit(2) from None
    except CrmsyncError as exc:
        say(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except (typer.Exit, typer.Abort):
        raise  # the command's own exit code
    except Exception as exc:
        if os.environ.get("CRMSYNC_DEBUG"):
            raise  # the traceback, for a bug report
        log.debug("unexpected error", exc_info=True)  # the traceback, at DEBUG only
        say(unexpected(exc))
        raise typer.Exit(1) from None


def unexpected(exc: BaseException) -> str:
    """A bug's one line: the command, the error, where it was raised in crmsync's code."""
    import traceback

    from .sync.logs import error_text

    name = _COMMAND[0]
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "crmsync" in f.filename or "/sync/" in f.filename]
    where = ""
    if frames:
        f = frames[-1]
        where = f" (at {Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} " \
                f"in {f.name})"
    return (f"unexpected error in {name}: {error_text(exc)}{where}; this is a bug: rerun with "
            "CRMSYNC_DEBUG=1 for the traceback and report it")


def _runner(config: Path, as_of: str | None = None,
            log_format: LogFormatName = LogFormatName.human, *, pull: bool = True,
            read_only: bool = False):
    """A runner over the checked mapping; ``pull=False`` (commands that read only the
    store) needs no platform secret in the environment, nor the source files."""
    from .sync.mapping.loader import load
    from .sync.pipeline.runner import Runner

    setup_logging(log_format.value)
    project = load(config, pull=pull)
    from .sync.pipeline.progress import make

    progress = make(log_format is LogFormatName.human)  # a bar on a terminal, else lines
    return Runner(project, as_of=_as_of(as_of), progress=progress, pull=pull,
                  read_only=read_only)


def _print_plan(res) -> None:
    for name, seg in res.segments.items():
        typer.echo(f"segment {name}: {seg['matched']} matched, {seg['held_out']} held out")
    for d in res.destinations:
        typer.echo(d.plan_line())
        if d.readback:
            typer.echo(f"  as last reported by the platform: {json.dumps(d.readback)}")


@app.command()
def validate(config: Config = DEFAULT, strict: Annotated[bool, typer.Option(
        "--strict", help="Warnings fail (exit 1).")] = False, as_json: Json = False) -> None:
    """Check the mapping (schema, semantics, governance lint). No network."""
    from .sync.mapping.summary import problem_lines
    from .sync.pipeline.checks import check_project
    from .sync.reports import data_lint

    with _errors():
        problems = check_project(config)
        if not any(p.severity == "error" for p in problems):
            problems += data_lint.problems(config)  # as `segments` reports it
        errors = [p for p in problems if p.severity == "error"]
        _out([p.to_dict() for p in problems], as_json,
             lambda: [typer.echo(line, err=True) for line in problem_lines(problems)]
             or typer.echo("ok"))
        if errors:
            raise typer.Exit(2)
        if problems and strict:
            raise typer.Exit(1)


@app.command()
def plan(config: Config = DEFAULT, as_json: Json = False, as_of: AsOf = None,
         offline: Annotated[bool, typer.Option("--offline", help="Use the stored snapshot.")] = False,
         output: Annotated[Path | None, typer.Option("-o", "--output", help="Write a plan file.")] = None,
         only: Annotated[list[str] | None, typer.Option("--only")] = None,
         log_format: LogFormat = "human") -> None:
    """Pull, evaluate and show what a run would change. Writes only the local snapshot."""
    with _errors(log_format):
        with _runner(config, as_of, log_format, pull=not offline) as runner:
            res = runner.plan(offline=offline, only=only)
            if output:
                _write(output, json.dumps(runner.plan_file(res), indent=1))
        _out(res.plan_json(), as_json, lambda: _print_plan(res))


@app.command()
def run(config: Config = DEFAULT, as_of: AsOf = None,
        only: Annotated[list[str] | None, typer.Option("--only", help="Limit destinations.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Override safeguards.")] = False,
        as_json: Json = False, log_format: LogFormat = "human") -> None:
    """The whole cycle: pull, evaluate, diff, push, record."""
    with _errors(log_format):
        with _runner(config, as_of, log_format) as runner:
            res = runner.run(only=only, dry_run=dry_run, force=force)
        _report(res, as_json)
        raise typer.Exit(res.exit_code)


def _report(res, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(res.run_json(), indent=1, default=str))
    else:
        for d in res.destinations:
            typer.echo(d.summary())


def _write(path: Path, text: str) -> None:
    """Write an output file (its folder made if need be), or exit 2 saying why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds contacts
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot write this file ({exc.strerror})",
                                   "give a path in a folder you can write to",
                                   file=str(path))]) from None


def _read_plan(path: Path) -> dict[str, Any]:
    fix = "make one with: crmsync plan -c MAPPING -o plan.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read the plan file ({exc.strerror})", fix,
                                   file=str(path))]) from None
    except ValueError:
        raise ConfigError([Problem("", "not a plan file (not JSON)", fix,
                                   file=str(path))]) from None
    need = ("mapping", "as_of", "snapshot_version", "changes")
    if not isinstance(data, dict) or any(k not in data for k in need) \
            or not isinstance(data["changes"], dict):
        raise ConfigError([Problem("", "not a crmsync plan file (it lacks "
                                   f"{', '.join(need)})", fix, file=str(path))])
    from .sync.pipeline.plan_file import check_fields

    check_fields(data, path)
    return data


@app.command()
def apply(plan_file: Annotated[Path, typer.Argument(help="A plan written by plan -o.")],
          config: Annotated[Path | None, typer.Option("-c", "--config")] = None,
          force: Annotated[bool, typer.Option("--force")] = False, as_json: Json = False,
          log_format: LogFormat = "human") -> None:
    """Push exactly a reviewed plan; refuses a plan whose snapshot is stale."""
    with _errors(log_format):
        data = _read_plan(plan_file)
        from .sync.pipeline.plan_file import mapping_of

        with _runner(config or mapping_of(data, plan_file), None, log_format) as runner:
            res = runner.apply(data, force=force)
        _report(res, as_json)
        raise typer.Exit(res.exit_code)


@app.command()
def history(config: Config = DEFAULT, as_json: Json = False,
            limit: Annotated[int, typer.Option("--limit", "-n", min=0,
                                               help="Runs to list (0 or more).")] = 20) -> None:
    """Recent runs and their per-destination figures."""
    from .sync.mapping.loader import load
    from .sync.store.figures import DestinationFigures
    from .sync.store.shared import open_store

    with _errors():
        store = open_store(load(config, pull=False), read_only=True)
        try:
            runs = store.history(limit)
        finally:
            store.close()

        def human() -> None:
            for r in runs:
                typer.echo(f"run {r['run_id']} {r['command']} {r['started_at']} {r['status']} "
                           f"(exit {r['exit_code']})")
                for d in r["destinations"]:
                    typer.echo(DestinationFigures.from_row(d).history_line())
                    for why in d["reject_reasons"]:
                        typer.echo(f"    {why['count']} × {why['reason']} "
                                   f"(e.g. {', '.join(why['keys'])})")

        _out(runs, as_json, human)


@app.command()
def resync(name: Annotated[str, typer.Argument(help="Destination name.")],
           config: Config = DEFAULT) -> None:
    """Forget synced state for a destination, so the next run reconciles it fully."""
    from .sync.mapping.loader import load
    from .sync.pipeline.runner import Runner

    with _errors():
        with Runner(load(config, pull=False), checked=False) as runner:
            n = runner.resync(name)
        typer.echo(f"{name}: forgot {n} synced members; the next run reconciles it")


@app.command()
def explain(who: Annotated[str, typer.Argument(metavar="KEY_OR_EMAIL")],
            config: Config = DEFAULT, as_of: AsOf = None, as_json: Json = False,
            offline: Annotated[bool, typer.Option("--offline/--pull")] = True) -> None:
    """Why a contact is or is not in each segment and destination."""
    from .sync.reports.explain import explain as do_explain
    from .sync.reports.explain import render

    with _errors():
        with _runner(config, as_of, pull=not offline, read_only=offline) as runner:
            data = do_explain(runner, who.strip(), offline=offline)
        _out(data, as_json, lambda: typer.echo(render(data)))


@app.command()
def segments(config: Config = DEFAULT, as_of: AsOf = None, as_json: Json = False,
             offline: Annotated[bool, typer.Option("--offline/--pull")] = True) -> None:
    """Segment sizes, overlap matrix and quality-gate findings for the current snapshot."""
    from .sync.mapping.summary import text_lines
    from .sync.reports.segments import render_fit, render_overlap, segment_report

    with _errors():
        with _runner(config, as_of, pull=not offline, read_only=offline) as runner:
            data = segment_report(runner, offline=offline)
        overlaps = data.pop("_overlaps")

        def human() -> None:
            for s, v in data["segments"].items():
                typer.echo(f"{s}: {v['matched']} matched, {v['held_out']} held out, "
                           f"{v['sent']} sent")
            if data["segments"]:
                typer.echo(render_overlap(data["segments"], overlaps))
            for line in text_lines(f"{f['severity']}: {f['path']}: {f['message']}"
                                   for f in data["findings"]):
                typer.echo(line)
            for name, fit in data["scores"].items():
                typer.echo(render_fit(name, fit))

        _out(data, as_json, human)


@app.command()
def lift(segment: Annotated[str, typer.Argument(help="A segment with a holdout.")],
         outcome: Annotated[str, typer.Option("--outcome", help="A bool, date or number field.")],
         since: Annotated[str | None, typer.Option(
             "--since", help="Date outcomes: count dates after this (ISO 8601).")] = None,
         config: Config = DEFAULT, as_json: Json = False) -> None:
    """Sent vs held-out outcome of a segment: lift, 95% CI and p-value. Sends nothing."""
    from .sync.reports.lift import lift_report, render

    with _errors():
        after = _parse_date("--since", since)
        runner = _runner(config, pull=False)
        try:
            data = lift_report(runner, segment, outcome, after)
        finally:
            runner.close()
        _out(data, as_json, lambda: typer.echo(render(data)))


@app.command()
def report(config: Config = DEFAULT,
           output: Annotated[Path, typer.Option("-o", "--output")] = Path("report.html"),
           since: Annotated[str | None, typer.Option(
               "--since", help="Start of the migration window, and of date outcomes "
               "(ISO 8601); default: 7 days before the last run.")] = None,
           outcome: Annotated[list[str] | None, typer.Option(
               "--outcome", help="Measure lift on this field for every segment with a "
               "holdout (repeatable).")] = None) -> None:
    """A self-contained HTML report: sizes over time, overlap, migrations, destinations,
    CLV fits and lift."""
    from .sync.reports import view
    from .sync.reports.html import render
    from .sync.reports.segments import segment_report

    with _errors():
        start = _parse_date("--since", since)
        with _runner(config, pull=False, read_only=True) as runner:
            data = segment_report(runner, offline=True)
            start = view.window_start(runner.store, start)
            model = view.build(runner.store, runner.project, data["segments"],
                               data["_overlaps"], title=f"crmsync report: {config.name}",
                               since=start, clv=data.get("scores") or None,
                               lift=view.measure_lift(runner, outcome or [], start))
        _write(output, render(model))
        typer.echo(f"wrote {output}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
