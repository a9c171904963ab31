"""The CLI's settings: flags, then the environment, then a config file, then the built-in default.

The config file is `--config FILE`, else $CLAIMCORE_CONFIG, else
$XDG_CONFIG_HOME/claimcore/config.toml (~/.config/claimcore/config.toml). A
file named by --config or CLAIMCORE_CONFIG must exist; the default one may
be absent. TOML, every key optional:

    target = "node1.example:50051"
    api_key = "..."
    tls_ca = "ca.pem"          # paths relative to the file's own directory
    tls_cert = "client.pem"
    tls_key = "client.key"
    output = "table"           # or "json"
    log_format = "text"        # or "json"
    tz = "Asia/Shanghai"       # the zone times are shown in (IANA name); default: the local zone

An empty environment variable counts as unset.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from claimcore.ops import cli_output
from claimcore.security import access

ENV = {"target": "CLAIMCORE_TARGET", **access.ENV, "output": "CLAIMCORE_OUTPUT",
       "log_format": "CLAIMCORE_LOG_FORMAT", "tz": "CLAIMCORE_TZ"}
DEFAULTS = {"target": "127.0.0.1:50051", "api_key": "", "tls_ca": "", "tls_cert": "", "tls_key": "",
            "output": "table", "log_format": "text", "tz": ""}
CHOICES = {"output": ("table", "json"), "log_format": ("text", "json")}
PATHS = ("tls_ca", "tls_cert", "tls_key")
CONFIG_ENV = "CLAIMCORE_CONFIG"


class ConfigError(ValueError):
    """A config file or setting the CLI cannot use; `code` is FILE (unreadable) or CONFIG (bad content)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ConfigFile:
    path: Path | None = None
    values: dict[str, str] = field(default_factory=dict)


def default_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or str(Path.home()), ".config")
    return Path(base) / "claimcore" / "config.toml"


def load(flag: str | None, env: Mapping[str, str] | None = None) -> ConfigFile:
    """The config file in force (an empty one if there is none)."""
    env = os.environ if env is None else env
    explicit = flag or env.get(CONFIG_ENV) or ""
    path = Path(explicit).expanduser() if explicit else default_path(env)
    if not explicit and not path.exists():
        return ConfigFile()
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        how = "--config" if flag else CONFIG_ENV
        raise ConfigError("FILE", f"config file ({how}): {exc.strerror}: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("CONFIG", f"{path}: not TOML: {exc}") from None
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ConfigError("CONFIG", f"{path}: unknown settings {', '.join(unknown)} "
                                    f"(known: {', '.join(DEFAULTS)})")
    values: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise ConfigError("CONFIG", f"{path}: {key} must be a string, not {value!r}")
        _check_choice(key, value, f"{path}: {key}")
        if key in PATHS and value:
            value = str((path.parent / Path(value).expanduser()).resolve())
        values[key] = value
    return ConfigFile(path, values)


def _check_choice(key: str, value: str, where: str, code: str = "CONFIG") -> None:
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(code, f"{where} must be {' or '.join(CHOICES[key])}, not {value!r}")
    if key == "tz" and value:
        try:
            cli_output.zone(value)
        except ValueError as exc:
            raise ConfigError(code, f"{where}: {exc}") from None


@dataclass(frozen=True)
class Settings:
    target: str
    api_key: str
    tls_ca: str
    tls_cert: str
    tls_key: str
    output: str
    log_format: str
    tz: str  # "" = the local zone
    sources: dict[str, str]  # setting -> "flag", "env CLAIMCORE_…", "config <path>" or "default"


def resolve(flags: Mapping[str, str | None], config: ConfigFile,
            env: Mapping[str, str] | None = None) -> Settings:
    """Each setting from its flag (None: not given), else the environment, else the file, else its default."""
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key, default in DEFAULTS.items():
        given = flags.get(key)
        if given is not None:
            values[key], sources[key] = given, "flag"
            _check_choice(key, given, f"--{key.replace('_', '-')}", "USAGE")
        elif env.get(ENV[key]):
            values[key], sources[key] = env[ENV[key]], f"env {ENV[key]}"
            _check_choice(key, values[key], ENV[key])
        elif key in config.values:
            values[key], sources[key] = config.values[key], f"config {config.path}"
        else:
            values[key], sources[key] = default, "default"
    return Settings(**values, sources=sources)
