"""settings.websocket: the largest WebSocket message egress holds and relays."""

from __future__ import annotations

import pytest

from egress.errors import PolicyErrors
from egress.policy.load import load_policy_texts
from egress.policy.model import WebSocketSettings


@pytest.mark.parametrize("text, size", [
    pytest.param("skills: {}\n", 4 * 2**20, id="default 4 MiB"),
    pytest.param("settings:\n  websocket: {max_message: 16MiB}\n", 16 * 2**20, id="with a unit"),
    pytest.param("settings:\n  websocket: {max_message: 65536}\n", 65536, id="bytes"),
    pytest.param("settings:\n  websocket: {max_message: 1KiB}\n", 1024, id="lowest"),
    pytest.param("settings:\n  websocket: {max_message: 1GiB}\n", 2**30, id="highest"),
    pytest.param("settings:\n  websocket: {}\n", 4 * 2**20, id="empty block keeps the default"),
])
def test_max_message(text: str, size: int) -> None:
    policy = load_policy_texts([("p.yaml", text)])
    assert policy.settings.websocket == WebSocketSettings(max_message=size)


@pytest.mark.parametrize("text, line", [
    pytest.param("settings:\n  websocket: {max_message: 100}\n",
                 "p.yaml:2: settings.websocket.max_message: must be between 1KiB and 1GiB",
                 id="too small"),
    pytest.param("settings:\n  websocket: {max_message: 2GiB}\n",
                 "p.yaml:2: settings.websocket.max_message: must be between 1KiB and 1GiB",
                 id="too large"),
    pytest.param("settings:\n  websocket: {max_message: lots}\n",
                 "p.yaml:2: settings.websocket.max_message: 'lots' is not a size; write e.g. "
                 "100MB, 64MiB or 500000", id="not a size"),
    pytest.param("settings:\n  websocket:\n    max_size: 1MiB\n",
                 "p.yaml:3: settings.websocket.max_size: unknown key; expected one of: "
                 "max_message", id="unknown key"),
])
def test_bad_max_message_names_file_line_and_fix(text: str, line: str) -> None:
    with pytest.raises(PolicyErrors) as info:
        load_policy_texts([("p.yaml", text)])
    assert [str(e) for e in info.value.errors] == [line]
