"""The data directory's config.toml: defaults when absent, strictly checked when present."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from proctor.config import (
    CONFIG_FILE,
    DEFAULT_CONFIG_TOML,
    MAX_QUOTA,
    Config,
    QuotaConfig,
    QuotaLimits,
    load_config,
    write_default_config,
)
from proctor.errors import ConfigError
from proctor.governor.stream import DEFAULT_MAX_STREAMS_PER_PRINCIPAL

RANGE = f"expected an integer from 1 to {MAX_QUOTA}"


def test_the_written_defaults_are_the_defaults_enforced() -> None:
    assert Config.from_toml(DEFAULT_CONFIG_TOML) == Config()
    assert Config().quotas.default == QuotaLimits(max_running=64, max_starts_per_minute=600, max_streams=64)
    # The stream default did not change by moving into the configuration.
    assert QuotaLimits().max_streams == DEFAULT_MAX_STREAMS_PER_PRINCIPAL


def test_an_empty_file_and_an_empty_table_mean_the_defaults() -> None:
    assert Config.from_toml("") == Config()
    assert Config.from_toml("[quotas]\n") == Config()


def test_a_missing_file_means_the_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path) == Config()


def test_write_default_config_creates_it_once_and_reads_back(tmp_path: Path) -> None:
    path = write_default_config(tmp_path)
    assert path == tmp_path / CONFIG_FILE
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o644
    assert load_config(tmp_path) == Config()
    with pytest.raises(ConfigError, match="cannot create"):
        write_default_config(tmp_path)  # never over an existing file


def test_overrides_inherit_what_they_do_not_name() -> None:
    config = Config.from_toml(
        "[quotas]\nmax_running = 10\nmax_streams = 3\n"
        "[quotas.principals.ci-runner]\nmax_running = 200\n"
        '[quotas.principals."build.bot"]\nmax_starts_per_minute = 5\n'
    )
    quotas = config.quotas
    assert quotas.limits("alice") == QuotaLimits(10, 600, 3)
    assert quotas.limits("ci-runner") == QuotaLimits(200, 600, 3)
    assert quotas.limits("build.bot") == QuotaLimits(10, 5, 3)


def test_an_override_matches_its_principal_ignoring_case() -> None:
    quotas = Config.from_toml("[quotas.principals.Admin]\nmax_running = 1\n").quotas
    assert quotas.limits("admin").max_running == 1
    assert quotas.limits("ADMIN").max_running == 1
    assert quotas.limits("alice").max_running == 64


def test_the_parsed_configuration_cannot_be_changed() -> None:
    quotas = Config.from_toml("[quotas.principals.bob]\nmax_running = 1\n").quotas
    with pytest.raises(TypeError):
        quotas.principals["alice"] = QuotaLimits()  # type: ignore[index]


INVALID = [
    ("[quota]\n", "unknown key quota: expected one of quotas, witnesses, found quota"),
    ("format = 1\n", "unknown key format"),
    ("[quotas]\nmax_runing = 4\n", "unknown key quotas.max_runing: expected one of max_running"),
    ('[quotas]\nmax_running = "4"\n', f"quotas.max_running: {RANGE}, found a string ('4')"),
    ("[quotas]\nmax_running = 4.0\n", f"quotas.max_running: {RANGE}, found a float (4.0)"),
    ("[quotas]\nmax_streams = true\n", f"quotas.max_streams: {RANGE}, found a boolean (True)"),
    ("[quotas]\nmax_running = [4]\n", f"quotas.max_running: {RANGE}, found a list ([4])"),
    ("[quotas]\nmax_running = -1\n", f"quotas.max_running: {RANGE}, found -1"),
    ("[quotas]\nmax_starts_per_minute = 0\n", f"quotas.max_starts_per_minute: {RANGE}, found 0"),
    ("[quotas]\nmax_running = 1000000001\n", f"quotas.max_running: {RANGE}, found 1000000001"),
    ("quotas = 3\n", "quotas: expected a table, found an integer"),
    ("[quotas]\nprincipals = 3\n", "quotas.principals: expected a table, found an integer"),
    ("[quotas.principals]\nbob = 3\n", "quotas.principals.bob: expected a table, found an integer"),
    (
        "[quotas.principals.bob]\nmax_runnin = 3\n",
        "unknown key quotas.principals.bob.max_runnin: expected one of max_running",
    ),
    (
        "[quotas.principals.bob]\nmax_running = -3\n",
        f"quotas.principals.bob.max_running: {RANGE}, found -3",
    ),
    (
        "[quotas.principals.bob.extra]\nmax_running = 3\n",
        "unknown key quotas.principals.bob.extra",
    ),
    ('[quotas.principals."-bob"]\n', "quotas.principals.-bob: expected a principal name"),
    (
        "[quotas.principals.bob]\n[quotas.principals.BOB]\n",
        "expected one table per principal (names are unique ignoring case), found 'bob' and 'BOB'",
    ),
    ("[quotas\n", "expected TOML, found invalid text"),
]


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[m.split(":")[0][:40] for _, m in INVALID])
def test_an_invalid_configuration_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config.from_toml(text)


def test_limits_check_themselves_when_built() -> None:
    with pytest.raises(ConfigError, match=re.escape(f"quotas.max_running: {RANGE}, found 0")):
        QuotaLimits(max_running=0)
    with pytest.raises(ConfigError, match="found a boolean"):
        QuotaConfig(QuotaLimits(max_streams=True))


def test_the_file_is_named_in_every_message(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("[quotas]\nmax_running = -1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / CONFIG_FILE}: quotas.max_running")):
        load_config(tmp_path)


def test_a_file_others_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE
    path.write_text("")
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="mode 0666: expected no write access for group and others"):
        load_config(tmp_path)


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.toml").write_text("[quotas]\nmax_running = 1000000\n")
    (tmp_path / CONFIG_FILE).symlink_to(tmp_path / "elsewhere.toml")
    with pytest.raises(ConfigError, match="not a link"):
        load_config(tmp_path)


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / CONFIG_FILE, 0o644)
    with pytest.raises(ConfigError, match="expected a regular file"):
        load_config(tmp_path)


def test_an_oversized_or_undecodable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE
    path.write_text("#" * (64 << 10) + "\n")
    with pytest.raises(ConfigError, match="expected at most 65536 bytes"):
        load_config(tmp_path)
    path.write_bytes(b"\xff\n")
    with pytest.raises(ConfigError, match="expected UTF-8"):
        load_config(tmp_path)
