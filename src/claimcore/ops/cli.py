"""The `claimcore` command: serve, demo, loadgen, campaign administration, ledger export and reconcile.

Output, exit codes and settings: docs/cli.md."""

from __future__ import annotations

import os
import sys


# gRPC's core library writes its own log lines on standard error (a failed TLS handshake, a refused
# connection, a port already taken): a command says what went wrong in one line of its own instead, and
# so does `serve`. The setting is read when grpc is imported, so it is made here, before any import of
# grpc. A process that imports this module keeps gRPC's default; GRPC_VERBOSITY set by the caller (to
# debug a connection or a node) wins.
def _run_as_the_claimcore_program() -> bool:
    """True for `claimcore ...` and `python -m claimcore ...`; not when a test or tool imports this module."""
    program = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    main_module = os.path.join("claimcore", "__main__.py")
    return os.path.basename(program) == "claimcore" or program.endswith(main_module)


if _run_as_the_claimcore_program():
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import argparse  # noqa: E402
import logging  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

import grpc  # noqa: E402

from claimcore import __version__  # noqa: E402
from claimcore.ops import cli_config, cli_output  # noqa: E402
from claimcore.security import access  # noqa: E402

CONNECT_TIMEOUT_S = 5.0
TZ_HELP = ("show times in this IANA zone, e.g. Asia/Shanghai or UTC (env CLAIMCORE_TZ, config tz; "
           "default: the local zone)")


def build_parser() -> argparse.ArgumentParser:
    """The command's table: the global flags, then each command's parser filled by its own module."""
    from claimcore.loadtest import demo, loadgen
    from claimcore.ops import admin_cmds, dashboard, ledger_cli, serve_cmd

    parser = _Parser(prog="claimcore", description=__doc__, epilog="exit codes: 0 ok; 1 the node refused "
                     "or a check failed; 2 bad usage, input or file; 3 no node reachable (docs/cli.md)")
    parser.add_argument("--version", action="version", version=f"claimcore {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="config file (env CLAIMCORE_CONFIG; default ~/.config/claimcore/config.toml)")
    parser.add_argument("--log-format", choices=["text", "json"], default=None,
                        help="log lines as text or JSON (env CLAIMCORE_LOG_FORMAT, config log_format; "
                             "default text)")
    parser.add_argument("--tz", metavar="ZONE", default=None, help=TZ_HELP)
    general, node, output = _general_options(), _node_options(), _output_options()
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a front node")
    serve_cmd.add_arguments(serve)
    serve.set_defaults(func=serve_cmd.run)

    keygen = sub.add_parser("keygen", parents=[general, output],
                            help="make an API key and its line for the credentials file")
    admin_cmds.add_keygen_arguments(keygen)
    keygen.set_defaults(func=admin_cmds.run_keygen)

    demo_parser = sub.add_parser("demo", help="run a launch-second burst end to end and report")
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(func=demo.run)

    dashboard.add_arguments(sub.add_parser("dashboard", help="show a launch live on a big screen "
                                                             "(docs/dashboard.md)"))

    loadgen_parser = sub.add_parser("loadgen", help="replay a launch against running nodes, check and report")
    loadgen.add_arguments(loadgen_parser)
    access.add_arguments(loadgen_parser)
    loadgen_parser.set_defaults(func=loadgen.run, reaches_node=True)

    # The node's settings (--target, --api-key, --tls-*, ...) and --json are taken before the action
    # (`campaign --target X list`) and after it (`campaign list --target X`): both parsers know them.
    common = [general, node, output]
    merchant = sub.add_parser("merchant", aliases=["merchants"], parents=common,
                              help="register and list the merchants of a campaign")
    admin_cmds.add_merchant_arguments(merchant, common)
    merchant.set_defaults(func=admin_cmds.run_merchant, reaches_node=True)

    elig = sub.add_parser("eligibility", parents=common,
                          help="load or change users' eligibility for a campaign")
    admin_cmds.add_eligibility_arguments(elig, common)
    elig.set_defaults(func=admin_cmds.run_eligibility, reaches_node=True)

    export = sub.add_parser("export", parents=[general, node],
                            help="write a campaign's ledger events as CSV or JSON lines")
    ledger_cli.add_export_arguments(export)
    export.set_defaults(func=ledger_cli.run_export, reaches_node=True)
    reconcile = sub.add_parser("reconcile", parents=common,
                               help="check a campaign's live figures against its ledger "
                                    "(exit 1: differences)")
    ledger_cli.add_reconcile_arguments(reconcile)
    reconcile.set_defaults(func=ledger_cli.run_reconcile, reaches_node=True)

    camp = sub.add_parser("campaign", parents=common, help="administer campaigns through a node")
    admin_cmds.add_campaign_arguments(camp, common)
    camp.set_defaults(func=admin_cmds.run_campaign, reaches_node=True)
    return parser


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every flag's help line ends with its default, unless the line already names it.

    Nothing is added for a default that means "not given" (None, False, an empty string or list) or for a
    flag whose default is taken from elsewhere (argparse.SUPPRESS: the environment or the config file)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = action.default
        if ("default" in help_text.lower() or default is argparse.SUPPRESS or default is None
                or default is False or default == "" or default == [] or not action.option_strings):
            return help_text
        shown = ", ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{help_text} (default: {shown})".lstrip()


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, `claimcore <command>: USAGE: <details>`, exit 2.

    No parser of the command takes an abbreviation of a long flag (`--no-aut` is not `--no-auth`: a
    shortened flag silently meant another one), and every parser shows defaults the same way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(cli_output.EXIT_USAGE,
                  f"{self.prog}: USAGE: {cli_output.one_line(message)} (see {self.prog} --help)\n")


def _general_options() -> argparse.ArgumentParser:
    """--config and --log-format, also after the command (`default=SUPPRESS`: not given = not set)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings: flags, else the environment, else the config file "
                                      "(docs/cli.md)")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="config file (env CLAIMCORE_CONFIG; default ~/.config/claimcore/config.toml)")
    group.add_argument("--log-format", choices=["text", "json"], default=argparse.SUPPRESS,
                       help="log lines as text or JSON (env CLAIMCORE_LOG_FORMAT, config log_format)")
    group.add_argument("--tz", metavar="ZONE", default=argparse.SUPPRESS, help=TZ_HELP)
    return parent


def _node_options() -> argparse.ArgumentParser:
    """How to reach the node: given before or after the action, so none of them has a default here."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("reaching the node (flags, else the environment, else the config file)")
    group.add_argument("--target", metavar="HOST:PORT", default=argparse.SUPPRESS,
                       help="a node (env CLAIMCORE_TARGET, config target; default 127.0.0.1:50051)")
    group.add_argument("--api-key", default=argparse.SUPPRESS,
                       help="the caller's API key (env CLAIMCORE_API_KEY, config api_key)")
    group.add_argument("--tls-ca", default=argparse.SUPPRESS,
                       help="dial with TLS, trusting these PEM roots (env CLAIMCORE_TLS_CA, config tls_ca); "
                            "else plaintext")
    group.add_argument("--tls-cert", default=argparse.SUPPRESS,
                       help="client certificate for mutual TLS (env CLAIMCORE_TLS_CERT, config tls_cert)")
    group.add_argument("--tls-key", default=argparse.SUPPRESS,
                       help="its private key (env CLAIMCORE_TLS_KEY, config tls_key)")
    group.add_argument("--connect-timeout", type=float, metavar="SECONDS", default=argparse.SUPPRESS,
                       help=f"give up (exit 3) if no node answers this soon (default {CONNECT_TIMEOUT_S:g})")
    return parent


def _output_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--json", dest="output", action="store_const", const="json",
                        default=argparse.SUPPRESS, help="print JSON for scripts (same as --output json)")
    choice.add_argument("--output", choices=["table", "json"], default=argparse.SUPPRESS,
                        help="tables for people (default) or JSON (env CLAIMCORE_OUTPUT, config output)")
    return parent


def _configure_logging(fmt: str, level: int) -> None:
    from claimcore.node import logs  # here, not at the top: the other commands need no node

    logs.configure(fmt, level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = " ".join(part for part in (args.command, getattr(args, "action", None)) if part)
    try:
        config = cli_config.load(getattr(args, "config", None))
        settings = cli_config.resolve({key: getattr(args, key, None) for key in cli_config.DEFAULTS}, config)
    except cli_config.ConfigError as exc:
        return cli_output.report(command, exc.code, str(exc), cli_output.EXIT_USAGE)
    _configure_logging(settings.log_format, logging.INFO if args.verbose else logging.WARNING)
    cli_output.set_zone(settings.tz)  # checked by resolve
    args.output, args.sources = settings.output, settings.sources
    if getattr(args, "reaches_node", False):  # a command that calls nodes
        args.target = settings.target
        if getattr(args, "connect_timeout", None) is None:
            args.connect_timeout = CONNECT_TIMEOUT_S
        for key in ("api_key", "tls_ca", "tls_cert", "tls_key"):
            setattr(args, key, getattr(settings, key))
        try:
            reach = access.from_args(args)
            reach.check()
        except ValueError as exc:
            code = "FILE" if str(exc).startswith("TLS file") else "USAGE"
            return cli_output.report(command, code, str(exc), cli_output.EXIT_USAGE)
        access.configure(reach)
    try:
        return int(args.func(args) or 0)
    except cli_output.CliError as exc:
        return cli_output.report(command, exc.code, exc.details, exc.exit_code)
    except grpc.RpcError as err:
        failure = cli_output.from_rpc(err)
        return cli_output.report(command, failure.code, failure.details, failure.exit_code)
