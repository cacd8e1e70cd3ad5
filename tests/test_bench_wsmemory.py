"""The bench's WebSocket memory workload runs end to end at a tiny size (no timings asserted;
the figures are the benchmark's business: `python -m bench --only memory`)."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.procs import Supervisor
from bench.upstream import write_test_ca
from bench.wsmemory import egress_for_websocket, relay, websocket_sink

EGRESS = str(Path(sys.executable).with_name("egress"))


def test_websocket_memory_workload_relays_through_egress(tmp_path: Path) -> None:
    ca = write_test_ca(tmp_path)
    with Supervisor(tmp_path) as sup, websocket_sink(ca) as port:
        service, proxy, trust = egress_for_websocket(sup, tmp_path, EGRESS, ca, port)
        result = relay(service, proxy, trust, port, mib=8)
    assert result.problem is None
    assert result.mib == 8 and result.seconds > 0
    assert result.rss_before_mb > 0 and result.peak_rss_mb >= result.rss_before_mb
