"""A classic-BPF interpreter for seccomp programs, so tests can ask a filter what it answers
for any (architecture, syscall, arguments) without a kernel, including ABIs this machine
cannot run. Only what seccomp allows is implemented; anything else raises, so a program the
interpreter does not understand fails the test instead of passing it.
"""

from __future__ import annotations

import struct

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028
X32_SYSCALL_BIT = 0x40000000

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000


def seccomp_data(arch: int, nr: int, args: tuple[int, ...] = (), ip: int = 0) -> bytes:
    """struct seccomp_data, little-endian (x86_64 and arm64 are)."""
    padded = [a % 2**64 for a in args] + [0] * (6 - len(args))
    return struct.pack("<iIQ6Q", nr, arch, ip, *padded)


def _alu(code: int, a: int, operand: int) -> int:
    op = code & 0xF0
    if op == 0x00:
        result = a + operand
    elif op == 0x10:
        result = a - operand
    elif op == 0x20:
        result = a * operand
    elif op == 0x40:
        result = a | operand
    elif op == 0x50:
        result = a & operand
    elif op == 0x60:
        result = a << operand
    elif op == 0x70:
        result = a >> operand
    elif op == 0x80:
        result = -a
    elif op == 0xA0:
        result = a ^ operand
    else:
        raise ValueError(f"unsupported alu {code:#x}")
    return result % 2**32


def run(program: bytes, data: bytes, max_steps: int = 10_000) -> int:
    """The 32-bit value the program returns for `data`."""
    insns = [struct.unpack_from("=HBBI", program, off) for off in range(0, len(program), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(max_steps):
        code, jt, jf, k = insns[pc]
        cls = code & 0x07
        pc += 1
        if cls == 0x00:  # BPF_LD
            mode, size = code & 0xE0, code & 0x18
            if mode == 0x20 and size == 0x00:  # ABS, W
                if k % 4 or k + 4 > len(data):
                    raise ValueError(f"bad load offset {k}")
                a = struct.unpack_from("<I", data, k)[0]
            elif mode == 0x00:  # IMM
                a = k
            elif mode == 0x60:  # MEM
                a = mem[k]
            elif mode == 0x80:  # LEN
                a = len(data)
            else:
                raise ValueError(f"unsupported load {code:#x}")
        elif cls == 0x01:  # BPF_LDX
            mode = code & 0xE0
            if mode == 0x00:
                x = k
            elif mode == 0x60:
                x = mem[k]
            elif mode == 0x80:
                x = len(data)
            else:
                raise ValueError(f"unsupported ldx {code:#x}")
        elif cls == 0x02:  # BPF_ST
            mem[k] = a
        elif cls == 0x03:  # BPF_STX
            mem[k] = x
        elif cls == 0x04:  # BPF_ALU
            op, operand = code & 0xF0, (x if code & 0x08 else k)
            a = _alu(code, a, operand)
        elif cls == 0x05:  # BPF_JMP
            op, operand = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:  # JA
                pc += k
                continue
            taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand,
                     0x40: bool(a & operand)}.get(op)
            if taken is None:
                raise ValueError(f"unsupported jump {code:#x}")
            pc += jt if taken else jf
        elif cls == 0x06:  # BPF_RET
            return k if (code & 0x18) == 0x00 else a
        else:  # BPF_MISC
            if code & 0xF8 == 0x00:
                x = a
            elif code & 0xF8 == 0x80:
                a = x
            else:
                raise ValueError(f"unsupported misc {code:#x}")
    raise ValueError("program did not return")
