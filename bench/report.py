"""Tables of figures and ratios, as aligned text for the terminal and as Markdown.

Every figure is the median over rounds. Ratios are egress's figure over the other's, for
throughput (requests/s or MB/s: above 1.0 egress is faster) and for CPU per request (below
1.0 egress is cheaper).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from bench.load import Sample
from bench.memory import IdleResult, StreamResult
from bench.micro import MicroResult
from bench.scale import ScaleResult
from bench.workloads import Facts, Workload
from bench.wsmemory import WsMemoryResult

__all__ = ["RATIOS", "Table", "figure_tables", "memory_tables", "micro_tables", "ratio_tables",
           "render", "scale_table"]

# (egress contender, the one it is compared with)
RATIOS = (("egress-pass", "mitmdump-pass"), ("egress-mitm", "mitmdump-mitm"),
          ("egress-pass", "squid"), ("egress-mitm", "kow"),
          # the fast path against egress with it off (--front off: mitmproxy alone)
          ("egress-pass", "egress-pass-off"), ("egress-mitm", "egress-mitm-off"))

Table = tuple[str, list[str], list[list[str]]]  # title, header, rows


def render(table: Table, markdown: bool) -> str:
    title, header, rows = table
    if markdown:
        lines = [f"#### {title}", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=False)))

    rule = "-" * len(fmt(header))
    return "\n".join([title, rule, fmt(header), rule, *map(fmt, rows), ""])


def _median(values: Sequence[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cpu_per(samples: list[Sample], per: float) -> float | None:
    values = [s.cpu_s / s.units * per for s in samples
              if s.cpu_s is not None and s.units]
    return _median(values)


def figure_tables(loads: list[Workload], results: dict[str, dict[str, list[Sample]]],
                  facts: dict[str, Facts]) -> list[Table]:
    tables: list[Table] = []
    for w in loads:
        per_contender = results.get(w.key, {})
        if not per_contender:
            continue
        rows = []
        for name, samples in per_contender.items():
            failed = sum(s.failed for s in samples)
            mark = _mode(facts.get(name))
            if w.transfer:
                rows.append([name + mark, _f(_median([s.mb_per_s for s in samples])),
                             _f(_cpu_per(samples, 1024), 2),
                             _f(_median([s.peak_rss_mb for s in samples])),
                             str(failed), _bg(samples), str(len(samples))])
            else:
                rows.append([name + mark, _f(_median([s.rps for s in samples]), 0),
                             _f(_median([s.p50_ms for s in samples])),
                             _f(_median([s.p99_ms for s in samples])),
                             _f(_cpu_per(samples, 1000), 2),
                             _f(_median([s.peak_rss_mb for s in samples])),
                             str(failed), _bg(samples), str(len(samples))])
        header = (["contender", "MB/s", "CPU s/GiB", "peak RSS MB", "failed", "bg CPU %",
                   "rounds"]
                  if w.transfer else
                  ["contender", "req/s", "p50 ms", "p99 ms", "CPU s/1k req", "peak RSS MB",
                   "failed", "bg CPU %", "rounds"])
        count = ("" if w.transfer else f" ({w.n:,} requests)" if not w.n_mitm else
                 f" ({w.n:,} requests; {w.n_mitm:,} through intercepting proxies)")
        tables.append((f"{w.title}{count}", header, rows))
    return tables


def _bg(samples: list[Sample]) -> str:
    """Worst share of the machine's CPU that processes outside the benchmark took."""
    values = [s.background_pct for s in samples if s.background_pct is not None]
    return _f(max(values), 0) if values else "-"


def _mode(facts: Facts | None) -> str:
    if facts is None or facts.intercepted is None:
        return ""
    return (" [mitm+inject]" if facts.injected and facts.intercepted
            else " [mitm]" if facts.intercepted else "")


def ratio_tables(loads: list[Workload], results: dict[str, dict[str, list[Sample]]]
                 ) -> list[Table]:
    """Two tables: throughput ratios and CPU-per-request ratios, egress over each peer."""
    header = ["workload"] + [f"{a.removeprefix('egress-')}/{b}" for a, b in RATIOS]
    speed_rows, cpu_rows = [], []
    for w in loads:
        per = results.get(w.key, {})
        speed = {n: _median([s.mb_per_s if w.transfer else s.rps for s in ss])
                 for n, ss in per.items()}
        cpu = {n: _cpu_per(ss, 1000) for n, ss in per.items()}
        speed_rows.append([w.key] + [_ratio(speed.get(a), speed.get(b)) for a, b in RATIOS])
        cpu_rows.append([w.key] + [_ratio(cpu.get(a), cpu.get(b)) for a, b in RATIOS])
    return [
        ("Throughput ratio, egress / other (req/s or MB/s; above 1.00x egress is faster)",
         header, speed_rows),
        ("CPU ratio, egress / other (CPU s per request or per byte; below 1.00x egress is cheaper)",
         header, cpu_rows),
    ]


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def micro_tables(m: MicroResult) -> list[Table]:
    loads = [[f"{lr.rules:,}", _f(lr.yaml_kb, 0), _f(lr.seconds, 3),
              _f(lr.seconds / lr.rules * 1e6, 1)] for lr in m.loads]
    calls = [[t.name, f"{t.calls:,}", _f(t.p50_us, 2), _f(t.p99_us, 2)] for t in m.timings]
    return [
        ("Policy load (load_policy_texts, one skill, generated YAML)",
         ["rules", "YAML KiB", "load s", "us/rule"], loads),
        (f"Per-call latency (wrong decisions: {m.wrong_decisions})",
         ["step", "calls", "p50 us", "p99 us"], calls),
    ]


def memory_tables(idle: dict[str, IdleResult], streams: dict[str, StreamResult]) -> list[Table]:
    tables: list[Table] = []
    if idle:
        rows = [[name, f"{r.tunnels:,}/{r.wanted:,}", _f(r.rss_before_mb), _f(r.rss_idle_mb),
                 _f(r.kb_per_tunnel, 0), _f(r.rss_closed_mb), _f(r.seconds_to_open),
                 r.problem or ""]
                for name, r in idle.items()]
        tables.append(("Idle tunnels (CONNECT + TLS + one request each, then idle)",
                       ["contender", "open", "RSS before MB", "RSS idle MB", "KiB/tunnel",
                        "RSS closed MB", "open s", "problem"], rows))
    if streams:
        rows = [[name, _f(r.bytes / 1048576, 0), _f(r.mb_per_s), _f(r.rss_before_mb),
                 _f(r.peak_rss_mb), _f(r.rss_after_mb), str(r.status)]
                for name, r in streams.items()]
        tables.append(("Streamed 1 GiB download (curl through the proxy)",
                       ["contender", "MiB", "MB/s", "RSS before MB", "peak RSS MB",
                        "RSS after MB", "status"], rows))
    return tables


def websocket_tables(results: dict[str, WsMemoryResult]) -> list[Table]:
    if not results:
        return []
    rows = [[name, str(r.mib), _f(r.mb_per_s), _f(r.rss_before_mb), _f(r.peak_rss_mb),
             _f(r.kib_per_mib), _f(r.rss_closed_mb), r.problem or ""]
            for name, r in results.items()]
    return [("One WebSocket, 1 MiB messages acknowledged one by one (RSS per MiB relayed)",
             ["contender", "MiB", "MiB/s", "RSS before MB", "peak RSS MB", "KiB RSS/MiB",
              "RSS closed MB", "problem"], rows)]


def scale_table(r: ScaleResult) -> Table:
    return (f"egress with a {r.rules:,}-rule policy (hey -c 1 keep-alive while POST /reload runs)",
            ["startup s", "reload answered s", "slowest request ms", "p99 ms", "problem"],
            [[_f(r.startup_s), _f(r.reload_s), _f(r.slowest_ms, 0), _f(r.p99_ms),
              r.problem or ""]])


def facts_lines(facts: dict[str, Facts]) -> list[str]:
    lines = []
    for name, f in facts.items():
        what = ("intercepted" if f.intercepted else "passed through") if f.intercepted is not None \
            else "not probed"
        inj = "" if f.injected is None else (", credential injected" if f.injected
                                             else ", no credential injected")
        lines.append(f"- {name}: TLS {what}{inj}")
        lines += [f"  - {note}" for note in f.notes]
    return lines


def write_all(tables: Sequence[Table], out: Callable[[str], None], markdown: bool) -> None:
    for t in tables:
        out(render(t, markdown))
