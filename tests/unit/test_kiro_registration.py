"""Kiro IdC logins in the shared store: the client registration travels with the tokens."""

from __future__ import annotations

import json

import pytest

from llmgate.credentials.store import LoginRequired
from llmgate.providers import kiro

REG = {"clientId": "cid", "clientSecret": "csecret", "expiresAt": "2027-01-01T00:00:00Z", "scopes": ["x"]}


def login(tmp_path, auth="IdC", h="abc123"):
    token = tmp_path / "kiro-auth-token.json"
    data = {"accessToken": "a", "refreshToken": "r", "authMethod": auth, "clientIdHash": h}
    token.write_text(json.dumps(data))
    return token, data


def test_an_idc_login_takes_its_registration_along(tmp_path):
    token, data = login(tmp_path)
    (tmp_path / "abc123.json").write_text(json.dumps(REG))
    bundled = kiro._bundle(token, data)
    assert bundled == {**data, kiro.REGISTRATION: {k: REG[k] for k in ("clientId", "clientSecret", "expiresAt")}}
    assert kiro.KIND.bundled == (kiro.REGISTRATION,)


def test_a_social_login_and_a_missing_registration_leave_the_tokens_as_they_are(tmp_path):
    token, social = login(tmp_path, auth="social")
    assert kiro._bundle(token, social) == social
    token, idc = login(tmp_path)  # no abc123.json beside it
    assert kiro._bundle(token, idc) == idc


@pytest.mark.parametrize("h", ["../abc123", "sub/abc123", "/tmp/abc123", "a\0b"])
def test_the_registration_is_read_from_beside_the_token_file_only(tmp_path, h):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "abc123.json").write_text(json.dumps(REG))
    (tmp_path / "abc123.json").write_text(json.dumps(REG))
    token, data = login(tmp_path / "sub", h=h)
    with pytest.raises(LoginRequired):
        kiro.client_registration(token, data)


def test_a_carried_registration_is_the_one_used(tmp_path):
    """It belongs to the tokens it came with; a file on this host may be another login's."""
    token, data = login(tmp_path)
    (tmp_path / "abc123.json").write_text(json.dumps({**REG, "clientId": "this-hosts-own"}))
    account = kiro.KiroAccount.__new__(kiro.KiroAccount)
    account.creds = type("C", (), {"path": token})()
    assert account._client_registration({**data, kiro.REGISTRATION: {"clientId": "carried"}})["clientId"] == "carried"
    assert account._client_registration(data)["clientId"] == "this-hosts-own"
