"""How a client reaches a node: TLS (or plaintext) and the API key it presents.

Every claimcore client (the CLI, the load generator, ClaimClient, LocalNode's
health probe) dials through `Access`, so TLS and credentials work the same
everywhere. Flags, then the environment:

    --api-key      CLAIMCORE_API_KEY     sent as `authorization: Bearer <key>`
    --tls-ca       CLAIMCORE_TLS_CA      PEM roots: dial with TLS (else plaintext)
    --tls-cert     CLAIMCORE_TLS_CERT    PEM client certificate, for mutual TLS
    --tls-key      CLAIMCORE_TLS_KEY     its private key
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

ENV = {"api_key": "CLAIMCORE_API_KEY", "tls_ca": "CLAIMCORE_TLS_CA", "tls_cert": "CLAIMCORE_TLS_CERT",
       "tls_key": "CLAIMCORE_TLS_KEY"}  # by flag (argparse dest); the CLI's config file uses the same names


@dataclass(frozen=True)
class Access:
    api_key: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    def check(self) -> None:
        """Refuse contradictory settings and unreadable files (ValueError), before any call."""
        self._credentials()

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if not self.ca:
            if self.cert or self.key:
                raise ValueError("a client certificate needs --tls-ca too (TLS)")
            return None
        if bool(self.cert) != bool(self.key):
            raise ValueError("--tls-cert and --tls-key go together")
        def read(path: str) -> bytes | None:
            try:
                return Path(path).read_bytes() if path else None
            except OSError as exc:
                raise ValueError(f"TLS file: {exc}") from None

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))

    def channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        creds = self._credentials()
        ch = (grpc.secure_channel(target, creds, options=options) if creds
              else grpc.insecure_channel(target, options=options))
        return grpc.intercept_channel(ch, _Metadata(self.metadata)) if self.api_key else ch

    def aio_channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        creds = self._credentials()
        interceptors = [_AioMetadata(self.metadata)] if self.api_key else None
        if creds:
            return grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


PLAINTEXT = Access()


class _Metadata(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.md = metadata

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_ClientCallDetails(details, self.md), request)


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, details: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = (*(details.metadata or ()), *metadata)
        self.credentials = details.credentials
        self.wait_for_ready = details.wait_for_ready
        self.compression = getattr(details, "compression", None)


class _AioMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.md = metadata

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(grpc.aio.ClientCallDetails(
            details.method, details.timeout, grpc.aio.Metadata(*(details.metadata or ()), *self.md),
            details.credentials, details.wait_for_ready), request)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--api-key and --tls-* for any command that calls a node."""
    group = parser.add_argument_group("reaching the node (flags, else the environment)")
    group.add_argument("--api-key", default=None, help="the caller's API key (env CLAIMCORE_API_KEY)")
    group.add_argument("--tls-ca", default=None, help="dial with TLS, trusting these PEM roots "
                                                      "(env CLAIMCORE_TLS_CA); else plaintext")
    group.add_argument("--tls-cert", default=None, help="client certificate for mutual TLS "
                                                        "(env CLAIMCORE_TLS_CERT)")
    group.add_argument("--tls-key", default=None, help="its private key (env CLAIMCORE_TLS_KEY)")


def from_args(args: argparse.Namespace) -> Access:
    def pick(flag: str) -> str:
        given = getattr(args, flag, None)
        return given if given is not None else os.environ.get(ENV[flag], "")

    return Access(api_key=pick("api_key"), ca=pick("tls_ca"), cert=pick("tls_cert"), key=pick("tls_key"))


# This process's way to the nodes: the CLI sets it once from its flags, so the
# load generator's many connections and the admin commands all use it.
_process_access = PLAINTEXT


def configure(access: Access) -> None:
    global _process_access
    _process_access = access


def current() -> Access:
    """This process's Access, to hand to processes it spawns (they start with PLAINTEXT)."""
    return _process_access


def dial(target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    return _process_access.channel(target, options)


def dial_aio(target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    return _process_access.aio_channel(target, options)
