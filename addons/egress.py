"""mitmproxy script entry: `mitmdump -s addons/egress.py --set egress_policies=DIR`.

`egress serve` is the faster way to run the same addon (a lean Master without mitmdump's
default addons); this entry exists for operators who already run mitmproxy.
"""

from egress.addon import EgressAddon

addons = [EgressAddon()]
