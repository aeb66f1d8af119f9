"""One parser for yes/no and numbers from the environment and the Action's inputs: a typo
is refused with the variable's name and what it accepts, wherever it is read."""

from __future__ import annotations

import pytest
from scopeguard.integrations.github.client import settings_from_env
from scopeguard.integrations.github.runner import Settings
from scopeguard.integrations.jira import RetryPolicy
from scopeguard.integrations.service.settings import ServiceSettings

from scopeguard.errors import InputError, ScopeguardError
from scopeguard.settings import env_flag, parse_flag, parse_number

SECRET = "whsec-0123456789abcdef"


@pytest.mark.parametrize("raw, value", [("1", True), (" Yes ", True), ("ON", True),
                                        ("true", True), ("0", False), ("no", False),
                                        ("Off", False), ("FALSE", False), ("", None),
                                        (None, None)])
def test_flags(raw, value):
    assert parse_flag(raw, "X", default=None) is value  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["tru", "y", "2", "enabled", "nope"])
def test_a_flag_typo_is_refused_naming_the_variable_and_the_spellings(raw):
    with pytest.raises(ScopeguardError) as caught:
        env_flag({"SCOPEGUARD_DURABLE": raw}, "SCOPEGUARD_DURABLE", True)
    message = str(caught.value)
    assert "SCOPEGUARD_DURABLE" in message and repr(raw) in message
    assert "true, yes, 1, on" in message and "false, no, 0, off" in message


@pytest.mark.parametrize("raw, integer", [("-1", False), ("inf", False), ("nan", False),
                                          ("ten", False), ("1.5", True)])
def test_a_bad_number_is_refused(raw, integer):
    with pytest.raises(ScopeguardError, match="SCOPEGUARD_X"):
        parse_number(raw, "SCOPEGUARD_X", 1, integer=integer)
    assert parse_number("", "SCOPEGUARD_X", 7) == 7


def test_every_integration_reads_flags_the_same_way():
    """The service, the GitHub client and the Action's inputs: one behaviour on typos."""
    with pytest.raises(ScopeguardError, match="SCOPEGUARD_DURABLE='tru'"):
        ServiceSettings.from_env({"SCOPEGUARD_WEBHOOK_SECRET": SECRET,
                                  "SCOPEGUARD_DURABLE": "tru"})
    assert ServiceSettings.from_env({"SCOPEGUARD_WEBHOOK_SECRET": SECRET,
                                     "SCOPEGUARD_DURABLE": "off"}).durable is False
    with pytest.raises(ScopeguardError, match="SCOPEGUARD_GITHUB_THROTTLE='nope'"):
        settings_from_env({"SCOPEGUARD_GITHUB_THROTTLE": "nope"})
    assert settings_from_env({"SCOPEGUARD_GITHUB_THROTTLE": "no"})["throttle"] is False
    with pytest.raises(InputError, match="input dry-run='maybe'"):
        Settings.from_env({"INPUT_TOKEN": "t0k", "INPUT_DRY_RUN": "maybe"})
    with pytest.raises(ScopeguardError, match="SCOPEGUARD_WORKERS='1.5'"):
        ServiceSettings.from_env({"SCOPEGUARD_WEBHOOK_SECRET": SECRET,
                                  "SCOPEGUARD_WORKERS": "1.5"})
    with pytest.raises(ScopeguardError, match="SCOPEGUARD_JIRA_RETRIES"):
        RetryPolicy.from_env({"SCOPEGUARD_JIRA_RETRIES": "many"})
