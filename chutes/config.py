"""Client configuration: `~/.chutes/config.ini` (or `CHUTES_CONFIG_PATH`) plus environment overrides.

The file layout is the published CLI's (official-client-wire.md 1), so a config written by
`chutes register` works unchanged:

    [api]
    base_url = http://127.0.0.1:8000
    [auth]
    user_id = ...
    username = ...
    hotkey_seed = <hex of the 32-byte sr25519 mini-secret, with or without 0x>
    hotkey_name = ...
    hotkey_ss58address = 5...
    api_key = cpk_...        (ours: optional, used instead of hotkey signing when present)

Differences from the published CLI, on purpose:
- `CHUTES_API_URL` wins over `[api] base_url` (the real CLI prefers the file), so one config.ini can
  be pointed at a local suite for a single command; and there is no default URL: talking to the
  production API by accident from a test setup is worse than an error.
- `CHUTES_API_KEY` (else `[auth] api_key`) authenticates with `Authorization: <key>`; the real CLI
  only signs with the hotkey. Without a key, the hotkey entries are required.
- The file is optional when the environment supplies the URL and a key.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class ConfigError(Exception):
    """The configuration cannot serve the command; the message says what to set."""


def config_path() -> Path:
    """`CHUTES_CONFIG_PATH`, else `~/.chutes/config.ini` (HOME decides `~`, as in the real CLI)."""
    configured = os.environ.get("CHUTES_CONFIG_PATH")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".chutes" / "config.ini"


@dataclass(frozen=True)
class Config:
    path: Path
    file_found: bool
    base_url: str | None  # from the file only; see `api_base_url` for the effective one
    user_id: str | None
    username: str | None
    hotkey_seed: str | None
    hotkey_name: str | None
    hotkey_ss58address: str | None
    api_key: str | None

    @property
    def api_base_url(self) -> str:
        """The API origin to talk to: `CHUTES_API_URL`, else `[api] base_url`, else an error."""
        url = os.environ.get("CHUTES_API_URL") or self.base_url
        if not url:
            raise ConfigError(
                "no API URL: set CHUTES_API_URL (e.g. the `gateway:` URL `chutes-suite up` prints) "
                f"or [api] base_url in {self.path}"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"API URL {url!r} is not an http(s) URL")
        # The real client drops any path of the base URL (it sends absolute paths), so the API is
        # always at the root of its origin; doing the same keeps both clients on the same URLs.
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def has_hotkey(self) -> bool:
        return bool(self.hotkey_seed and self.hotkey_ss58address)

    # The published SDK's config has the same values in two groups, which chute code reads as
    # `config.auth.username` and `config.generic.api_base_url` (e.g. through `Cord.config`).
    @property
    def auth(self) -> Config:
        """The [auth] values (user_id, username, hotkey_*): this object carries them itself."""
        return self

    @property
    def generic(self) -> GenericConfig:
        """The API origin, as `generic.api_base_url`."""
        return GenericConfig(api_base_url=self.api_base_url)


@dataclass(frozen=True)
class GenericConfig:
    api_base_url: str


_loaded: Config | None = None


def get_config() -> Config:
    """The config, read once per process (the published SDK's accessor; see `load_config`)."""
    global _loaded
    if _loaded is None:
        _loaded = load_config()
    return _loaded


def _value(parser: configparser.ConfigParser, section: str, key: str) -> str | None:
    # Empty values count as unset: the real CLI writes every key, some of them empty.
    value = parser.get(section, key, fallback=None)
    if value is None:
        return None
    return value.strip() or None


def load_config(path: Path | None = None) -> Config:
    """Read the config file (if any) and the environment overrides; never contacts the API."""
    path = path or config_path()
    parser = configparser.ConfigParser(interpolation=None)
    found = False
    if path.is_file():
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as error:
            raise ConfigError(f"cannot parse {path}: {error}") from None
        found = True
    return Config(
        path=path,
        file_found=found,
        base_url=_value(parser, "api", "base_url"),
        user_id=_value(parser, "auth", "user_id"),
        username=_value(parser, "auth", "username"),
        hotkey_seed=_value(parser, "auth", "hotkey_seed"),
        hotkey_name=_value(parser, "auth", "hotkey_name"),
        hotkey_ss58address=_value(parser, "auth", "hotkey_ss58address"),
        api_key=os.environ.get("CHUTES_API_KEY") or _value(parser, "auth", "api_key"),
    )
