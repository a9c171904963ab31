"""The API proto passes `buf lint` with buf's STANDARD rules (buf.yaml at the repository root).

Among them: each RPC has its own request and response message, named <Rpc>Request and <Rpc>Response
(RPC_REQUEST_STANDARD_NAME, RPC_RESPONSE_STANDARD_NAME, RPC_REQUEST_RESPONSE_UNIQUE), and every enum
value carries its enum's name as a prefix (ENUM_VALUE_PREFIX). The proto needs no exception to them:
buf.yaml allows no comment-ignores, so one would have to be added, and explained, in the proto itself.

buf comes from the npm registry (@bufbuild/buf, pinned in scripts/install-buf.sh, run by `make setup`)
into .tools/buf. Without it these tests fail, saying so: they are the only check of the proto's
conventions. The lint is shown to bite too: copies of the proto with an unprefixed enum value, or one
request message shared by two RPCs, fail it, and buf names the rule broken.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "buf" / "node_modules" / ".bin" / "buf"
PROTO = Path("proto") / "claimcore" / "v1" / "claims.proto"


def buf_lint(root: Path) -> tuple[int, list[dict[str, object]], str]:
    """`buf lint` run in `root`: its exit code, its findings (one dict per line of its JSON), stderr."""
    if not BUF.exists():
        pytest.fail(f"the buf CLI is missing ({BUF.relative_to(ROOT)}): `make setup` installs it "
                    "(scripts/install-buf.sh, npm package @bufbuild/buf)")
    done = subprocess.run([str(BUF), "lint", "--error-format", "json"], cwd=root, capture_output=True,
                          text=True, timeout=120)
    findings = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, findings, done.stderr


def lint_copy(tmp_path: Path, change: tuple[str, str]) -> tuple[int, list[dict[str, object]], str]:
    """buf lint on a copy of buf.yaml and proto/ whose proto has `change` (old, new) made wherever old is."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    text = (tmp_path / PROTO).read_text()
    old, new = change
    assert old in text, f"the proto no longer holds {old!r}"
    (tmp_path / PROTO).write_text(text.replace(old, new))
    return buf_lint(tmp_path)


def test_the_proto_passes_buf_lint() -> None:
    code, findings, stderr = buf_lint(ROOT)
    assert (code, findings) == (0, []), stderr or "\n".join(map(str, findings))


def test_the_lint_uses_the_standard_rules_and_ignores_nothing() -> None:
    config = (ROOT / "buf.yaml").read_text()
    assert "STANDARD" in config
    assert "ignore" not in config and "except" not in config  # no rule or file left out
    assert "buf:lint:ignore" not in (ROOT / PROTO).read_text()


@pytest.mark.parametrize(("change", "rules"), [
    (("  OUTCOME_GRANTED = 1;", "  GRANTED = 1;"), {"ENUM_VALUE_PREFIX"}),
    (("rpc PauseCampaign(PauseCampaignRequest)", "rpc PauseCampaign(GetCampaignRequest)"),
     {"RPC_REQUEST_STANDARD_NAME", "RPC_REQUEST_RESPONSE_UNIQUE"}),
    (("ClaimBatchResponse", "ClaimBatchReply"), {"RPC_RESPONSE_STANDARD_NAME"}),
], ids=["unprefixed enum value", "shared request", "reply not response"])
def test_buf_lint_fails_a_proto_that_breaks_the_conventions(tmp_path: Path, change: tuple[str, str],
                                                            rules: set[str]) -> None:
    code, findings, stderr = lint_copy(tmp_path, change)
    assert code != 0, stderr
    assert {str(f["type"]) for f in findings} == rules, findings
    assert all(f["path"] == str(PROTO) for f in findings), findings
