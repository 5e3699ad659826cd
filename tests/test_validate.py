"""Semantic checks of mappings (sync.validate): each problem names line, path and fix."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, SecretStr

from crmsync import connectors
from crmsync.sync.errors import ConfigError, CrmsyncError, Problem
from crmsync.sync.mapping import loader, validate
from crmsync.sync.mapping.model import OPERATORS, ConnectionConfig, FieldType
from crmsync.sync.pipeline import checks

DATA = Path(__file__).parent / "data" / "validate"
ENV = {"HUBSPOT_TOKEN": "pat-from-env", "META_TOKEN": "meta-from-env",
       "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T1/B1/secret"}
T = FieldType


def fields_for(project: loader.Project, extra: tuple[str, ...] = ("id", "email", "phone",
                                                                   "country")) -> dict:
    """What the lead passes for a csv source: header columns typed by `schema:`."""
    src = project.mapping.sources["crm"]
    return {"crm": {**{c: T.string for c in extra}, **dict(src.schema_)}}


def run(name: str, env: dict | None = None, fields: dict | None | str = "schema"
        ) -> tuple[loader.Project, list[Problem]]:
    project = loader.load(DATA / name, env=ENV if env is None else env)
    known = fields_for(project) if fields == "schema" else fields
    return project, checks.check(project, known)


def line_of(name: str, snippet: str) -> int:
    hits = [i for i, text in enumerate((DATA / name).read_text().splitlines(), 1)
            if snippet in text]
    assert len(hits) == 1, (snippet, hits)
    return hits[0]


def at(problems: list[Problem], path: str) -> Problem:
    found = [p for p in problems if p.path == path]
    assert len(found) == 1, (path, [str(p) for p in problems])
    return found[0]


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


# ---------------------------------------------------------------- a fake connector registry


class HubSpotConn(ConnectionConfig):
    model_config = ConfigDict(extra="forbid")
    type: Literal["hubspot"]
    token: SecretStr


class MetaConn(ConnectionConfig):
    model_config = ConfigDict(extra="forbid")
    type: Literal["meta"]
    access_token: SecretStr
    ad_account_id: str
    app_secret: SecretStr | None = None


class PathOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


class FileConnector:
    Options = PathOptions
    connection_types: tuple[str, ...] = ()


class HubSpotSource:
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        object: str = "contacts"

    connection_types = ("hubspot",)


class HubSpotList:
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        list: str

    connection_types = ("hubspot",)


class HubSpotProperty:
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        property: str

    connection_types = ("hubspot",)


FAKES = {
    ("connection", "hubspot"): HubSpotConn, ("connection", "meta"): MetaConn,
    ("source", "csv"): FileConnector, ("source", "hubspot"): HubSpotSource,
    ("destination", "csv"): FileConnector, ("destination", "hubspot_list"): HubSpotList,
    ("destination", "hubspot_property"): HubSpotProperty,
}


@pytest.fixture
def registry(monkeypatch):
    """Connector classes as if every platform module were installed (SDK extras missing for
    the rest, as the real registry reports them)."""

    def load(kind: str, name: str) -> type:
        if (kind, name) in FAKES:
            return FAKES[(kind, name)]
        raise CrmsyncError(f"{kind} type '{name}' needs an optional dependency (x)")

    monkeypatch.setattr(connectors, "load", load)


# ---------------------------------------------------------------- clean mapping


def test_good_mapping_has_no_problems(registry):
    _, problems = run("good.yaml")
    assert problems == []


def test_good_mapping_with_real_registry_has_no_errors():
    """Connectors whose module or SDK is missing give warnings, never a crash or an error."""
    _, problems = run("good.yaml")
    assert errors(problems) == []
    for p in problems:
        assert p.severity == "warning" and p.message.startswith("cannot check")


def test_score_fields():
    project = loader.load(DATA / "good.yaml", env=ENV)
    assert validate.score_fields(project, "crm") == {
        "rfm.r": T.number, "rfm.f": T.number, "rfm.m": T.number, "rfm.score": T.string,
        "rfm.segment": T.enumeration, "engagement": T.number}


# ---------------------------------------------------------------- conditions


def test_unknown_fields_with_did_you_mean():
    _, problems = run("conditions.yaml")
    p = at(problems, "segments.typos.where.all[1].field")
    assert p.line == line_of("conditions.yaml", "ordr_count")
    assert p.message == "unknown field 'ordr_count' in source 'crm'"
    assert p.fix == "did you mean 'order_count'?"
    assert p.file == str(DATA / "conditions.yaml")
    assert str(p).startswith(f"{DATA / 'conditions.yaml'}:{p.line}: segments.typos.where.all[1]")
    p = at(problems, "segments.typos.where.all[2].field")
    assert "rfm.segmnt" in p.message and p.fix == "did you mean 'rfm.segment'?"


def test_rfm_segment_value_checked_against_grid():
    _, problems = run("conditions.yaml")
    p = at(problems, "segments.typos.where.all[3].eq")
    assert p.line == line_of("conditions.yaml", "eq: Champion }")
    assert "'Champion' is not an RFM segment" in p.message
    assert p.fix == "did you mean 'Champions'?"


def test_valid_fields_give_no_problem():
    _, problems = run("conditions.yaml")
    assert not [p for p in problems if p.path.startswith("segments.typos.where.all[0]")]


@pytest.mark.parametrize("index, op, ftype, fix_part", [
    (0, "gte", "enumeration", "declare the column as number in `schema:`"),
    (1, "contains", "number", "declare the column as string in `schema:`"),
    (2, "eq", "multi", "use 'has_any' for a multi field"),
    (3, "gt", "bool", "bool fields take: eq, ne, is_known"),
    (4, "within_last", "string", "declare the column as date in `schema:`"),
    (5, "matches", "date", "declare the column as string in `schema:`"),
])
def test_operator_must_fit_field_type(index, op, ftype, fix_part):
    _, problems = run("conditions.yaml")
    p = at(problems, f"segments.ops.where.any[{index}].{op}")
    lines = (DATA / "conditions.yaml").read_text().splitlines()
    assert p.line == line_of("conditions.yaml", "  ops:") + 3 + index
    assert f" {op}:" in lines[p.line - 1]
    assert p.message.startswith(f"operator '{op}' does not fit {ftype} field")
    assert fix_part in p.fix


@pytest.mark.parametrize("index, op, message, fix", [
    (0, "eq", "'abc' is not a valid number for 'eq'", "write a plain number"),
    (1, "eq", "'1,000' is not a valid number", "no thousands separators"),
    (2, "within_last", "months and years are not allowed", "write e.g. 30d"),
    (3, "within_next", "bad duration 'soon'", "write e.g. 30d"),
    (4, "before", "bad date 'yesterday' for 'before'", "or a duration like 30d"),
    (5, "after", "bad date '2026-13-01' for 'after'", "ISO 8601 date"),
    (6, "top_percent", "percentage above 0 and at most 100, got 150", "top_percent: 20"),
    (7, "in", "'in' takes a non-empty list", "write in: [trial]"),
    (8, "between", "'between' takes [lo, hi]", "write between: [LOW, HIGH]"),
    (9, "between", "low is above high", "write between: [1, 10]"),
    (10, "matches", "bad regular expression '(unclosed'", "RE2 syntax"),
    (11, "matches", "bad regular expression '(?=lookahead)'", "no look-around"),
    (12, "is_known", "'is_known' takes true or false, got 'yes'", "is_known: true"),
    (13, "eq", "'maybe' is not a valid bool", "write true or false"),
    (14, "has_all", "'has_all' takes a non-empty list", "list at least one value"),
    (15, "gt", "'last tuesday' is not a valid date for 'gt'", "ISO 8601"),
    (16, "eq", "'eq' takes one value, got a list", "use in: [...]"),
])
def test_operator_values(index, op, message, fix):
    _, problems = run("conditions.yaml")
    p = at(problems, f"segments.values.where.all[{index}].{op}")
    lines = (DATA / "conditions.yaml").read_text().splitlines()
    first = line_of("conditions.yaml", "  values:") + 3  # all[0] is three lines below
    assert p.line == first + index and f" {op}:" in lines[p.line - 1]
    assert message in p.message
    assert fix in p.fix
    assert p.severity == "error"


def test_every_bad_condition_is_reported_once():
    _, problems = run("conditions.yaml")
    assert len(errors(problems)) == 4 + 6 + 17 - 1  # all[0] of typos is fine
    assert len({p.path for p in problems}) == len(problems)


def test_fields_none_skips_existence_but_checks_values():
    _, problems = run("conditions.yaml", fields=None)
    paths = {p.path for p in problems}
    assert "segments.typos.where.all[1].field" not in paths  # unknown source fields: no check
    assert "segments.typos.where.all[2].field" in paths  # score fields are always known
    assert "segments.values.where.all[2].within_last" in paths  # durations still checked
    assert "segments.values.where.all[10].matches" in paths
    assert "segments.ops.where.any[0].gte" not in paths  # type unknown: no fit check


def test_source_missing_from_fields_is_skipped():
    _, problems = run("conditions.yaml", fields={"other": {"x": T.string}})
    assert "segments.typos.where.all[1].field" not in {p.path for p in problems}


def test_yaml_dates_and_epoch_millis_are_valid_dates(tmp_path):
    text = (DATA / "good.yaml").read_text().replace(
        "- { field: signup, within_last: 30d }",
        "- { field: signup, gte: 1767225600000 }\n        - { field: signup, lt: 2026-03-01 }")
    (tmp_path / "m.yaml").write_text(text)
    (tmp_path / "blocklist.csv").write_text("key\n")
    project = loader.load(tmp_path / "m.yaml", env=ENV)
    assert errors(checks.check(project, fields_for(project))) == []


# ---------------------------------------------------------------- references


def test_cycles_report_their_path():
    _, problems = run("references.yaml")
    cycles = [p for p in problems if "cycle" in p.message]
    assert sorted(p.message for p in cycles) == [
        "cycle between segments: a -> b -> a", "cycle between segments: c -> c"]
    p = at(problems, "segments.a.where.segment")
    assert p.line == line_of("references.yaml", "where: { segment: b }")
    assert "remove one reference" in p.fix


def test_unknown_segment_reference():
    _, problems = run("references.yaml")
    p = at(problems, "segments.d.where.segment")
    assert p.message == "unknown segment 'chmpions'"
    assert p.fix == "did you mean 'champions'?"
    assert p.line == line_of("references.yaml", "chmpions")


def test_groups():
    _, problems = run("references.yaml")
    p = at(problems, "groups.g2.segments[0]")
    assert "in two exclusive groups: 'g1' and 'g2'" in p.message
    assert p.line == line_of("references.yaml", "segments: [champions, nope]")
    assert at(problems, "groups.g2.segments[1]").message == "unknown segment 'nope'"


def test_suppressions():
    _, problems = run("references.yaml")
    p = at(problems, "suppressions.blocked.file")
    assert "missing.csv not found" in p.message and "relative to the mapping" in p.fix
    assert p.line == line_of("references.yaml", "missing.csv")
    p = at(problems, "suppressions.scoped.scope[0]")
    assert p.message == "unknown destination 'a-fil'" and p.fix == "did you mean 'a-file'?"


def test_suppression_file_resolves_against_mapping_folder(registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocklist.csv is beside good.yaml, not in the cwd
    _, problems = run("good.yaml")
    assert problems == []


def test_destination_references(registry):
    _, problems = run("references.yaml")
    p = at(problems, "destinations[0]")
    assert "exactly one of 'segment:' or 'group:'" in p.message
    assert p.line == line_of("references.yaml", "group: g1")  - 2  # the item's first line
    assert "exactly one" in at(problems, "destinations[4]").message
    p = at(problems, "destinations[1].name")
    assert p.message == "duplicate destination name 'a-file'"
    assert at(problems, "destinations[1].segment").fix == "did you mean 'champions'?"
    p = at(problems, "destinations[2].type")
    assert p.message == "unknown destination type 'hubspot_lst'"
    assert p.fix == "did you mean 'hubspot_list'?"
    assert p.line == line_of("references.yaml", "hubspot_lst")
    assert at(problems, "destinations[3].group").message == "unknown group 'g3'"
    assert at(problems, "destinations[3].connection").fix == "did you mean 'hubspot'?"


def test_destination_fields(registry):
    _, problems = run("references.yaml")
    p = at(problems, "destinations[5].consent")
    assert p.message == "unknown consent field 'ads_consnt' in source 'crm'"
    assert p.fix == "did you mean 'ads_consent'?"
    p = at(problems, "destinations[5].identifiers[1]")
    assert p.message == "identifier 'phone' is not mapped in source 'crm'"
    assert "sources.crm.identity" in p.fix
    assert p.line == line_of("references.yaml", "identifiers: [email, phone]")


def test_destination_options_and_connection(registry):
    _, problems = run("references.yaml")
    p = at(problems, "destinations[7].pth")
    assert p.message == "unknown key 'pth'" and p.fix == "did you mean 'path'?"
    assert p.line == line_of("references.yaml", "pth:")
    assert at(problems, "destinations[7].path").message == "'path' is required"
    p = at(problems, "destinations[6]")
    assert "needs a connection" in p.message and "hubspot" in p.fix


def test_alerts():
    _, problems = run("references.yaml")
    p = at(problems, "alerts[0].transitions[0].to")
    assert p.message == "unknown segment 'at_rsk'"
    p = at(problems, "alerts[0].url")
    assert p.severity == "warning" and "${SLACK_WEBHOOK_URL}" in p.fix
    assert "T000" not in str(p)  # the webhook's secret path is not echoed
    assert at(problems, "alerts[0].on").severity == "warning"


# ---------------------------------------------------------------- connections


def test_literal_secret_is_an_error(registry):
    _, problems = run("connections.yaml")
    p = at(problems, "connections.hubspot.token")
    assert "never put secrets in the mapping; use ${VAR}" in p.message
    assert p.line == line_of("connections.yaml", "pat-na1-literal-secret")
    assert "${HUBSPOT_TOKEN}" in p.fix
    assert not any("pat-na1-literal-secret" in str(x) for x in problems)
    assert "connections.hub2.token" not in {x.path for x in problems}  # from ${VAR}


def test_connection_fields_checked_by_connector_class(registry):
    _, problems = run("connections.yaml")
    p = at(problems, "connections.hub2.tken")
    assert p.message == "unknown key 'tken'" and p.fix == "did you mean 'token'?"
    assert p.line == line_of("connections.yaml", "tken")
    p = at(problems, "connections.meta.ad_account_id")
    assert p.message == "'ad_account_id' is required"
    assert p.line == line_of("connections.yaml", "  meta:")
    p = at(problems, "connections.mystery.type")
    assert p.message == "unknown connection type 'hubsopt'" and p.fix == "did you mean 'hubspot'?"


def test_connection_type_must_suit_destination(registry):
    _, problems = run("connections.yaml")
    p = at(problems, "destinations[0].connection")
    assert p.message == "connection 'meta' is meta; 'hubspot_list' needs hubspot"


def test_unloadable_connector_is_a_warning(monkeypatch):
    def load(kind, name):
        raise CrmsyncError(f"{kind} type '{name}' needs an optional dependency (sdk)")

    monkeypatch.setattr(connectors, "load", load)
    _, problems = run("connections.yaml")
    p = at(problems, "connections.hubspot.type")
    assert p.severity == "warning" and "cannot check connection 'hubspot'" in p.message
    assert [x.path for x in errors(problems)] == ["connections.mystery.type"]


def test_secret_fields_include_optional_ones():
    assert validate._secret_fields(MetaConn) == ["access_token", "app_secret"]


# ---------------------------------------------------------------- sources and scores


def _mapping(tmp_path: Path, text: str) -> loader.Project:
    (tmp_path / "m.yaml").write_text(text)
    return loader.load(tmp_path / "m.yaml", env=ENV)


SCORES = """version: 1
sources:
  crm:
    type: csv
    path: c.csv
    schema: { last_order: date, orders: number, revenue: number, plan: string }
  web:
    type: jsonl
    path: w.jsonl
    connection: hubspot
scores:
  rfm:
    type: rfm
    recency: orders
    frequency: orders
    monetary: revenu
  engagement:
    type: weighted
    source: crm
    terms:
      - { field: plan, weight: 2 }
segments:
  s:
    source: webb
    where: { field: x, eq: 1 }
"""


def test_scores_and_sources(tmp_path, registry):
    project = _mapping(tmp_path, SCORES)
    problems = checks.check(project, {"crm": {"id": T.string, **project.mapping.sources[
        "crm"].schema_}})
    p = at(problems, "scores.rfm.recency")
    assert p.message == "recency field 'orders' is number, not date or datetime"
    assert p.fix == "declare the column as date in `schema:`" and p.line == 14
    assert at(problems, "scores.rfm.monetary").fix == "did you mean 'revenue'?"
    p = at(problems, "scores.engagement.terms[0].field")
    assert p.message == "weighted term 'plan' is string, not number" and p.line == 21
    p = at(problems, "sources.web")
    assert "exactly one of 'connection:' or 'type:'" in p.message and p.line == 7
    p = at(problems, "segments.s.source")
    assert p.message == "unknown source 'webb'" and p.fix == "did you mean 'web'?"


def test_score_field_from_another_source_names_it(tmp_path):
    text = SCORES.replace("source: webb", "source: crm").replace(
        "field: x, eq: 1", "field: rfm.r, eq: 1").replace(
        "    connection: hubspot\n", "").replace("engagement:\n    type: weighted\n"
                                               "    source: crm", "engagement:\n"
                                               "    type: weighted\n    source: web")
    project = _mapping(tmp_path, text.replace("  rfm:\n    type: rfm\n",
                                              "  rfm:\n    type: rfm\n    source: web\n"))
    problems = checks.check(project, {"crm": {"id": T.string}, "web": {"id": T.string}})
    p = at(problems, "segments.s.where.field")
    assert p.message == "unknown field 'rfm.r' in source 'crm'"
    assert p.fix == "that score is computed on source 'web'; set source: web"


def test_field_known_with_unknown_type_gets_no_type_checks():
    """Platform sources list `properties:` whose types only the platform knows: None."""
    project = loader.load(DATA / "conditions.yaml", env=ENV)
    fields = {"crm": {**fields_for(project)["crm"], "stage": None, "order_count": None}}
    paths = {p.path for p in checks.check(project, fields)}
    assert "segments.ops.where.any[0].gte" not in paths  # stage: type unknown
    assert "segments.values.where.all[0].eq" not in paths  # order_count: 'abc' may be fine
    assert "segments.typos.where.all[1].field" in paths  # ordr_count still unknown
    assert "segments.values.where.all[8].between" in paths  # shape still checked


# ---------------------------------------------------------------- never crashes

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**15, 10**15),
                     st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=12), st.sampled_from(["30d", "3mo", "2026-01-01", "(",
                                                            "1,000", "Champions", "yes"]))
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3),
                    st.dictionaries(st.text(max_size=3), _scalars, max_size=2))


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(["order_count", "last_order_date", "signup", "ads_consent", "tags",
                              "stage", "email", "rfm.segment", "rfm.r", "engagement", "nope"]),
       op=st.sampled_from(sorted(OPERATORS)), value=_values)
def test_any_operator_value_gives_problems_never_exceptions(field, op, value):
    text = (DATA / "good.yaml").read_text()
    cond = yaml.safe_dump({"field": field, op: value}, default_flow_style=True,
                          width=10_000).strip()
    text = text.replace("{ field: rfm.segment, eq: champions }", cond)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m.yaml").write_text(text)
        try:
            project = loader.load(Path(tmp) / "m.yaml", env=ENV)
        except ConfigError:
            return
        problems = checks.check(project, fields_for(project))
    for p in problems:
        assert p.line and p.fix and p.path


def test_group_segments_must_share_a_source(tmp_path):
    project = _mapping(tmp_path, """version: 1
sources:
  crm: { type: csv, path: c.csv }
  web: { type: csv, path: w.csv }
segments:
  a: { where: { field: x, eq: 1 } }
  b: { source: web, where: { field: x, eq: 1 } }
groups:
  g:
    segments: [a, b]
""")
    p = at(checks.check(project), "groups.g.segments")
    assert p.message == "group 'g' mixes segments of sources crm, web" and p.line == 10


def test_broken_plugin_is_a_warning(monkeypatch):
    def load(kind, name):
        raise AttributeError("module has no attribute 'HubSpotConnection'")

    monkeypatch.setattr(connectors, "load", load)
    _, problems = run("good.yaml")
    assert errors(problems) == []
    assert "AttributeError" in at(problems, "connections.hubspot.type").message


def test_yaml_numbers_keep_how_they_were_written():
    """`eq: 02134` on a string field means the text "02134" (a zip), and a leading zero is
    not octal on a number field either (YAML 1.2)."""
    import yaml

    from crmsync.sync.mapping.loader import YamlLoader
    from crmsync.sync.mapping.model import FieldType
    from crmsync.sync.mapping.values import parse_value

    doc = yaml.load("zip: 02134\nprice: 1.50\n", Loader=YamlLoader)
    assert parse_value(doc["zip"], FieldType.string) == "02134"
    assert parse_value(doc["zip"], FieldType.number) == 2134.0
    assert parse_value(doc["price"], FieldType.string) == "1.50"
