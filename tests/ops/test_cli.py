"""The operator's command line (docs/cli.md), run as `python -m claimcore` against a real node.

Tables by default and JSON with --json (every field, numbers as numbers; schemas: test_cli_trust.py);
one-line errors and exit codes 0, 1, 2 and 3, each
provoked for real (3: a port nothing listens on); settings from flags, then the environment, then the
config file; node flags before or after the action; a progress line only on a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from claimcore.harness.embedded_redis import free_port
from claimcore.harness.local_node import LocalNode
from claimcore.ops.cli_output import message_json, when
from claimcore.security.auth import digest_line, new_key
from claimcore.v1 import claims_pb2 as pb
from conftest import create_campaign, new_campaign_id
from support import CLI_ERROR_LINE
from support import run_cli as run


def as_json(message, **extra: object) -> str:  # type: ignore[no-untyped-def]
    """What --json prints for a reply: every field by its proto name, int64 as numbers, and `extra`."""
    return json.dumps({**message_json(message), **extra}, indent=2, ensure_ascii=False) + "\n"


def grant(claims, cid: str, n: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        reply = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=f"u{i}", request_id="r",
                                             channel_id="app"), timeout=10)
        assert reply.outcome in (pb.OUTCOME_GRANTED, pb.OUTCOME_SOLD_OUT)


@pytest.fixture
def dead() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def test_campaign_list_is_a_table_with_a_row_per_campaign_and_json_has_its_rows(node, admin, claims, env):
    sold = create_campaign(admin, inventory=3, shards=2).campaign.campaign_id
    grant(claims, sold, 5)
    paused = create_campaign(admin, inventory=40, shards=4).campaign.campaign_id
    grant(claims, paused, 2)
    admin.PauseCampaign(pb.PauseCampaignRequest(campaign_id=paused), timeout=10)
    sold_at = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=sold), timeout=10).campaign.sold_out_at_ms

    table = run(env, "campaign", "list", "--target", node.address)
    listed = run(env, "campaign", "list", "--target", node.address, "--json")

    assert table.returncode == 0 and table.stderr == "", table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["CAMPAIGN", "STATUS", "INVENTORY", "GRANTED", "REMAINING", "SHARDS", "SOLD",
                                "OUT", "AT"]
    assert sold_at and re.search(rf"^{sold}\s+sold out\s+3\s+3\s+0\s+2\s+{re.escape(when(sold_at))}$",
                                 table.stdout, re.M), table.stdout
    assert re.search(rf"^{paused}\s+paused\s+40\s+2\s+38\s+4\s+-$", table.stdout, re.M), table.stdout
    ids = admin.ListCampaigns(pb.ListCampaignsRequest(), timeout=10)
    assert len(lines) == 1 + len(ids.campaign_ids)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert rows["campaign_ids"] == list(ids.campaign_ids) == [r["campaign_id"] for r in rows["campaigns"]]
    by_id = {r["campaign_id"]: r for r in rows["campaigns"]}
    assert {k: by_id[sold][k] for k in ("status", "inventory", "granted", "remaining", "shards",
                                        "sold_out_at_ms")} == {"status": "sold out", "inventory": 3,
                                                               "granted": 3, "remaining": 0, "shards": 2,
                                                               "sold_out_at_ms": sold_at}
    assert (by_id[paused]["status"], by_id[paused]["paused"], by_id[paused]["sold_out_at_ms"]) == (
        "paused", True, 0)


def test_show_is_a_block_and_a_shard_table_and_json_is_the_whole_reply(node, admin, claims, env):
    cid = create_campaign(admin, inventory=10, shards=3, name="Launch day", category="dining",
                          regions=["north", "east"]).campaign.campaign_id
    grant(claims, cid, 4)
    text = run(env, "campaign", "show", cid, "--target", node.address)
    raw = run(env, "campaign", "show", cid, "--target", node.address, "--json")
    info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign

    assert text.returncode == 0, text.stderr
    block, shards = text.stdout.split("\n\n")
    pairs = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in block.splitlines())
    assert (pairs["campaign"], pairs["name"], pairs["status"], pairs["inventory"], pairs["granted"],
            pairs["remaining"], pairs["shards"], pairs["category"], pairs["regions"]) == (
        cid, "Launch day", "live", "10", "4", "6", "3 (epoch 0)", "dining", "north, east")
    rows = [line.split() for line in shards.splitlines()]
    assert rows[0] == ["SHARD", "REMAINING", "GRANTED", "STATE"]
    assert rows[1:] == [[str(s.shard), str(s.remaining), str(s.granted), "live"] for s in info.shards]
    assert sum(int(r[2]) for r in rows[1:]) == 4
    assert raw.returncode == 0 and raw.stdout == as_json(info, status="live")
    assert json.loads(raw.stdout)["granted"] == 4 and json.loads(raw.stdout)["campaign"]["ends_at_ms"] == 0


def test_create_pause_resume_reshard_recycle_speak_text_and_json(node, admin, env):
    cid = new_campaign_id()
    created = run(env, "campaign", "create", cid, "--inventory", "1200", "--shards", "2",
                  "--target", node.address)
    assert created.returncode == 0 and re.search(r"^inventory\s+1,200$", created.stdout, re.M), created.stdout
    paused = run(env, "campaign", "pause", cid, "--target", node.address)
    assert paused.returncode == 0 and re.search(r"^status\s+paused$", paused.stdout, re.M)
    resumed = run(env, "campaign", "resume", cid, "--target", node.address, "--json")
    assert resumed.stdout == as_json(admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid),
                                                       timeout=10).campaign,
                                     status="live")
    resharded = run(env, "campaign", "reshard", cid, "--shards", "5", "--target", node.address)
    assert resharded.returncode == 0, resharded.stderr
    assert re.search(r"^shards\s+2 -> 5 \(epoch 1\)$", resharded.stdout, re.M), resharded.stdout
    assert re.search(r"^moved stock\s+\S+$", resharded.stdout, re.M)
    assert admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign.campaign.shards == 5
    recycled = run(env, "campaign", "recycle", cid, "--target", node.address)
    assert recycled.returncode == 0 and re.search(r"^recycled\s+0$", recycled.stdout, re.M)
    again = run(env, "campaign", "create", cid, "--inventory", "1200", "--shards", "2",
                "--target", node.address, "--json")  # idempotent: the campaign as it is
    assert again.returncode == 0 and json.loads(again.stdout)["campaign"]["shards"] == 5


def test_merchants_is_an_alias_and_lists_a_table(node, admin, env):
    cid = create_campaign(admin, inventory=5, shards=1, category="appliances").campaign.campaign_id
    added = run(env, "merchants", "register", cid, "m1", "--name", "Shop One", "--category", "appliances",
                "--region", "north", "--target", node.address)
    added_json = run(env, "merchant", "register", cid, "m2", "--category", "appliances",
                     "--target", node.address, "--json")
    table = run(env, "merchants", "list", cid, "--target", node.address)
    raw = run(env, "merchant", "list", cid, "--target", node.address, "--json")
    assert added.returncode == 0 and re.search(r"^registered\s+m1$", added.stdout, re.M), added.stderr
    assert json.loads(added_json.stdout) == {"campaign_id": cid, "merchant_id": "m2", "name": "",
                                             "category": "appliances", "region": ""}
    assert table.stdout == ("MERCHANT  NAME      CATEGORY    REGION\n"
                            "m1        Shop One  appliances  north\n"
                            "m2        -         appliances  -\n")
    assert raw.stdout == as_json(admin.ListMerchants(pb.ListMerchantsRequest(campaign_id=cid), timeout=10))


def test_node_flags_go_before_or_after_the_action(node, admin, env, dead):
    cid = create_campaign(admin, inventory=5, shards=1).campaign.campaign_id
    before = run(env, "campaign", "--target", node.address, "--json", "show", cid)
    after = run(env, "campaign", "show", cid, "--json", "--target", node.address)
    both = run(env, "campaign", "--target", dead, "show", cid, "--target", node.address, "--json")
    assert before.returncode == after.returncode == both.returncode == 0, both.stderr
    assert before.stdout == after.stdout == both.stdout  # after the action wins
    merchants = run(env, "merchant", "list", cid, "--target", node.address, "--json")
    elig_file = Path(env["HOME"]) / "e.csv"
    elig_file.write_text("user_id\nu1\n")
    elig = run(env, "eligibility", "load", cid, str(elig_file), "--target", node.address)
    assert merchants.returncode == 0 and elig.returncode == 0 and "1 records" in elig.stdout, elig.stderr


def test_exit_0_1_2_and_3_with_one_line_errors(node, admin, env, dead, tmp_path):
    cid = create_campaign(admin, inventory=5, shards=1).campaign.campaign_id
    ok = run(env, "campaign", "show", cid, "--target", node.address)
    refused = run(env, "campaign", "show", "no-such-campaign", "--target", node.address)
    usage = run(env, "campaign", "create", "x", "--target", node.address)  # no --inventory
    bad_value = run(env, "campaign", "reshard", cid, "--shards", "many", "--target", node.address)
    bad_csv, missing = tmp_path / "bad.csv", tmp_path / "missing.csv"
    bad_csv.write_text("user_id,denied\nu1,perhaps\n")
    bad_input = run(env, "eligibility", "load", cid, str(bad_csv), "--target", node.address)
    no_file = run(env, "eligibility", "load", cid, str(missing), "--target", node.address)
    unreachable = run(env, "campaign", "show", cid, "--target", dead, "--connect-timeout", "0.5")

    assert ok.returncode == 0 and ok.stderr == ""
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("claimcore campaign show: NOT_FOUND: ")
    assert usage.returncode == 2 and usage.stderr.startswith("claimcore campaign create: USAGE: ")
    assert "--inventory" in usage.stderr
    assert bad_value.returncode == 2 and "'many'" in bad_value.stderr
    assert bad_input.returncode == 2
    assert bad_input.stderr.startswith("claimcore eligibility load: BAD_INPUT: ")
    assert "line 2" in bad_input.stderr and "perhaps" in bad_input.stderr
    assert no_file.returncode == 2 and no_file.stderr.startswith("claimcore eligibility load: FILE: ")
    assert str(missing) in no_file.stderr
    assert unreachable.returncode == 3 and dead in unreachable.stderr
    assert unreachable.stderr.startswith("claimcore campaign show: UNAVAILABLE: ")
    for done in (refused, usage, bad_value, bad_input, no_file, unreachable):
        assert CLI_ERROR_LINE.fullmatch(done.stderr), done.stderr  # one line


@pytest.mark.parametrize("command", [
    ["campaign", "list"], ["campaign", "show", "c"], ["merchant", "list", "c"], ["merchants", "list", "c"],
    ["export", "c"], ["reconcile", "c"], ["campaign", "reshard", "c", "--shards", "2"],
])
def test_every_command_exits_3_when_no_node_answers(env, dead, command):
    done = run(env, *command, "--target", dead, "--connect-timeout", "0.3")
    assert done.returncode == 3, done.stderr
    assert CLI_ERROR_LINE.fullmatch(done.stderr) and ": UNAVAILABLE: nothing listens at " in done.stderr


@pytest.mark.parametrize("command", [
    ["campaign", "show", "no-such-campaign"], ["campaign", "pause", "no-such-campaign"],
    ["campaign", "reshard", "no-such-campaign", "--shards", "2"], ["merchant", "register", "bad id", "m"],
    ["export", "no-such-campaign", "--since", "nonsense"], ["reconcile", "no-such-campaign"],
])
def test_every_command_exits_1_when_the_node_refuses(node, env, command):
    done = run(env, *command, "--target", node.address)
    assert done.returncode == 1, done.stderr
    code = CLI_ERROR_LINE.fullmatch(done.stderr) and done.stderr.split(": ")[1]
    assert code in ("NOT_FOUND", "INVALID_ARGUMENT"), done.stderr


def test_eligibility_and_keygen_speak_json_when_asked(node, admin, env, tmp_path):
    cid = create_campaign(admin, inventory=5, shards=2, allow_list=True).campaign.campaign_id
    path = tmp_path / "users.csv"
    path.write_text("user_id,allowed\n" + "".join(f"u{i},1\n" for i in range(25)))
    loaded = run(env, "eligibility", "load", cid, str(path), "--target", node.address, "--json")
    assert loaded.returncode == 0 and json.loads(loaded.stdout) == {"campaign_id": cid, "records": 25,
                                                                   "updated": 25}
    text = run(env, "keygen", "--channel", "bank")
    made = run(env, "keygen", "--channel", "bank", "--json")
    assert text.stdout.splitlines()[3].startswith('keys = ["sha256:')  # the text of old
    key = json.loads(made.stdout)
    assert key["section"] == "[channels.bank]"
    assert key["credentials_line"] == f'keys = ["{digest_line(key["key"])}"]'


# ---------------------------------------------------------------- settings: flags > env > file


def test_target_and_output_come_from_flag_then_env_then_config(node, admin, env, dead, tmp_path):
    cid = create_campaign(admin, inventory=5, shards=1).campaign.campaign_id
    info = as_json(admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign,
                   status="live")
    config = tmp_path / "cc.toml"
    config.write_text(f'target = "{node.address}"\noutput = "json"\n')
    by_file = run(env, "campaign", "show", cid, "--config", str(config))
    by_env_var = run(env, "campaign", "show", cid, CLAIMCORE_CONFIG=str(config))
    env_beats_file = run(env, "campaign", "show", cid, "--connect-timeout", "0.3",
                         CLAIMCORE_CONFIG=str(config), CLAIMCORE_TARGET=dead)
    flag_beats_env = run(env, "campaign", "show", cid, "--target", node.address,
                         CLAIMCORE_CONFIG=str(config), CLAIMCORE_TARGET=dead)
    table_by_env = run(env, "campaign", "show", cid, CLAIMCORE_CONFIG=str(config), CLAIMCORE_OUTPUT="table")
    json_by_flag = run(env, "campaign", "show", cid, "--json", CLAIMCORE_CONFIG=str(config),
                       CLAIMCORE_OUTPUT="table")
    table_by_flag = run(env, "campaign", "show", cid, "--output", "table", "--config", str(config))

    assert by_file.returncode == 0 and by_file.stdout == info, by_file.stderr
    assert by_env_var.stdout == info
    assert env_beats_file.returncode == 3 and "target from env CLAIMCORE_TARGET" in env_beats_file.stderr
    assert flag_beats_env.returncode == 0 and flag_beats_env.stdout == info
    assert table_by_env.stdout.startswith("campaign  ") and cid in table_by_env.stdout
    assert json_by_flag.stdout == info
    assert table_by_flag.stdout == table_by_env.stdout


def test_the_default_config_file_and_the_order_of_files(node, admin, env, dead, tmp_path):
    cid = create_campaign(admin, inventory=5, shards=1).campaign.campaign_id
    home = Path(env["XDG_CONFIG_HOME"]) / "claimcore"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(f'target = "{node.address}"\n')
    other = tmp_path / "other.toml"
    other.write_text(f'target = "{dead}"\n')
    default = run(env, "campaign", "show", cid)
    named_by_env = run(env, "campaign", "show", cid, "--connect-timeout", "0.3", CLAIMCORE_CONFIG=str(other))
    flag_beats_env = run(env, "campaign", "show", cid, "--config", str(home / "config.toml"),
                         CLAIMCORE_CONFIG=str(other))
    assert default.returncode == 0 and cid in default.stdout, default.stderr
    assert named_by_env.returncode == 3 and f"target from config {other}" in named_by_env.stderr
    assert flag_beats_env.returncode == 0


@pytest.mark.parametrize("text, code, message", [
    ('target = "h:1"\ncolour = "blue"\n', "CONFIG", "unknown settings colour"),
    ('output = "yaml"\n', "CONFIG", "output must be table or json"),
    ("target = 50051\n", "CONFIG", "target must be a string"),
    ("target = \n", "CONFIG", "not TOML"),
    ('tls_ca = "certs/ca.pem"\n', "FILE", "certs/ca.pem"),  # relative to the file's directory
])
def test_a_bad_config_file_exits_2_naming_it(env, tmp_path, text, code, message):
    config = tmp_path / "cc.toml"
    config.write_text(text)
    done = run(env, "campaign", "list", "--config", str(config))
    assert done.returncode == 2 and CLI_ERROR_LINE.fullmatch(done.stderr), done.stderr
    assert done.stderr.startswith(f"claimcore campaign list: {code}: ") and message in done.stderr
    if code == "FILE":
        assert str(tmp_path / "certs" / "ca.pem") in done.stderr


def test_a_missing_named_config_file_exits_2_but_a_missing_default_one_is_fine(node, env, tmp_path):
    none = str(tmp_path / "none.toml")
    missing = run(env, "campaign", "list", "--target", node.address, "--config", none)
    by_env = run(env, "campaign", "list", "--target", node.address, CLAIMCORE_CONFIG=none)
    without = run(env, "campaign", "list", "--target", node.address)
    assert missing.returncode == by_env.returncode == 2
    assert ": FILE: " in missing.stderr and none in missing.stderr and "CLAIMCORE_CONFIG" in by_env.stderr
    assert without.returncode == 0


@pytest.fixture(scope="module")
def keyed(redis_server):  # type: ignore[no-untyped-def]
    """A node with credentials: the admin key and the key of channel bank."""
    admin_key, bank_key = new_key(), new_key()
    creds = Path(os.environ.get("TMPDIR", "/tmp")) / f"cli-creds-{os.getpid()}.toml"
    creds.write_text(f'[admin]\nkeys = ["{digest_line(admin_key)}"]\n\n'
                     f'[channels.bank]\nkeys = ["{digest_line(bank_key)}"]\n')
    node = LocalNode(redis_server.url, "--credentials", str(creds)).start()
    yield node, admin_key, bank_key
    node.stop()
    creds.unlink()


def test_the_api_key_comes_from_flag_then_env_then_config(keyed, env, tmp_path):
    node, admin_key, bank_key = keyed
    config = tmp_path / "cc.toml"
    config.write_text(f'target = "{node.address}"\napi_key = "{admin_key}"\n')
    c = ["--config", str(config)]
    by_file = run(env, "campaign", "list", *c)
    env_beats_file = run(env, "campaign", "list", *c, CLAIMCORE_API_KEY=bank_key)
    flag_beats_env = run(env, "campaign", "list", *c, "--api-key", admin_key, CLAIMCORE_API_KEY=bank_key)
    no_key = run(env, "campaign", "list", "--target", node.address)
    assert by_file.returncode == 0 and by_file.stdout.startswith("CAMPAIGN"), by_file.stderr
    assert env_beats_file.returncode == 1 and ": PERMISSION_DENIED: " in env_beats_file.stderr
    assert flag_beats_env.returncode == 0 and flag_beats_env.stdout == by_file.stdout
    assert no_key.returncode == 1 and ": UNAUTHENTICATED: " in no_key.stderr


def test_log_format_is_a_global_flag(node, env):
    for args in (["--log-format", "json", "campaign", "list"], ["campaign", "list", "--log-format", "text"]):
        done = run(env, *args, "--target", node.address)
        assert done.returncode == 0, done.stderr
    wrong = run(env, "--log-format", "xml", "campaign", "list", "--target", node.address)
    assert wrong.returncode == 2 and "USAGE" in wrong.stderr
    by_env = run(env, "campaign", "list", "--target", node.address, CLAIMCORE_LOG_FORMAT="xml")
    assert by_env.returncode == 2 and "CLAIMCORE_LOG_FORMAT" in by_env.stderr


# ---------------------------------------------------------------- progress


def run_on_a_terminal(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run with standard error on a pseudo-terminal: (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "claimcore", *args], stdout=subprocess.PIPE,
                            stderr=slave, env=env, text=True)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    return proc.returncode, out, shown.decode()


def test_export_shows_progress_on_a_terminal_and_nothing_otherwise(node, admin, claims, env, tmp_path):
    cid = create_campaign(admin, inventory=30, shards=2).campaign.campaign_id
    grant(claims, cid, 30)
    args = ["export", cid, "--target", node.address, "--page", "2", "--out", str(tmp_path / "e.jsonl")]
    code, _, terminal = run_on_a_terminal(env, *args)
    piped = run(env, *args[:-1], str(tmp_path / "f.jsonl"))
    assert code == 0 and f"\rexport of {cid}: " in terminal and " pages" in terminal, terminal
    assert "claimcore export: 30 events" in terminal
    assert piped.returncode == 0 and piped.stderr.splitlines() == [piped.stderr.strip()]  # the summary only
    assert "export of" not in piped.stderr and "claimcore export: 30 events" in piped.stderr
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 30


def test_the_log_format_comes_from_flag_then_env_then_config(node, tmp_path, monkeypatch, capsys):
    from claimcore.node import logs
    from claimcore.ops import cli

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    config = tmp_path / "cc.toml"
    config.write_text('log_format = "json"\n')
    for name in [k for k in os.environ if k.startswith("CLAIMCORE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))

    def formatter(*args: str) -> type:
        assert cli.main([*args, "--target", node.address]) == 0
        return type(root.handlers[0].formatter)

    try:
        by_file = formatter("--config", str(config), "campaign", "list")
        monkeypatch.setenv("CLAIMCORE_LOG_FORMAT", "text")
        env_beats_file = formatter("--config", str(config), "campaign", "list")
        flag_beats_env = formatter("campaign", "list", "--config", str(config), "--log-format", "json")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    capsys.readouterr()
    assert (by_file, env_beats_file, flag_beats_env) == (logs.JsonFormatter, logs.TextFormatter,
                                                         logs.JsonFormatter)
