"""An audit line as an OCSF 1.5 event (`format: ocsf`). Pure.

    kind http, websocket      HTTP Activity (4002), activity from the method (Get, Post, ...,
                              Connect for CONNECT; Other for the rest)
    kind connect, tls, tunnel, connection
                              Network Activity (4001): Refuse when denied, Open when allowed
    anything else (kind audit: checkpoints, spool overflow; events later versions add)
                              Base Event (0), activity Other

Every event has: `actor` (profile `host`) = the skill (`app_name` and `user.name`: the proxy
user name the skill authenticated as; none when unauthenticated), `dst_endpoint` (host name
or IP, port, and the address dialled), `src_endpoint` (the skill's connection), `action_id` /
`disposition_id` (profile `security_control`: Allowed / Denied+Blocked, report mode
Observed+Detected), `status_detail` = the egress reason code, `firewall_rule` = the rule that
matched, `policy` = the policy digest, `count` / `start_time` / `end_time` for a summary of
folded denials, `metadata.uid` = the request id, and `raw_data` = the audit line exactly as
written, so a receiver's copy can be checked with `egress audit verify`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from egress import __version__

__all__ = ["OCSF_VERSION", "to_ocsf"]

OCSF_VERSION = "1.5.0"
_PROFILES = ["host", "security_control"]
_HTTP_ACTIVITY = {"CONNECT": 1, "DELETE": 2, "GET": 3, "HEAD": 4, "OPTIONS": 5, "POST": 6,
                  "PUT": 7, "TRACE": 8}
_HTTP_ACTIVITY_NAMES = {1: "Connect", 2: "Delete", 3: "Get", 4: "Head", 5: "Options", 6: "Post",
                        7: "Put", 8: "Trace", 99: "Other"}
_NETWORK_KINDS = frozenset({"connect", "tls", "tunnel", "connection"})
_HTTP_KINDS = frozenset({"http", "websocket"})
# Refusals that are an attack more than a misconfiguration.
_HIGH = frozenset({"credential_exfiltration", "blocked_address"})


def to_ocsf(line: str) -> dict[str, Any]:
    """The OCSF event for one audit line (its text as written, without the newline)."""
    record = json.loads(line)
    kind, decision = record.get("kind"), record.get("decision")
    if kind in _HTTP_KINDS and decision:
        event = _http_activity(record)
    elif kind in _NETWORK_KINDS and decision:
        event = _network_activity(record)
    else:
        event = _base_event(record)
    event.update(_common(record, line))
    event["category_uid"], event["category_name"] = _category(event)
    event["type_uid"] = event["class_uid"] * 100 + event["activity_id"]
    return event


def _http_activity(r: dict[str, Any]) -> dict[str, Any]:
    method = str(r.get("method") or "")
    activity = _HTTP_ACTIVITY.get(method, 99)
    host, port = str(r.get("host", "")), r.get("port")
    scheme, path = str(r.get("scheme") or "https"), str(r.get("path") or "")
    authority = f"[{host}]" if ":" in host else host
    if isinstance(port, int) and not isinstance(port, bool) and port > 0:
        authority += f":{port}"
    url: dict[str, Any] = {"url_string": f"{scheme}://{authority}{path}", "hostname": host,
                           "scheme": scheme}
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        url["port"] = port
    if path:
        url["path"] = path  # never with a query: the audit line has none
    request: dict[str, Any] = {"url": url}
    if activity != 99:
        request["http_method"] = method  # OCSF's list; others are in unmapped.method
    return {"class_uid": 4002, "class_name": "HTTP Activity", "activity_id": activity,
            "activity_name": _HTTP_ACTIVITY_NAMES[activity], "http_request": request}


def _network_activity(r: dict[str, Any]) -> dict[str, Any]:
    allowed = r.get("decision") != "deny"
    activity, name = (1, "Open") if allowed else (5, "Refuse")
    return {"class_uid": 4001, "class_name": "Network Activity", "activity_id": activity,
            "activity_name": name}


def _base_event(r: dict[str, Any]) -> dict[str, Any]:
    return {"class_uid": 0, "class_name": "Base Event", "activity_id": 99,
            "activity_name": str(r.get("event") or r.get("kind") or "Other")}


def _common(r: dict[str, Any], line: str) -> dict[str, Any]:
    decision = r.get("decision")
    reason = r.get("reason") or r.get("event")
    out: dict[str, Any] = {
        "time": _ms(r.get("ts")),
        "metadata": {"version": OCSF_VERSION, "profiles": list(_PROFILES),
                     "product": {"name": "egress", "vendor_name": "egress",
                                 "version": __version__},
                     "log_name": "audit"},
        "raw_data": line,
        "message": _message(r),
    }
    if r.get("id"):
        out["metadata"]["uid"] = str(r["id"])
    if r.get("ts"):
        out["metadata"]["original_time"] = str(r["ts"])
    severity = 1 if decision in (None, "allow") else 4 if reason in _HIGH else \
        3 if decision == "deny" else 2
    out["severity_id"] = severity
    out["severity"] = {1: "Informational", 2: "Low", 3: "Medium", 4: "High"}[severity]
    if decision is not None:
        denied = decision == "deny"
        out["status_id"], out["status"] = (2, "Failure") if denied else (1, "Success")
        out["action_id"], out["action"] = (2, "Denied") if denied else \
            (3, "Observed") if decision == "report" else (1, "Allowed")
        out["disposition_id"], out["disposition"] = (2, "Blocked") if denied else \
            (15, "Detected") if decision == "report" else (1, "Allowed")
    else:
        out["status_id"], out["status"] = 99, "Other"
    if reason:
        out["status_detail"] = str(reason)
    skill = r.get("skill")
    if skill:
        out["actor"] = {"app_name": str(skill), "user": {"name": str(skill), "uid": str(skill)}}
    endpoint = _endpoint(str(r.get("host") or ""), r.get("port"), r.get("resolved"))
    if decision is not None and endpoint.keys() & {"ip", "hostname", "name"}:
        out["dst_endpoint"] = endpoint
    client = r.get("client")
    if isinstance(client, str) and client:
        ip, _, port = client.rpartition(":")
        source: dict[str, Any] = {"ip": ip.strip("[]")}
        if port.isdigit():
            source["port"] = int(port)
        out["src_endpoint"] = source
    if r.get("rule"):
        out["firewall_rule"] = {"name": str(r["rule"]), "uid": str(r["rule"])}
    if r.get("policy"):
        out["policy"] = {"name": "egress policy", "uid": str(r["policy"])}
    folded = r.get("folded")
    if isinstance(folded, int) and not isinstance(folded, bool) and folded > 0:
        out["count"] = folded
        out["start_time"] = _ms(r.get("first_seen"))
        out["end_time"] = _ms(r.get("last_seen"))
    unmapped = {k: r[k] for k in ("credential", "kind", "method", "seq", "event")
                if r.get(k) is not None}
    if unmapped:
        out["unmapped"] = unmapped
    return out


def _category(event: dict[str, Any]) -> tuple[int, str]:
    return (4, "Network Activity") if event.get("class_uid") in (4001, 4002) else \
        (0, "Uncategorized")


def _endpoint(host: str, port: Any, resolved: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if _is_ip(host):
        out["ip"] = host.strip("[]")
    elif host and host != "*":
        out["hostname"] = host
    elif host:
        out["name"] = host  # "*": a summary of denials to many destinations
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        out["port"] = port
    if isinstance(resolved, str) and resolved and "ip" not in out and _is_ip(resolved):
        out["ip"] = resolved
    return out


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _message(r: dict[str, Any]) -> str:
    if r.get("decision") is None:
        return f"egress audit {r.get('event') or r.get('kind') or 'event'}" + (
            f": {r['detail']}" if r.get("detail") else "")
    who = f"skill {r['skill']}" if r.get("skill") else "an unauthenticated client"
    verb = {"deny": "denied", "report": "would deny (report mode)",
            "allow": "allowed"}.get(str(r.get("decision")), str(r.get("decision")))
    text = f"egress {verb} {who} reaching {r.get('host')}:{r.get('port')} ({r.get('reason')})"
    if r.get("detail"):
        text += f": {r['detail']}"
    return text


def _ms(ts: Any) -> int:
    try:
        return int(datetime.fromisoformat(str(ts)).timestamp() * 1000)
    except ValueError:
        return 0
