"""No log the appliance writes keeps a password, a session cookie or credentials."""

from __future__ import annotations

import base64
import json
import time
import uuid

from conftest import SQLI_LOGIN, Client, audit_entries

LOG_DIRS = "/var/log/apache2 /var/log/mlwaf /var/log/mlwaf-monitor"


def test_no_log_keeps_a_password_a_session_cookie_or_credentials(host, client: Client) -> None:
    marker = uuid.uuid4().hex
    password, session = f"Pw-{uuid.uuid4().hex[:12]}!", f"sess{uuid.uuid4().hex}"
    basic = base64.b64encode(f"alice:{password}".encode()).decode()
    headers = {"Cookie": f"PHPSESSID={session}", "Authorization": f"Basic {basic}"}
    # a benign login to the numeric address (CRS warns about the Host: no longer a reason to store it)
    benign = client.request(
        f"/login.php?t={marker}-ok", method="POST", form={"username": "alice", "password": password}, headers=headers
    )
    assert benign.status == 200
    # refused: an injection in the user name, the password beside it
    login = {**SQLI_LOGIN, "password": password}
    refused = client.request(f"/login.php?t={marker}-form", method="POST", form=login, headers=headers)
    assert refused.status == 403
    document = json.dumps({"user": "<script>alert(1)</script>", "password": password})
    api_headers = {**headers, "Content-Type": "application/json"}
    refused_json = client.request(f"/api.php?t={marker}-json", method="POST", body=document, headers=api_headers)
    assert refused_json.status == 403
    time.sleep(1)  # Apache's logs are written after the answer
    for secret in (password, session, basic):
        found = host.run(f"grep -rlF -- {secret} {LOG_DIRS} 2>/dev/null").stdout.split()
        assert found == [], f"{secret} is stored in {found}"
    assert audit_entries(host, f"{marker}-ok") == [], "a request that was not refused is not recorded"
    (form_entry,) = audit_entries(host, f"{marker}-form")
    (json_entry,) = audit_entries(host, f"{marker}-json")
    assert "*" * len(password) in json.dumps(form_entry), "the refused form is recorded, its password masked"
    assert "request_body" not in json_entry.get("request", {}), "a JSON body with a password is left out"
    assert set(form_entry["request"]["headers"]["Cookie"]) == {"*"}, "the cookie header is masked"
