"""A CLI that scripts can trust (docs/cli.md): no abbreviated flags, a help line and a default for every
flag, JSON that a schema accepts, times with a zone, one-line errors for a node that cannot be reached,
and an eligibility file read with the right line numbers.

Everything runs `python -m claimcore` against a real node (tests/conftest.py) or a real port.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import jsonschema
import pytest

from claimcore.harness.embedded_redis import free_port
from claimcore.harness.local_node import LocalNode
from claimcore.ops import cli
from claimcore.security.access import Access
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from claimcore.v1 import short_name
from conftest import create_campaign, new_campaign_id
from support import CLI_ERROR_LINE
from support import run_cli as run

# ---------------------------------------------------------------- flags and help


def parsers(parser: argparse.ArgumentParser, name: str = "claimcore"
            ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command, by its command line (aliases once)."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for word, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from parsers(sub, f"{name} {word}")


def test_no_parser_takes_an_abbreviated_flag(env):
    every = list(parsers(cli.build_parser()))
    assert len(every) > 15 and all(not p.allow_abbrev for _, p in every)
    shortened = run(env, "serve", "--no-aut", "--port", "0")
    assert shortened.returncode == 2 and "unrecognized arguments: --no-aut" in shortened.stderr
    assert shortened.stderr.count("\n") == 1  # one line
    show = run(env, "campaign", "show", "c", "--conn", "1")  # not --connect-timeout
    assert show.returncode == 2 and "--conn" in show.stderr


def test_every_flag_has_a_help_line_and_shows_its_default():
    for name, parser in parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            flag = action.option_strings[-1] if action.option_strings else action.dest
            assert action.help and action.help.strip(), f"{name} {flag} has no help line"
    create = cli.build_parser().parse_args(["campaign", "create", "c", "--inventory", "1"])
    assert create.per_user_limit == 1
    text = " ".join(subprocess.run([sys.executable, "-m", "claimcore", "campaign", "create", "--help"],
                                   capture_output=True, text=True, timeout=60).stdout.split())
    assert "vouchers one user may hold (default: 1)" in text
    assert "--max-vouchers-per-order" in text and "(default: 1)" in text
    export = " ".join(subprocess.run([sys.executable, "-m", "claimcore", "export", "--help"],
                                     capture_output=True, text=True, timeout=60).stdout.split())
    assert "(default: jsonl)" in export and "(default: 1000)" in export
    assert "default: None" not in text + export and "default: False" not in text + export


# ---------------------------------------------------------------- --json: a schema for every command

INT, STR, BOOL = {"type": "integer"}, {"type": "string"}, {"type": "boolean"}


def obj(**properties: object) -> dict[str, object]:
    """An object with exactly these keys, every one present."""
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def arr(items: object) -> dict[str, object]:
    return {"type": "array", "items": items}


CAMPAIGN = obj(
    campaign_id=STR, name=STR, inventory=INT, shards=INT, per_user_limit=INT, starts_at_ms=INT,
    ends_at_ms=INT, admission_rate=INT, admission_burst=INT, value_cents=INT, min_spend_cents=INT,
    category=STR,
    valid_for_ms=INT, max_vouchers_per_order=INT, regions=arr(STR), allow_list=BOOL,
    resident_regions=arr(STR), required_tags=arr(STR), rounds=arr(obj(release_at_ms=INT, amount=INT)),
    one_per_category=BOOL, stackable=BOOL, channels=arr(STR))
CAMPAIGN_INFO_FIELDS = dict(
    campaign=CAMPAIGN, paused=BOOL, granted=INT, remaining=INT, sold_out_at_ms=INT,
    shards=arr(obj(shard=INT, remaining=INT, granted=INT, retired=BOOL)), created_at_ms=INT,
    shard_epoch=INT, resharding=BOOL, held_for_rounds=INT, archived=BOOL)
STATUS = {"enum": ["live", "paused", "sold out", "not started", "ended", "resharding", "archived"]}
CAMPAIGN_INFO = obj(**CAMPAIGN_INFO_FIELDS, status=STATUS)
FIGURE = dict(ok=BOOL, from_ledger=INT, live=INT, label=STR)
CHECKS = ("granted", "distinct_vouchers", "grant_records", "users_holding_vouchers", "vouchers_held_by_users",
          "users_over_per_user_limit", "stock_left", "vouchers_recycled", "vouchers_recycled_twice",
          "recycled_never_granted", "vouchers_redeemed", "redeemed_voucher_records", "subsidy_cents",
          "redeemed_never_granted", "vouchers_in_two_orders", "redeemed_and_recycled")
MERCHANT = obj(campaign_id=STR, merchant_id=STR, name=STR, category=STR, region=STR)

SCHEMAS: dict[str, dict[str, object]] = {
    "keygen": obj(key=STR, section=STR, credentials_line=STR),
    "campaign create": CAMPAIGN_INFO, "campaign show": CAMPAIGN_INFO, "campaign pause": CAMPAIGN_INFO,
    "campaign resume": CAMPAIGN_INFO, "campaign archive": CAMPAIGN_INFO, "campaign unarchive": CAMPAIGN_INFO,
    "campaign list": obj(campaign_ids=arr(STR), campaigns=arr(obj(
        campaign_id=STR, name=STR, status=STATUS, inventory=INT, granted=INT, remaining=INT,
        held_for_rounds=INT, shards=INT, shard_epoch=INT, paused=BOOL, archived=BOOL, resharding=BOOL,
        starts_at_ms=INT,
        ends_at_ms=INT, sold_out_at_ms=INT, created_at_ms=INT))),
    "campaign recycle": obj(campaign_id=STR, recycled=INT),
    "campaign reshard": obj(campaign=obj(**CAMPAIGN_INFO_FIELDS), from_shards=INT, to_shards=INT,
                            shard_epoch=INT, moved_users=INT, moved_records=INT, moved_stock=INT,
                            frozen_ms=INT, took_ms=INT, resumed=BOOL),
    "merchant register": MERCHANT,
    "merchant list": obj(merchants=arr(MERCHANT)),
    "eligibility load": obj(campaign_id=STR, records=INT, updated=INT),
    "reconcile": obj(campaign_id=STR, ok=BOOL, events=INT, differences=arr(STR),
                     checks=obj(**{c: obj(**FIGURE) for c in CHECKS}),
                     shards=arr(obj(shard=INT, **FIGURE))),
    "export": obj(event_id=STR, kind=STR, shard=INT, at_ms=INT, user_id=STR, request_id=STR, voucher_id=STR,
                  channel_id=STR, order_id=STR, merchant_id=STR, order_amount_cents=INT, subsidy_cents=INT,
                  sn_codes=arr(STR), returned=BOOL),  # each line of --format jsonl
}


def json_commands(parser: argparse.ArgumentParser) -> set[str]:
    """Every command line that takes --json."""
    return {name.removeprefix("claimcore ") for name, p in parsers(parser)
            if any("--json" in a.option_strings for a in p._actions) and not any(
                isinstance(a, argparse._SubParsersAction) for a in p._actions)}


def test_every_command_with_json_has_a_schema_here():
    # demo's and loadgen's --json PATH write their report to a file (the load generator's own format)
    others = {"merchants register", "merchants list", "demo", "loadgen"}
    assert json_commands(cli.build_parser()) - others == set(SCHEMAS) - {"export"}


def test_every_json_output_fits_its_schema(node, admin, claims, env, tmp_path):
    cid, at = new_campaign_id(), "2099-01-01T00:00:00Z"
    t = ["--target", node.address, "--json"]
    outputs: dict[str, object] = {}

    def call(name: str, *args: str) -> object:
        done = run(env, *name.split(), *args, *(t if name != "keygen" else t[2:]))
        assert done.returncode == 0, (name, done.stderr)
        outputs[name] = json.loads(done.stdout)
        return outputs[name]

    call("keygen", "--admin")
    created = call("campaign create", cid, "--inventory", "40", "--shards", "2", "--ends-at-ms",
                   "4102444800000", "--round", "4102444800000:5")
    for i in range(3):
        claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=f"u{i}", request_id="r", channel_id="app"),
                     timeout=10)
    call("campaign show", cid)
    call("campaign pause", cid)
    call("campaign resume", cid)
    listed = call("campaign list")
    call("campaign recycle", cid)
    call("campaign reshard", cid, "--shards", "3")
    call("merchant register", cid, "m1")
    call("merchant list", cid)
    users = tmp_path / "users.csv"
    users.write_text("user_id,allowed\nu1,1\n")
    call("eligibility load", cid, str(users))
    reconciled = call("reconcile", cid)
    exported = run(env, "export", cid, "--target", node.address)
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert exported.returncode == 0 and len(lines) == 3
    call("campaign pause", cid)
    assert call("campaign archive", cid)["archived"] is True  # type: ignore[index]
    assert call("campaign unarchive", cid)["archived"] is False  # type: ignore[index]

    for name, output in outputs.items():
        jsonschema.validate(output, SCHEMAS[name])  # fails naming the key and the value
    for line in lines:
        jsonschema.validate(line, SCHEMAS["export"])
    # int64 fields are numbers, zero and empty fields are there
    assert created["campaign"]["ends_at_ms"] == 4102444800000 and created["held_for_rounds"] == 5  # type: ignore[index]
    assert created["campaign"]["starts_at_ms"] == 0 and created["campaign"]["regions"] == []  # type: ignore[index]
    row = next(c for c in listed["campaigns"] if c["campaign_id"] == cid)  # type: ignore[index]
    assert (row["status"], row["inventory"], row["granted"], row["remaining"], row["shards"]) == (
        "live", 40, 3, 32, 2)
    assert reconciled["ok"] is True and reconciled["differences"] == []  # type: ignore[index]
    assert reconciled["checks"]["granted"] == {"ok": True, "from_ledger": 3, "live": 3,  # type: ignore[index]
                                               "label": "granted"}
    assert sorted(s["shard"] for s in reconciled["shards"]) == [0, 1, 2]  # type: ignore[index]
    assert sum(s["from_ledger"] for s in reconciled["shards"]) == 3  # type: ignore[index]
    assert at  # (times with a zone: below)


# ---------------------------------------------------------------- times: ISO 8601 with a zone, shown in --tz

LAUNCH_MS = 1797040800000  # 2026-12-12T10:00:00+08:00


def test_times_are_taken_as_iso_8601_with_a_zone_or_unix_ms(node, admin, env):
    made = {}
    for given in ("2026-12-12T10:00:00+08:00", "2026-12-12T02:00:00Z", str(LAUNCH_MS)):
        cid = new_campaign_id()
        done = run(env, "campaign", "create", cid, "--inventory", "10", "--shards", "1", "--starts-at", given,
                   "--ends-at-ms", "2026-12-13T00:00:00+08:00", "--round", "2026-12-12T12:00:00+08:00:4",
                   "--target", node.address, "--json")
        assert done.returncode == 0, done.stderr
        made[given] = json.loads(done.stdout)["campaign"]
    assert {c["starts_at_ms"] for c in made.values()} == {LAUNCH_MS}
    assert {c["ends_at_ms"] for c in made.values()} == {LAUNCH_MS + 14 * 3_600_000}
    assert all(c["rounds"] == [{"release_at_ms": LAUNCH_MS + 2 * 3_600_000, "amount": 4}]
               for c in made.values())

    cid = new_campaign_id()
    for bad, says in (("2026-12-12T10:00:00", "has no zone: add one"), ("tomorrow", "not a time"),
                      ("2026-12-12", "add one, e.g. 2026-12-12T00:00:00+08:00"),
                      ("1797040800", "looks like seconds")):
        done = run(env, "campaign", "create", cid, "--inventory", "10", "--starts-at", bad,
                   "--target", node.address)
        assert done.returncode == 2 and CLI_ERROR_LINE.fullmatch(done.stderr), done.stderr
        assert says in done.stderr, done.stderr
    no_zone_round = run(env, "campaign", "create", cid, "--inventory", "10", "--round",
                        "2026-12-12T10:00:00:4", "--target", node.address)
    assert no_zone_round.returncode == 2 and "has no zone" in no_zone_round.stderr
    assert cid not in admin.ListCampaigns(pb.ListCampaignsRequest(), timeout=10).campaign_ids  # nothing sent


def test_times_are_shown_in_the_zone_of_tz_then_env_then_config(node, env, tmp_path):
    cid = new_campaign_id()
    assert run(env, "campaign", "create", cid, "--inventory", "10", "--starts-at", str(LAUNCH_MS),
               "--target", node.address).returncode == 0
    config = tmp_path / "cc.toml"
    config.write_text(f'target = "{node.address}"\ntz = "America/New_York"\n')

    def starts(*args: str, **more: str) -> str:
        done = run(env, "campaign", "show", cid, *args, **more)
        assert done.returncode == 0, done.stderr
        return re.search(r"^starts\s+(.+)$", done.stdout, re.M).group(1)  # type: ignore[union-attr]

    assert starts("--target", node.address, "--tz", "Asia/Shanghai") == "2026-12-12 10:00:00.000+08:00"
    assert starts("--target", node.address, "--tz", "UTC") == "2026-12-12 02:00:00.000Z"
    assert starts("--config", str(config)) == "2026-12-11 21:00:00.000-05:00"
    assert starts("--config", str(config), CLAIMCORE_TZ="Europe/Berlin") == "2026-12-12 03:00:00.000+01:00"
    assert starts("--config", str(config), "--tz", "UTC", CLAIMCORE_TZ="Europe/Berlin").endswith("Z")
    assert run(env, "--tz", "Asia/Tokyo", "campaign", "show", cid, "--target", node.address).stdout.count(
        "2026-12-12 11:00:00.000+09:00") == 1  # before the command too
    local = starts("--target", node.address, TZ="Asia/Kolkata")  # no setting: the local zone
    assert local == "2026-12-12 07:30:00.000+05:30"
    wrong = run(env, "campaign", "show", cid, "--target", node.address, "--tz", "Mars/Olympus")
    assert wrong.returncode == 2 and CLI_ERROR_LINE.fullmatch(wrong.stderr) and "Mars/Olympus" in wrong.stderr
    config.write_text('tz = "Nowhere"\n')
    bad_file = run(env, "campaign", "show", cid, "--target", node.address, "--config", str(config))
    assert bad_file.returncode == 2 and ": CONFIG: " in bad_file.stderr and "Nowhere" in bad_file.stderr


# ---------------------------------------------------------------- no node reached: which failure, at once


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1 it signed, and a second CA that signed nothing here."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                "-subj", f"/CN={ca}", cwd=d)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=server", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=d)
    return d


@pytest.fixture(scope="module")
def tls_node(redis_server, pki):  # type: ignore[no-untyped-def]
    node = LocalNode(redis_server.url, "--tls-cert", str(pki / "server.pem"), "--tls-key",
                     str(pki / "server.key"), reach=Access(ca=str(pki / "ca.pem"))).start()
    yield node
    node.stop()


def test_a_node_that_cannot_be_reached_is_one_line_saying_why(node, tls_node, pki, env):
    ca, other = str(pki / "ca.pem"), str(pki / "other-ca.pem")
    patient = ["--connect-timeout", "3600"]  # a wait for the timeout would outlast the run's own limit
    cases = {
        "refused": (["--target", f"127.0.0.1:{free_port()}"],
                    "nothing listens at 127.0.0.1:", "connection refused"),
        "no such host": (["--target", "no-such-host.invalid:50051"],
                         "cannot resolve the host name of no-such-host.invalid:50051", ""),
        "TLS to a plaintext node": (["--target", node.address, "--tls-ca", ca],
                                    f"TLS mismatch: the node at {node.address} does not speak TLS", ca),
        "plaintext to a TLS node": (["--target", tls_node.address],
                                    f"the node at {tls_node.address} closed the connection", "--tls-ca"),
        "wrong CA": (["--target", tls_node.address, "--tls-ca", other],
                     f"the certificate of the node at {tls_node.address} is not signed by the CA in {other}",
                     "wrong --tls-ca"),
    }
    for case, (args, says, also) in cases.items():
        done = run(env, "campaign", "list", *args, *patient)
        assert done.returncode == 3 and done.stdout == "", (case, done.stderr)
        # one line: no traceback, no gRPC log
        assert CLI_ERROR_LINE.fullmatch(done.stderr), (case, done.stderr)
        assert done.stderr.startswith("claimcore campaign list: UNAVAILABLE: ") and says in done.stderr, (
            case, done.stderr)
        assert also in done.stderr, (case, done.stderr)
    by_env = run(env, "campaign", "list", *patient, CLAIMCORE_TARGET=f"127.0.0.1:{free_port()}")
    assert "(target from env CLAIMCORE_TARGET)" in by_env.stderr and by_env.returncode == 3
    right = run(env, "campaign", "list", "--target", tls_node.address, "--tls-ca", ca, "--json")
    assert right.returncode == 0 and right.stderr == "", right.stderr
    debug = run(env, "campaign", "list", "--target", node.address, "--tls-ca", ca, GRPC_VERBOSITY="INFO")
    # GRPC_VERBOSITY set by the caller wins (gRPC's lines come too), and the last line still says why
    assert debug.returncode == 3 and "TLS mismatch" in debug.stderr.splitlines()[-1]


def test_a_port_that_accepts_but_never_answers_gives_up_after_the_connect_timeout(env):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nothing ever speaks
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        done = run(env, "campaign", "list", "--target", address, "--connect-timeout", "0.5")
    assert done.returncode == 3 and CLI_ERROR_LINE.fullmatch(done.stderr), done.stderr
    assert f"no node answers at {address} within 0.5 s" in done.stderr


# ---------------------------------------------------------------- the eligibility file


@pytest.mark.parametrize("text, says", [
    ("u1,1\nu2,0\n", "line 1: no header: the first line must name the columns"),
    ("", "line 1: no header: the file is empty"),
    ("user_id,alowed\nu1,1\n", "line 1: unknown column 'alowed'"),
    ("allowed,region\n1,north\n", "line 1: the header has no user_id column"),
    ("user_id,allowed\r\nu1,1\r\n\r\nu2,maybe\r\n", "line 4: allowed: not a yes/no value: 'maybe'"),
    ("\nuser_id,allowed\nu1,1\n\n\nu2,1\nu3,2\n", "line 7: allowed: not a yes/no value: '2'"),
    ('user_id,region\nu1,"north"\nu2,"far\nsouth"\nu3,"a b"\n', "line 3: region 'far\\nsouth'"),
    ('user_id,tags\nu2,"vip;\nstaff;\n"\nu3,"a b"\n', "line 5: tag 'a b'"),  # after a row of 3 lines
    ("user_id\nu1\nu2\nu1\n", "line 4: user_id 'u1' again (first on line 2)"),
    ("user_id,tags\nu1,vip\nu2,a;b,c\n", "line 3: 3 values, but the header names only user_id, tags"),
])
def test_a_bad_eligibility_file_names_its_line_and_sends_nothing(node, admin, env, tmp_path, text, says):
    cid = create_campaign(admin, inventory=5, shards=1, allow_list=True).campaign.campaign_id
    path = tmp_path / "users.csv"
    path.write_bytes(text.encode())
    done = run(env, "eligibility", "load", cid, str(path), "--target", node.address)
    assert done.returncode == 2 and CLI_ERROR_LINE.fullmatch(done.stderr), done.stderr
    assert done.stderr.startswith(f"claimcore eligibility load: BAD_INPUT: {path} {says}"), done.stderr
    claim = pb.ClaimRequest(campaign_id=cid, user_id="u1", request_id="r", channel_id="app")
    assert pb_outcome(node, claim) == "NOT_ELIGIBLE"  # nothing was loaded


def pb_outcome(node, request) -> str:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(node.address) as channel:
        reply = pb_grpc.ClaimServiceStub(channel).Claim(request, timeout=10)
    return short_name(pb.Outcome, reply.outcome)


def test_a_good_eligibility_file_loads_in_any_column_order_and_help_lists_the_columns(node, admin, env,
                                                                                     tmp_path):

    cid = create_campaign(admin, inventory=5, shards=2, allow_list=True).campaign.campaign_id
    path = tmp_path / "users.csv"
    path.write_bytes("\ufefftags, user_id ,allowed\r\nvip;x,u1,yes\r\n\r\n,u2,0\r\n".encode())  # a BOM, CRLF
    done = run(env, "eligibility", "load", cid, str(path), "--target", node.address)
    assert done.returncode == 0 and "2 records" in done.stdout, done.stderr

    outcomes = [pb_outcome(node, pb.ClaimRequest(campaign_id=cid, user_id=user, request_id="r",
                                                 channel_id="app")) for user in ("u1", "u2")]
    assert outcomes == ["GRANTED", "NOT_ELIGIBLE"]
    shown = run(env, "eligibility", "load", "--help").stdout
    for column in ("user_id", "allowed", "denied", "region", "tags", "remove"):
        assert re.search(rf"^  {column} +\S", shown, re.M), column
    assert "eligibility" in run(env, "eligibility", "--help").stdout


def test_serve_on_a_port_in_use_says_so_in_one_line() -> None:
    """A port another process holds: one line naming it, exit 1, no traceback and no gRPC core log line,
    and the embedded redis-server it had started is stopped again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "claimcore", "serve", "--plaintext", "--no-auth",
                              "--ephemeral", "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert run.stderr.splitlines() == [
        f"claimcore serve: cannot listen on 127.0.0.1:{port}: the port is in use, or the host is not an "
        "address of this machine"], run.stderr
    folder = re.search(r"temporary folder (\S+)\)", run.stdout)
    assert folder and not Path(folder.group(1)).exists(), run.stdout  # the ephemeral server was stopped


def test_serve_with_a_certificate_that_is_not_one_says_which(tmp_path: Path) -> None:
    """TLS files that do not load: one line naming them (gRPC alone would only fail to bind the port)."""
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    run = subprocess.run([sys.executable, "-m", "claimcore", "serve", "--tls-cert", str(bad), "--tls-key",
                          str(bad), "--no-auth", "--ephemeral", "--port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and f"--tls-cert {bad}" in lines[0] and "not a PEM certificate" in lines[0], lines
