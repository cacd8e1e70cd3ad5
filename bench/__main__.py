"""`python -m bench`: egress against squid, bare mitmdump and keys-on-the-wire, on one machine.

Starts everything itself on loopback (nginx upstream on 127.0.0.3, proxies on 127.0.0.1),
installs what is missing, runs the decision microbenchmarks, the network workloads in rounds
and the memory checks, prints tables of medians and ratios, and writes them as Markdown and
JSON. Every process it starts, it stops, also on Ctrl-C, SIGTERM or an error.

    .venv/bin/python -m bench            # full run, ~15-20 minutes on 2 cores
    .venv/bin/python -m bench --quick    # ~3 minutes: fewer requests and rounds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.contenders import Tools
from bench.environment import describe_machine, ensure_kow, ensure_tools, find_tools
from bench.memory import IdleResult, StreamResult, idle_tunnels, raise_fd_limit, stream
from bench.micro import run_micro
from bench.procs import Supervisor
from bench.scale import policy_at_scale
from bench.upstream import start_nginx, write_test_ca
from bench.wsmemory import WsMemoryResult, egress_for_websocket, relay, websocket_sink
from bench.workloads import CONTENDERS, HEADERS, Run, bundle, run_rounds, start_checked, workloads

SECTIONS = ("micro", "network", "memory", "scale")
_T0 = time.monotonic()


def log(text: str) -> None:
    print(f"[{time.monotonic() - _T0:6.0f}s] {text}", file=sys.stderr, flush=True)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a ~3 minute run: fewer requests, rounds")
    p.add_argument("--rounds", type=int,
                   help="rounds of the network workloads (default 3, quick 2)")
    p.add_argument("--scale", type=float, help="multiply request counts (default 1, quick 0.2)")
    p.add_argument("--only", action="append", choices=SECTIONS,
                   help="run only this section (repeatable)")
    p.add_argument("--contenders", help=f"comma-separated subset of {','.join(CONTENDERS)}")
    p.add_argument("--tunnels", type=int, default=1000, help="idle tunnels to hold (default 1000)")
    p.add_argument("--many-tunnels", type=int, default=10_000, metavar="N",
                   help="concurrent idle tunnels through egress-pass and squid (default 10000; "
                        "0 skips; needs root or a hard open-files limit above 2N+1024)")
    p.add_argument("--noise-pct", type=float, default=20.0,
                   help="retake a sample when processes outside the benchmark took more than "
                        "this share of the machine's CPU meanwhile (default 20)")
    p.add_argument("--retries", type=int, help="how often to retake a noisy sample "
                                                "(default 1, quick 0)")
    p.add_argument("--no-kow", action="store_true", help="skip keys-on-the-wire")
    p.add_argument("--out", type=Path, help="directory for results.md and results.json "
                                            "(default: a new directory under /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # Ctrl-C must stop the run even where the shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The 100,000-rule egress takes a minute: in a full run, or when asked for.
    sections = tuple(args.only or (SECTIONS[:3] if args.quick else SECTIONS))
    rounds = args.rounds or (2 if args.quick else 3)
    scale = args.scale or (0.2 if args.quick else 1.0)
    names = args.contenders.split(",") if args.contenders else list(CONTENDERS)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        print(f"unknown contender(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="egress-bench-"))
    tables: list[report.Table] = []
    data: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                            "rounds": rounds, "scale": scale}
    notes: list[str] = []
    try:
        network = {"network", "memory", "scale"} & set(sections)
        if network:
            ensure_tools(log)
        kow_python, kow_note = (None, "skipped (--no-kow)") if args.no_kow else ensure_kow(log)
        if kow_python is None and "kow" in names:
            names.remove("kow")
            notes.append(f"keys-on-the-wire not measured: {kow_note}")
            log(notes[-1])
        machine = describe_machine(kow_note)
        data["machine"] = dict(machine.rows)

        if "micro" in sections:
            log("decision microbenchmarks")
            sizes = [100, 10_000, 100_000]
            micro = run_micro(sizes, decide_calls=20_000 if args.quick else 100_000,
                              other_calls=5_000 if args.quick else 20_000, log=log)
            tables += report.micro_tables(micro)
            data["micro"] = {
                "loads": [{"rules": lr.rules, "yaml_kb": lr.yaml_kb, "seconds": lr.seconds}
                          for lr in micro.loads],
                "timings": [dataclasses.asdict(t) for t in micro.timings],
                "wrong_decisions": micro.wrong_decisions,
            }

        with Supervisor(work) as sup:
            if network:
                raise_fd_limit(4 * max(args.tunnels, args.many_tunnels) + 1024)
                ca = write_test_ca(work)
                up = start_nginx(sup, work, ca)
                egress, mitmdump = find_tools()
                run = Run(sup, work, up, Tools(egress, mitmdump, kow_python), log,
                          noise_pct=args.noise_pct,
                          retries=args.retries if args.retries is not None else
                          (0 if args.quick else 1),
                          # Retaking noisy samples may not push a full run past ~20 minutes.
                          retry_until=time.monotonic() + (12 if not args.quick else 2) * 60)
                if "network" in sections:
                    loads = workloads(scale)
                    log(f"network workloads: {rounds} rounds x {len(names)} contenders")
                    results = run_rounds(run, names, loads, rounds)
                    tables += report.figure_tables(loads, results, run.facts)
                    tables += report.ratio_tables(loads, results)
                    data["network"] = {
                        w.key: {n: [dataclasses.asdict(s) for s in ss] for n, ss in r.items()}
                        for w in loads if (r := results.get(w.key))}
                if "memory" in sections:
                    idle, streams = memory_section(run, names, args)
                    ws = websocket_section(run, names, args)
                    tables += report.memory_tables(idle, streams)
                    tables += report.websocket_tables(ws)
                    data["memory"] = {
                        "idle": {k: dataclasses.asdict(v) for k, v in idle.items()},
                        "stream": {k: dataclasses.asdict(v) for k, v in streams.items()},
                        "websocket": {k: dataclasses.asdict(v) for k, v in ws.items()}}
                if "scale" in sections:
                    log("egress with a 100,000-rule policy: startup and reload")
                    scale = policy_at_scale(sup, work, up, egress, 100_000)
                    tables.append(report.scale_table(scale))
                    data["policy_at_scale"] = dataclasses.asdict(scale)
                notes += report.facts_lines(run.facts)
    except KeyboardInterrupt:
        log("interrupted: every process started was stopped")
        return 130
    finally:
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(_summary(data, tables, notes, markdown=False))
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="egress-bench-results-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(_summary(data, tables, notes, markdown=True))
    (out_dir / "results.json").write_text(json.dumps(data, indent=1, default=str))
    log(f"results written to {out_dir}/results.md and results.json "
        f"({(time.monotonic() - _T0) / 60:.1f} minutes)")
    return 0


def memory_section(run: Run, names: list[str], args: argparse.Namespace
                   ) -> tuple[dict[str, IdleResult], dict[str, StreamResult]]:
    """Each measurement on a freshly started contender, so none inherits another's memory."""
    idle: dict[str, IdleResult] = {}
    streams: dict[str, StreamResult] = {}
    idle_names = ["egress-pass", "egress-mitm", "squid"] + ([] if args.quick else
                                                            ["mitmdump-pass", "mitmdump-mitm",
                                                             "egress-pass-off"])
    stream_names = ["egress-mitm"] + ([] if args.quick else ["mitmdump-mitm", "egress-pass"])
    jobs = [("idle", n) for n in idle_names] + [("stream", n) for n in stream_names]
    if args.many_tunnels:
        jobs += [("many", n) for n in ("egress-pass", "squid")]
    for kind, name in jobs:
        if name not in names:
            continue
        try:
            c = start_checked(run, name)
        except RuntimeError as exc:
            log(f"memory: {exc}")
            continue
        assert c.service is not None and c.proxy is not None
        try:
            if kind in ("idle", "many"):
                count = args.tunnels if kind == "idle" else args.many_tunnels
                log(f"memory: {count} idle tunnels through {name}")
                key = name if kind == "idle" else f"{name} ({count:,} at once)"
                idle[key] = idle_tunnels(c.service, c.proxy, run.up.host, run.up.https_port,
                                         "/small", HEADERS, count)
            else:
                log(f"memory: 1 GiB through {name}")
                streams[name] = stream(c.service, run.up.url("/1g"), c.proxy,
                                       str(bundle(run, c)), HEADERS)
        finally:
            run.sup.stop(c.service)
    return idle, streams


def websocket_section(run: Run, names: list[str], args: argparse.Namespace
                      ) -> dict[str, WsMemoryResult]:
    """One long WebSocket through egress (its own rule for the sink) and, in a full run,
    through mitmdump-mitm: RSS per MiB relayed (bench/wsmemory.py)."""
    mib = 256 if args.quick else 1024
    results: dict[str, WsMemoryResult] = {}
    wanted = ["egress-mitm"] + ([] if args.quick else ["mitmdump-mitm"])
    with websocket_sink(run.up.ca) as port:
        for name in wanted:
            if name not in names:
                continue
            log(f"memory: {mib} MiB of WebSocket messages through {name}")
            try:
                if name == "egress-mitm":
                    service, proxy, trust = egress_for_websocket(run.sup, run.work,
                                                                 run.tools.egress, run.up.ca, port)
                else:
                    c = start_checked(run, name)
                    assert c.service is not None and c.proxy is not None
                    service, proxy, trust = c.service, c.proxy, bundle(run, c)
            except RuntimeError as exc:
                log(f"memory: {exc}")
                continue
            try:
                results[name] = relay(service, proxy, trust, port, mib)
            finally:
                run.sup.stop(service)
    return results


def _summary(data: dict[str, Any], tables: list[report.Table], notes: list[str],
             markdown: bool) -> str:
    parts = []
    machine = data.get("machine", {})
    if markdown:
        parts.append("| machine | |\n|---|---|\n" +
                     "\n".join(f"| {k} | {v} |" for k, v in machine.items()) + "\n")
    else:
        parts.append("\n".join(f"{k:>17}: {v}" for k, v in machine.items()) + "\n")
    parts.append(f"rounds: {data['rounds']}, request-count scale: {data['scale']}\n")
    parts += [report.render(t, markdown) for t in tables]
    if notes:
        parts.append("Notes:\n" + "\n".join(notes) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
