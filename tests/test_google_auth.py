"""Real Google service-account credentials, offline: a throwaway RSA key in a key file whose
token_uri is the fake's token endpoint (OAuth 2.0 JWT bearer grant,
https://developers.google.com/identity/protocols/oauth2/service-account#httprest); every API
request carries the bearer token, which the fake checks. A bad key file, a missing scope
or no access each give one line naming the fix; an expired token is renewed and the run
goes on."""

from __future__ import annotations

import json

import pytest

from crmsync.connectors.testing.destination import _setup

pytest.importorskip("google.ads.datamanager_v1")

from test_google_conformance import ACCOUNT, GoogleHarness  # noqa: E402

from crmsync.connectors.google import SCOPE  # noqa: E402

from fakes.google import DataManagerFake  # noqa: E402


@pytest.fixture
def harness():
    with DataManagerFake() as fake:
        fake.add_account(ACCOUNT)
        yield GoogleHarness(fake)


def _run(cli, tmp_path, h, env=None):
    keys = h.keys(5)
    m = _setup(h, tmp_path, set(keys), keys)
    return cli("run", "-c", m, env=env or h.env()), keys


def _failure(res) -> str:
    assert res.exit_code == 1 and "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if " d: failed" in ln]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_requests_carry_the_token_from_the_key_files_token_uri(cli, tmp_path, harness):
    res, keys = _run(cli, tmp_path, harness)
    assert res.exit_code == 0, res.stderr
    fake = harness.fake
    assert fake.token_requests == 1 and harness.remote() == set(keys)
    api = [r for r in fake.requests if r.path != "/token"]
    assert api and all(r.headers["authorization"].removeprefix("Bearer ") in fake.access_tokens
                       for r in api)
    assert fake.access_tokens and all(s == {SCOPE} for s in fake.access_tokens.values())


def test_an_expired_token_is_renewed_once_and_the_run_goes_on(cli, tmp_path, harness):
    keys = harness.keys(8)
    m = _setup(harness, tmp_path, set(keys[:4]), keys)
    assert cli("run", "-c", m, env=harness.env()).exit_code == 0
    harness.fake.expire_access_tokens()  # the next run's cached token no longer works
    m = _setup(harness, tmp_path, set(keys[2:]), keys)
    res = cli("run", "-c", m, env=harness.env())
    assert res.exit_code == 0, res.stderr
    assert harness.remote() == set(keys[2:]) and harness.fake.token_requests >= 2


def test_an_unreadable_key_file_names_the_variable(cli, tmp_path, harness):
    bad = tmp_path / "key.json"
    bad.write_text("{not json")
    res, _ = _run(cli, tmp_path, harness, {"GOOGLE_APPLICATION_CREDENTIALS": str(bad)})
    line = _failure(res)
    assert "cannot read the Google credentials file named by $GOOGLE_APPLICATION_CREDENTIALS" \
        in line and harness.fake.requests == []


def test_a_key_google_does_not_know_is_refused_at_the_token_endpoint(cli, tmp_path, harness):
    revoked = json.loads(harness.key_file.read_text())
    harness.fake.service_accounts.clear()  # the key was deleted in Cloud IAM
    harness.fake.service_accounts["someone-else@x.iam.gserviceaccount.com"] = b""
    path = tmp_path / "revoked.json"
    path.write_text(json.dumps(revoked))
    line = _failure(_run(cli, tmp_path, harness,
                         {"GOOGLE_APPLICATION_CREDENTIALS": str(path)})[0])
    assert "Google refused the credentials" in line and "invalid_grant" in line
    assert "check the service-account key file" in line


def test_a_missing_scope_names_the_scope(cli, tmp_path, harness):
    harness.fake.granted_scopes = {"https://www.googleapis.com/auth/adwords"}
    line = _failure(_run(cli, tmp_path, harness)[0])
    assert "HTTP 403 ACCESS_TOKEN_SCOPE_INSUFFICIENT" in line and SCOPE in line


def test_no_access_to_the_account_names_the_fix(cli, tmp_path, harness):
    harness.fake.accounts[ACCOUNT] = False
    line = _failure(_run(cli, tmp_path, harness)[0])
    assert "HTTP 403 PERMISSION_DENIED" in line
    assert "give the service account access to the Google Ads account" in line
