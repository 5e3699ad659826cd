"""`crmsync validate` finds every connector rule (``Destination.check`` / ``target``) with
file:line, before any API call: `run` stops with exit 2 and the platforms get no request."""

from __future__ import annotations

import pytest
import yaml

from conftest import write_csv

pytest.importorskip("google.ads.datamanager_v1")

from fakes.google import DataManagerFake  # noqa: E402

ACCOUNT = "1234567890"


def mapping(tmp_path, destinations, *, google_url="http://127.0.0.1:9"):
    write_csv(tmp_path / "c.csv", ["id", "email", "city", "country"],
              [["k1", "a@x.example", "Paris", "FR"]])
    text = yaml.safe_dump({
        "version": 1,
        "connections": {
            "google": {"type": "google_ads", "operating_account": ACCOUNT,
                       "base_url": google_url},
            "hubspot": {"type": "hubspot", "token": "${HUBSPOT_TOKEN}"},
            "meta": {"type": "meta", "access_token": "${META_TOKEN}", "ad_account_id": "1"}},
        "sources": {"crm": {"type": "csv", "path": "c.csv", "key": "id",
                            "identity": {"email": "email", "city": "city",
                                         "country": "country"}}},
        "segments": {"all": {"where": {"field": "email", "is_known": True}}},
        "destinations": destinations}, sort_keys=False)
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path, text.splitlines()


def line_of(lines: list[str], needle: str, after: int = 0) -> int:
    return next(i for i, ln in enumerate(lines, 1) if i > after and needle in ln)


ENV = {"HUBSPOT_TOKEN": "pat-x", "META_TOKEN": "EAAx"}


def test_google_identifier_support_is_a_validate_error_with_its_line(cli, tmp_path):
    m, lines = mapping(tmp_path, [
        {"name": "file", "segment": "all", "type": "csv", "path": "out.csv"},
        {"name": "g", "segment": "all", "type": "google_ads_customer_match",
         "connection": "google", "audience": "A", "terms_of_service": "accepted",
         "identifiers": ["email", "city"]}])
    res = cli("validate", "-c", m, env=ENV)
    assert res.exit_code == 2, res.output
    where = line_of(lines, "- city")
    assert f"m.yaml:{where}: destinations[1].identifiers[1]: Customer Match does not take " \
           "city" in res.output
    with DataManagerFake() as fake:  # run stops before any destination, any API call
        fake.add_account(ACCOUNT)
        m, _ = mapping(tmp_path, yaml.safe_load(m.read_text())["destinations"],
                       google_url=fake.url)
        run = cli("run", "-c", m, env=ENV)
        assert run.exit_code == 2 and "city" in run.output
        assert fake.requests == [] and not (tmp_path / "out.csv").exists()


def test_meta_identifiers_that_match_nobody_are_an_error(cli, tmp_path):
    m, _ = mapping(tmp_path, [{"name": "m", "segment": "all", "type": "meta_custom_audience",
                               "connection": "meta", "audience": "A",
                               "identifiers": ["country"]}])
    res = cli("validate", "-c", m, env=ENV)
    assert res.exit_code == 2 and "cannot match anyone on its own" in res.output


def test_two_destinations_on_one_google_audience(cli, tmp_path):
    m, lines = mapping(tmp_path, [
        {"name": "g1", "segment": "all", "type": "google_ads_customer_match",
         "connection": "google", "audience": "VIP", "terms_of_service": "accepted"},
        {"name": "g2", "segment": "all", "type": "google_ads_customer_match",
         "connection": "google", "audience": "VIP", "terms_of_service": "accepted"}])
    res = cli("validate", "-c", m, env=ENV)
    assert res.exit_code == 2
    assert f"m.yaml:{line_of(lines, 'name: g2')}:" in res.output
    assert "destination 'g2' writes to the same place as destinations[0]" in res.output


def test_google_list_key_is_a_deprecated_alias_of_audience(cli, tmp_path):
    m, lines = mapping(tmp_path, [
        {"name": "g", "segment": "all", "type": "google_ads_customer_match",
         "connection": "google", "list": "Old name", "terms_of_service": "accepted"}])
    res = cli("validate", "-c", m, env=ENV)
    assert res.exit_code == 0, res.output
    assert f"m.yaml:{line_of(lines, 'list: Old name')}: destinations[0].list: 'list:' is " \
           "deprecated" in res.output and "write audience: instead" in res.output
    assert cli("validate", "--strict", "-c", m, env=ENV).exit_code == 1


def test_google_address_parts_and_terms_are_warned(cli, tmp_path):
    m, _ = mapping(tmp_path, [
        {"name": "g", "segment": "all", "type": "google_ads_customer_match",
         "connection": "google", "audience": "A", "identifiers": ["email", "country"]}])
    res = cli("validate", "-c", m, env=ENV)
    assert res.exit_code == 0, res.output
    assert "matches an address only with first_name, last_name, country and zip" in res.output
    assert "terms are not marked accepted" in res.output
