"""Warnings about a valid policy: rules that can never work, wildcards wider than they look.

An error stops a policy from loading; a warning does not (`egress check` prints it and still
exits 0, `egress serve` logs it). Pure: reads the PolicySet, classifies addresses with the same
tables the network guard uses at run time, and returns `PolicyWarning`s.

* A rule whose host is an IP literal in a range the network guard refuses (loopback, private,
  link-local, metadata...) without a `settings.networks.allow` entry covering it: every
  request to it is refused as `blocked_address`.
* A rule for a name that always resolves into such a range: `localhost` and names under it
  (RFC 6761: loopback), and the cloud metadata service names (never reachable at all).
* A wildcard whose base has public suffixes below it (`*.amazonaws.com` covers
  `bucket.s3.amazonaws.com`, which anyone can create).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from egress.policy.addresses import NetworkPolicy, classify, explain
from egress.policy.hosts import parse_ip_literal
from egress.policy.model import PolicySet, Rule
from egress.policy.suffixes import suffixes_below

__all__ = ["PolicyWarning", "policy_warnings"]

# Names whose addresses are fixed whatever DNS says.
_LOOPBACK_NAMES = ("localhost",)  # and every name under it (RFC 6761 section 6.3)
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata",
                             "instance-data", "instance-data.ec2.internal"})
_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_METADATA = ipaddress.ip_address("169.254.169.254")


@dataclass(frozen=True)
class PolicyWarning:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: warning: {self.message}"


def policy_warnings(policy: PolicySet) -> list[PolicyWarning]:
    nets = policy.settings.networks
    networks = NetworkPolicy(allow=nets.allow, deny=nets.deny)
    out: list[PolicyWarning] = []
    for skill in policy.skills.values():
        for i, rule in enumerate(skill.rules):
            message = _rule_warning(rule, networks)
            if message is not None:
                out.append(PolicyWarning(rule.source.file, rule.source.line,
                                         f"skills.{skill.name}.allow[{i}].host", message))
    return out


def _rule_warning(rule: Rule, networks: NetworkPolicy) -> str | None:
    if rule.wildcard:
        below = suffixes_below(rule.host)
        if below:
            return (f"*.{rule.host} also covers {len(below)} public suffix"
                    f"{'es' if len(below) > 1 else ''} under {rule.host} (e.g. {below[0]}), "
                    f"where unrelated owners have names; list the hosts the skill needs")
        return None
    try:
        ip = parse_ip_literal(rule.host)
    except ValueError:
        ip = None
    if ip is not None:
        return _address_warning(str(ip), (ip,), rule, networks)
    if rule.host in _METADATA_NAMES:
        return (f"{rule.host} is the cloud metadata service ({_METADATA}), which egress "
                f"refuses even with settings.networks.allow: this rule can never work")
    if rule.host in _LOOPBACK_NAMES or rule.host.endswith(".localhost"):
        return _address_warning(f"{rule.host} (always loopback, RFC 6761)", _LOOPBACK, rule,
                                networks)
    return None


def _address_warning(what: str, addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...],
                     rule: Rule, networks: NetworkPolicy) -> str | None:
    port = min(rule.ports)
    refused = [(ip, label) for ip in addresses
               if (label := classify(ip, port, networks)) is not None]
    if len(refused) < len(addresses):
        return None  # at least one address the name can have is reachable
    ip, label = refused[0]
    if label == "metadata":
        return (f"{what} is {explain(label, ip, port)}, which egress refuses even with "
                f"settings.networks.allow: this rule can never work")
    if label == "denied_network":
        return (f"{what} is {explain(label, ip, port)}: every request is refused "
                f"(blocked_address); remove the rule or that deny entry")
    nets = ", ".join(f'"{a}/{a.max_prefixlen}"' for a, _ in refused)
    return (f"{what} is {explain(label, ip, port, networks)}, which the network guard refuses "
            f"(blocked_address); if the skill really needs it, add it to settings.networks."
            f"allow, e.g. allow: [{nets}]")
