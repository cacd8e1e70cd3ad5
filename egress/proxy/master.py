"""A lean mitmproxy Master for `egress serve`: only the addons egress needs.

The Master carries core options, the proxy server, layer selection, TLS and error checking,
plus EgressAddon, instead of mitmdump's ~35 defaults: measured 60-75% faster, and nothing
that could rewrite traffic behind the policy's back (maplocal, modifyheaders, replay...).

With the fast path on (the default), the Master listens nowhere: it is the engine the fast
path hands connections to (egress/proxy/engine.py). With `--front off` it listens itself.
"""

from __future__ import annotations

from mitmproxy import master, options
from mitmproxy.addons import core, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.exceptions import OptionsError

from egress.errors import ConfigError
from egress.ops.runtime import Runtime
from egress.proxy.addon import EgressAddon
from egress.proxy.ca import ca_dir, ensure_ca
from egress.proxy.deciding import Deciding

__all__ = ["build_master"]


def build_master(runtime: Runtime, deciding: Deciding, host: str, port: int, *,
                 audit: str | None = None, listen: bool = True) -> master.Master:
    """A mitmproxy Master with just the addons egress needs, deciding with `runtime` and
    `deciding` (shared with the fast path). `listen`: on host:port (else it only takes
    connections the fast path hands over). Call inside a running loop. Raises ConfigError
    when an option cannot work (mitmproxy's OptionsError, translated)."""
    data = runtime.data_dir
    ensure_ca(data)
    opts = options.Options(
        listen_host=host, listen_port=port, mode=["regular"] if listen else [],
        confdir=str(ca_dir(data)),
    )
    m = master.Master(opts)
    m.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(),
                 tlsconfig.TlsConfig(), errorcheck.ErrorCheck(),
                 EgressAddon(runtime, deciding=deciding))
    try:
        opts.update(**_options(runtime, audit))
    except OptionsError as exc:
        raise ConfigError(str(exc)) from exc
    return m


def _options(runtime: Runtime, audit: str | None) -> dict[str, object]:
    values: dict[str, object] = dict(
        connection_strategy="lazy",
        rawtcp=False,  # no raw relay on mitmproxy's guess (egress/proxy/layers.py decides tunnels)
        egress_policies=str(runtime.policy_dir), egress_data_dir=str(runtime.data_dir),
        egress_audit=audit or "",
        # Large bodies stream instead of being held in memory (uploads, downloads, SSE).
        stream_large_bodies="256k",
    )
    if runtime.policy.settings.upstream_ca:
        values["ssl_verify_upstream_trusted_ca"] = runtime.policy.settings.upstream_ca
    return values
