"""The management API against its shipped OpenAPI description, fuzzed by schemathesis's own
command (its pytest plugin does not run under pytest 9): responses must match the documented
status codes and schemas, and nothing may answer 5xx."""

import subprocess

from tests.harness import BIN, ROOT, Gateway, Upstream


def test_admin_api_conforms_to_its_openapi_description(tmp_path):
    up = Upstream("openai_compat", "--models", "gpt-4o-mini")
    cfg = {"providers": [{"id": "up", "type": "openai", "base_url": up.base + "/v1", "models": ["gpt-4o-mini"]}]}
    g = Gateway(cfg, tmp_path / "proxy.yaml")
    try:
        run = subprocess.run(
            [str(BIN / "schemathesis"), "run", str(ROOT / "docs" / "admin-openapi.yaml"), "--url", g.base,
             "--checks", "all", "--max-examples", "20", "--seed", "1", "--phases", "examples,coverage,fuzzing"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        g.stop()
        up.stop()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
