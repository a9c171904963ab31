"""TLS, mutual TLS, channel credentials and the admin role, through real nodes (docs/security.md).

Certificates come from the system's openssl, keys from `claimcore keygen`: the
same steps an operator takes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from claimcore.security.access import Access
from claimcore.security.auth import CredentialsError, load_credentials
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, health_status, new_campaign_id, redis_dump
from support import keygen


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=claimcore test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                      ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    # a second CA, whose client certificate the node must refuse
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2", "-subj", "/CN=rogue", cwd=d)
    return d


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    made = {"admin": keygen("--admin"), "alipay": keygen("--channel", "alipay"),
            "bank": keygen("--channel", "bank")}
    made["old-alipay"] = keygen("--channel", "alipay")
    path = tmp_path_factory.mktemp("creds") / "credentials.toml"
    alipay_digests = ", ".join(made[k][1].split("= ")[1].strip("[]") for k in ("alipay", "old-alipay"))
    path.write_text(
        f"[admin]\n{made['admin'][1]}\n\n"
        f"[channels.alipay]\nkeys = [{alipay_digests}]\nclaims_per_s = 1000\n\n"
        f"[channels.bank]\n{made['bank'][1]}\n"
    )
    out = {name: key for name, (key, _) in made.items()}
    out["file"] = str(path)
    return out


@pytest.fixture(scope="module")
def secured(redis_server, keys):  # type: ignore[no-untyped-def]
    node = LocalNode(redis_server.url, "--credentials", keys["file"]).start()
    yield node
    node.stop()


def stubs(node: LocalNode, key: str = ""):  # type: ignore[no-untyped-def]
    ch = Access(api_key=key).channel(node.address)
    return (pb_grpc.ClaimServiceStub(ch), pb_grpc.AdminServiceStub(ch), pb_grpc.RedeemServiceStub(ch))


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def make_campaign(node: LocalNode, admin_key: str, **fields: object) -> str:
    cid = new_campaign_id("sec")
    _, admin, _ = stubs(node, admin_key)
    admin.CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(
        campaign_id=cid, inventory=20, shards=2, value_cents=500, **fields)), timeout=10)
    return cid


def test_unknown_or_missing_keys_are_unauthenticated_and_write_nothing(secured, keys, redis_client):
    cid = make_campaign(secured, keys["admin"])
    before = redis_dump(redis_client, cid)
    for key in ("", "cck_not-a-key", keys["admin"] + "x"):
        claims, admin, redeem = stubs(secured, key)
        calls = [lambda c=claims: c.Claim(pb.ClaimRequest(campaign_id=cid, user_id="u", request_id="r"),
                                          timeout=5),
                 lambda a=admin: a.PauseCampaign(pb.PauseCampaignRequest(campaign_id=cid), timeout=5),
                 lambda r=redeem: r.Release(pb.ReleaseRequest(campaign_id=cid, user_id="u", voucher_id="v"),
                                            timeout=5)]
        assert [code_of(call) for call in calls] == [grpc.StatusCode.UNAUTHENTICATED] * 3
    assert redis_dump(redis_client, cid) == before
    # health stays open to load balancers, without a key
    assert health_status(secured.address) == health_pb2.HealthCheckResponse.SERVING


def test_channels_may_not_administer(secured, keys, redis_client):
    cid = make_campaign(secured, keys["admin"])
    before = redis_dump(redis_client, cid)
    _, admin, _ = stubs(secured, keys["alipay"])
    for call in (lambda: admin.PauseCampaign(pb.PauseCampaignRequest(campaign_id=cid), timeout=5),
                 lambda: admin.ListCampaigns(pb.ListCampaignsRequest(), timeout=5),
                 lambda: admin.CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(
                     campaign_id=new_campaign_id("sec"), inventory=5)), timeout=5)):
        assert code_of(call) == grpc.StatusCode.PERMISSION_DENIED
    assert redis_dump(redis_client, cid) == before


def test_a_channel_claims_only_where_open_and_only_as_itself(secured, keys, redis_client):
    cid = make_campaign(secured, keys["admin"], channels=["alipay"])
    alipay, _, _ = stubs(secured, keys["alipay"])
    bank, _, _ = stubs(secured, keys["bank"])
    before = redis_dump(redis_client, cid)
    assert code_of(lambda: bank.Claim(pb.ClaimRequest(campaign_id=cid, user_id="u1", request_id="r1"),
                                      timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    # a channel id smuggled into the body: refused, also as one item of a batch
    assert code_of(lambda: alipay.Claim(pb.ClaimRequest(campaign_id=cid, user_id="u1", request_id="r1",
                                                        channel_id="bank"), timeout=5)
                   ) == grpc.StatusCode.PERMISSION_DENIED
    batch = [pb.ClaimRequest(campaign_id=cid, user_id="u2", request_id="r2"),
             pb.ClaimRequest(campaign_id=cid, user_id="u3", request_id="r3", channel_id="bank")]
    assert code_of(lambda: alipay.ClaimBatch(pb.ClaimBatchRequest(claims=batch), timeout=5)
                   ) == grpc.StatusCode.PERMISSION_DENIED
    assert redis_dump(redis_client, cid) == before
    # the rotated-out and the new key of one channel both work, and the grant records the channel
    for key, user in ((keys["alipay"], "u1"), (keys["old-alipay"], "u2")):
        claims, _, _ = stubs(secured, key)
        reply = claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=user, request_id="r"), timeout=5)
        assert reply.outcome == pb.OUTCOME_GRANTED and reply.voucher.channel_id == "alipay"


def test_a_channel_sees_and_redeems_only_what_it_issued(secured, keys, redis_client):
    cid = make_campaign(secured, keys["admin"])
    alipay, admin_claims, _ = stubs(secured, keys["alipay"])
    bank, _, bank_redeem = stubs(secured, keys["bank"])
    _, _, alipay_redeem = stubs(secured, keys["alipay"])
    _, admin, _ = stubs(secured, keys["admin"])
    admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
        campaign_id=cid, merchant_id="m1")), timeout=5)
    granted = bank.Claim(pb.ClaimRequest(campaign_id=cid, user_id="u9", request_id="r9"), timeout=5)
    voucher = granted.voucher.voucher_id
    assert granted.outcome == pb.OUTCOME_GRANTED and granted.voucher.channel_id == "bank"

    assert not alipay.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id="u9"), timeout=5).found
    assert bank.GetClaim(pb.GetClaimRequest(campaign_id=cid, user_id="u9"), timeout=5).vouchers[0] \
        .voucher_id == voucher
    order = dict(campaign_id=cid, user_id="u9", voucher_ids=[voucher], merchant_id="m1", order_id="o1",
                 order_amount_cents=1000)
    before = redis_dump(redis_client, cid)
    assert code_of(lambda: alipay_redeem.Redeem(pb.RedeemRequest(**order), timeout=5)
                   ) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: alipay_redeem.Release(pb.ReleaseRequest(campaign_id=cid, user_id="u9",
                                                                   voucher_id=voucher), timeout=5)
                   ) == grpc.StatusCode.PERMISSION_DENIED
    assert redis_dump(redis_client, cid) == before
    assert bank_redeem.Redeem(pb.RedeemRequest(**order), timeout=5).outcome == pb.REDEEM_OUTCOME_REDEEMED
    before = redis_dump(redis_client, cid)
    assert code_of(lambda: alipay_redeem.Reverse(pb.ReverseRequest(campaign_id=cid, user_id="u9",
                                                                   order_id="o1"), timeout=5)
                   ) == grpc.StatusCode.PERMISSION_DENIED
    assert redis_dump(redis_client, cid) == before
    assert bank_redeem.Reverse(pb.ReverseRequest(campaign_id=cid, user_id="u9", order_id="o1"),
                               timeout=5).outcome == pb.REVERSE_OUTCOME_REVERSED


def test_keys_and_user_ids_stay_out_of_the_log(secured, keys):
    claims, _, _ = stubs(secured, "cck_wrong-secret-key")
    with pytest.raises(grpc.RpcError):
        claims.Claim(pb.ClaimRequest(campaign_id="x", user_id="citizen-4711", request_id="r"), timeout=5)
    log = secured.log_tail(100_000)
    for secret in ("cck_wrong-secret-key", keys["admin"], keys["alipay"], "citizen-4711", "u9"):
        assert secret not in log


def test_tls_and_mutual_tls(redis_server, pki):
    tls = LocalNode(redis_server.url, "--tls-cert", str(pki / "server.pem"), "--tls-key",
                    str(pki / "server.key"), reach=Access(ca=str(pki / "ca.pem"))).start()
    mtls = LocalNode(redis_server.url, "--tls-cert", str(pki / "server.pem"), "--tls-key",
                     str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem"),
                     reach=Access(ca=str(pki / "ca.pem"), cert=str(pki / "client.pem"),
                                  key=str(pki / "client.key"))).start()
    try:
        def list_on(node: LocalNode, reach: Access) -> pb.ListCampaignsResponse:
            return pb_grpc.AdminServiceStub(reach.channel(node.address)).ListCampaigns(
                pb.ListCampaignsRequest(), timeout=3)

        ca = str(pki / "ca.pem")
        assert list_on(tls, Access(ca=ca)) is not None
        assert code_of(lambda: list_on(tls, Access())) == grpc.StatusCode.UNAVAILABLE  # plaintext refused
        assert list_on(mtls, Access(ca=ca, cert=str(pki / "client.pem"), key=str(pki / "client.key")))
        assert code_of(lambda: list_on(mtls, Access(ca=ca))) == grpc.StatusCode.UNAVAILABLE  # no client cert
        rogue = Access(ca=ca, cert=str(pki / "rogue.pem"), key=str(pki / "rogue.key"))
        assert code_of(lambda: list_on(mtls, rogue)) == grpc.StatusCode.UNAVAILABLE
    finally:
        tls.stop()
        mtls.stop()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "claimcore", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_the_cli_needs_the_admin_key(secured, keys):
    refused = run_cli("campaign", "--target", secured.address, "list")
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    by_flag = run_cli("campaign", "--target", secured.address, "--api-key", keys["admin"], "list")
    by_env = run_cli("campaign", "--target", secured.address, "list",
                     env={"CLAIMCORE_API_KEY": keys["admin"]})
    assert by_flag.returncode == 0 and by_env.returncode == 0 and by_flag.stdout == by_env.stdout
    channel = run_cli("campaign", "--target", secured.address, "--api-key", keys["bank"], "list")
    assert channel.returncode == 1 and "PERMISSION_DENIED" in channel.stderr


@pytest.mark.parametrize("args, message", [
    (["--no-auth"], "--plaintext"),
    (["--plaintext"], "--no-auth"),
    (["--plaintext", "--credentials", "/nonexistent.toml"], "credentials file"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key", "--no-auth"], "TLS files"),
])
def test_serve_refuses_unsafe_or_broken_settings(args, message):
    done = run_cli("serve", "--redis", "redis://127.0.0.1:1", "--port", "0", *args)
    assert done.returncode != 0 and message in done.stderr


@pytest.mark.parametrize("text, message", [
    ('[admin]\nkeys = ["md5:abc"]\n', "sha256"),
    ('[admin]\nkeys = []\n', "needs keys"),
    ('[channels."bad id"]\nkeys = ["sha256:' + "0" * 64 + '"]\n', "channel id"),
    ('[admin]\nkeys = ["sha256:' + "0" * 64 + '"]\n[channels.a]\nkeys = ["sha256:' + "0" * 64 + '"]\n',
     "both"),
    ('[users]\n', "unknown sections"),
    ('[admin\n', "credentials file"),
    ('[channels.a]\nkeys = ["sha256:' + "1" * 64 + '"]\nclaims_per_s = -1\n', ">= 0"),
])
def test_bad_credentials_files_are_refused_with_the_place(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(CredentialsError) as err:
        load_credentials(path)
    assert message in str(err.value)


def test_the_load_generator_reaches_a_secured_node_from_its_spawned_workers(secured, keys):
    cid = make_campaign(secured, keys["admin"])
    args = ["loadgen", "--target", secured.address, "--campaign", cid, "--users", "300", "--arrival", "burst",
            "--processes", "2", "--concurrency", "16", "--no-progress", "--seed", "7"]
    refused = run_cli(*args)
    assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stdout + refused.stderr
    done = run_cli(*args, env={"CLAIMCORE_API_KEY": keys["admin"]})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, admin, _ = stubs(secured, keys["admin"])
    assert admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=5).campaign.granted == 20
