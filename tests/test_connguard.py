"""The connection limits' rule table (egress/connguard.py, `expired`): which limit an open
connection broke, given its clocks. Times are seconds on a fake monotonic clock."""

from __future__ import annotations

import pytest

from egress.policy.model import ConnectionSettings
from egress.proxy.connguard import Watch, expired
from egress.reasons import Reason

S = ConnectionSettings(request_head_timeout=20, idle_before_auth=30, idle_timeout=300,
                       clienthello_timeout=10, max_unauthenticated_per_address=4)


def watch(last_data: float = 0.0, *, authenticated: bool = False,
          head_started: float | None = None) -> Watch:
    return Watch("127.0.0.1", last_data, head_started=head_started, authenticated=authenticated)


@pytest.mark.parametrize("w, now, pending, reason", [
    pytest.param(watch(), 29, None, None, id="fresh connection, quiet for a while"),
    pytest.param(watch(), 31, None, Reason.AUTH_TIMEOUT, id="silent and unauthenticated"),
    pytest.param(watch(100, authenticated=True), 399, None, None,
                 id="authenticated, quiet under the idle limit"),
    pytest.param(watch(100, authenticated=True), 401, None, Reason.IDLE_TIMEOUT,
                 id="authenticated and idle"),
    pytest.param(watch(25, head_started=5), 26, None, Reason.REQUEST_HEAD_TIMEOUT,
                 id="head dripping: data is recent, the head is old"),
    pytest.param(watch(25, head_started=10), 26, None, None, id="head still within its time"),
    pytest.param(watch(11, authenticated=True), 12, (1.0, "clienthello"),
                 Reason.CLIENTHELLO_TIMEOUT, id="half a ClientHello"),
    pytest.param(watch(11, authenticated=True), 12, (5.0, "clienthello"), None,
                 id="ClientHello still within its time"),
    pytest.param(watch(30, authenticated=True), 31, (5.0, "request line"),
                 Reason.REQUEST_HEAD_TIMEOUT, id="tunnel request line dripping"),
])
def test_expired(w: Watch, now: float, pending: tuple[float, str] | None,
                 reason: Reason | None) -> None:
    broken = expired(w, S, now, pending)
    assert (broken[0] if broken else None) == reason
