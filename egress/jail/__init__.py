"""The `egress exec` jail: a command whose only way out is egress.

    namespace.py       the network namespace with nothing but a relay to egress; runs the jail
    sandbox.py         bubblewrap's arguments and the stages around it (PID, IPC, mount ns)
    syscall_filter.py  the seccomp filter (libseccomp through ctypes)

What it may import: the standard library and egress.errors. Nothing of the proxy, ops or the
policy core; only egress/cli/exec.py imports it.
"""
