"""mitmproxy script entry: `mitmdump -s addons/egress.py --set egress_policies=DIR`.

`egress serve` is the faster way to run the same addon (a lean Master without mitmdump's
default addons); this entry exists for operators who already run mitmproxy.
"""

import os
import sys

# mitmproxy puts this file's directory first on sys.path while loading it, where this very
# file would shadow the installed `egress` package. Import the package without that entry.
_here = os.path.dirname(os.path.abspath(__file__))
_saved = list(sys.path)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
if getattr(sys.modules.get("egress"), "__path__", None) is None:
    sys.modules.pop("egress", None)
try:
    from egress.proxy.addon import EgressAddon
finally:
    sys.path[:] = _saved

addons = [EgressAddon()]
