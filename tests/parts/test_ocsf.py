"""Self-test of tests/parts/ocsf.py: known-good OCSF records pass, each kind of break is named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.parts.ocsf import OCSF_VERSIONS, validate_ocsf

TIME = 1764676800000  # 2025-12-02T12:00:00Z in ms (OCSF timestamp_t)


def http_denial(version: str) -> dict[str, Any]:
    """An egress denial as HTTP Activity (4002): a skill's GET refused by policy."""
    return {
        "class_uid": 4002, "category_uid": 4, "activity_id": 3, "type_uid": 400203,
        "severity_id": 3, "time": TIME, "status_id": 2, "status": "Failure",
        "status_detail": "host_not_allowed", "disposition_id": 2, "action_id": 2,
        "message": "request denied by egress policy",
        "metadata": {"version": version, "profiles": ["host", "security_control"],
                     "product": {"name": "egress", "vendor_name": "egress"},
                     "uid": "req-0123456789abcdef"},
        "actor": {"app_name": "skill:alpha"},
        "http_request": {"http_method": "GET",
                         "url": {"hostname": "api.exfil.example", "path": "/collect"}},
        "dst_endpoint": {"hostname": "api.exfil.example", "port": 443},
        "src_endpoint": {"ip": "127.0.0.1"},
    }


def network_denial(version: str) -> dict[str, Any]:
    """A refused tunnel as Network Activity (4001): CONNECT to a blocked address."""
    return {
        "class_uid": 4001, "category_uid": 4, "activity_id": 4, "type_uid": 400104,
        "severity_id": 3, "time": TIME, "status_id": 2, "status_detail": "address_blocked",
        "disposition_id": 2,
        "metadata": {"version": version, "profiles": ["security_control"],
                     "product": {"name": "egress", "vendor_name": "egress"}},
        "dst_endpoint": {"ip": "169.254.169.254", "port": 80},
        "src_endpoint": {"ip": "127.0.0.1"},
    }


@pytest.mark.parametrize("version", ["1.5.0", "1.8.0"])
@pytest.mark.parametrize("make", [http_denial, network_denial])
def test_known_good_records_validate(version: str, make: Any) -> None:
    assert validate_ocsf(make(version)) == []


def broken(change: Any) -> dict[str, Any]:
    record = http_denial("1.5.0")
    change(record)
    return record


@pytest.mark.parametrize("record, expected", [
    pytest.param(broken(lambda r: r.pop("time")), "'time' is a required property",
                 id="required attribute missing"),
    pytest.param(broken(lambda r: r.update(activity_id=42)), "activity_id:",
                 id="activity_id outside its enum"),
    pytest.param(broken(lambda r: r.update(type_uid=400206)), "type_uid: 400206 is not",
                 id="type_uid disagrees with activity_id"),
    pytest.param(broken(lambda r: r.update(category_uid=1)), "category_uid",
                 id="wrong category"),
    pytest.param(broken(lambda r: r.update(skill="alpha")), "skill",
                 id="attribute the class does not have"),
    pytest.param(broken(lambda r: r["dst_endpoint"].update(port="443")), "dst_endpoint/port",
                 id="port as a string"),
    pytest.param(broken(lambda r: r["src_endpoint"].update(ip="not-an-ip")), "src_endpoint/ip",
                 id="ip_t pattern"),
    pytest.param(broken(lambda r: r.update(time="2025-12-02T12:00:00Z")), "time:",
                 id="time as text, not ms"),
    pytest.param(broken(lambda r: r["metadata"].update(profiles=["host"])), "disposition_id",
                 id="security_control attribute without its profile"),
    pytest.param(broken(lambda r: r["metadata"].update(profiles=["security_control"])), "actor",
                 id="actor without the host profile"),
    pytest.param(broken(lambda r: r.update(dst_endpoint={})), "dst_endpoint",
                 id="endpoint without any identifying attribute"),
    pytest.param(broken(lambda r: r["metadata"].update(version="9.9.9")), "not packaged",
                 id="unknown version"),
    pytest.param(broken(lambda r: r.update(class_uid=4999)), "class_uid: 4999",
                 id="unknown class"),
    pytest.param(broken(lambda r: r["metadata"].pop("version")), "metadata/version",
                 id="no version"),
    pytest.param([], "JSON object", id="not an object"),
])
def test_known_bad_records_are_named(record: Any, expected: str) -> None:
    problems = validate_ocsf(record)
    assert problems, "a broken record validated"
    assert any(expected in p for p in problems), problems


def test_good_record_is_not_mutated_and_versions_are_listed() -> None:
    record = http_denial("1.5.0")
    before = copy.deepcopy(record)
    validate_ocsf(record)
    assert record == before
    assert {"1.0.0", "1.5.0", "1.8.0"} <= set(OCSF_VERSIONS)
