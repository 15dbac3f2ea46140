"""
seccomp.py: the seccomp filter every sandbox runs under, so that no sandbox makes a nested user
namespace or uses the kernel's keyrings, whether the trainer runs as root or not. sandbox.py
hands it to bubblewrap (--seccomp); `python sandbox.py` says whether this machine has one.

    fd = seccomp.filter_fd()   # a memfd holding the filter, or None on a machine ARCHES lacks

Nested user namespaces: bubblewrap's --disable-userns refuses them only inside a user namespace
of its own, which a root trainer's sandboxes do not have, so the filter refuses them for all.
Keyrings belong to a uid, not to a namespace: a key would outlive its sandbox and reach the next
one of that uid (or any, opened to all), so they are refused as container runtimes' default
profiles refuse them. Built for x86_64 and aarch64.
"""
import functools
import os
import struct

# Per machine: the kernel's AUDIT_ARCH, the system call numbers of unshare, clone and clone3
# (unshare and clone take their flags as the first argument), and those of the kernel's
# keyrings: add_key, request_key, keyctl.
ARCHES = {"x86_64": (0xC000003E, 272, 56, 435, (248, 249, 250)),
          "aarch64": (0xC00000B7, 97, 220, 435, (217, 218, 219))}
CLONE_NEWUSER = 0x10000000


@functools.lru_cache(maxsize=None)
def filter_program():
    """The filter (classic BPF, as bubblewrap's --seccomp reads it) for this machine, or None
    where ARCHES does not know it. unshare() and clone() with CLONE_NEWUSER in their flags fail
    with EPERM; clone3() fails with ENOSYS, as on a kernel without it, since its flags lie in
    memory a filter cannot read (libc then falls back to clone); add_key(), request_key() and
    keyctl() fail with EPERM; system calls of another ABI (i386 through int 0x80, x86-64's x32:
    their numbers differ) fail with ENOSYS; the rest are allowed."""
    if os.uname().machine not in ARCHES:
        return None
    arch, unshare, clone, clone3, (add_key, request_key, keyctl) = ARCHES[os.uname().machine]
    load, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|JGE|JSET|K, BPF_RET|K
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38  # SECCOMP_RET_ALLOW, _ERRNO | errno
    instructions = [  # (code, jump if true, jump if false, k); jumps count the instructions skipped
        (load, 0, 0, 4),                  # 0: seccomp_data.arch
        (jeq, 1, 0, arch),                # 1
        (ret, 0, 0, enosys),              # 2: another ABI
        (load, 0, 0, 0),                  # 3: seccomp_data.nr
        (jge, 0, 1, 0x40000000),          # 4: __X32_SYSCALL_BIT
        (ret, 0, 0, enosys),              # 5
        (jeq, 0, 1, clone3),              # 6
        (ret, 0, 0, enosys),              # 7
        (jeq, 2, 0, add_key),             # 8: -> 11
        (jeq, 1, 0, request_key),         # 9: -> 11
        (jeq, 0, 1, keyctl),              # 10: -> 11, else 12
        (ret, 0, 0, eperm),               # 11
        (jeq, 1, 0, unshare),             # 12: -> 14
        (jeq, 0, 3, clone),               # 13: -> 14, else 17
        (load, 0, 0, 16),                 # 14: the low 32 bits of args[0], the flags
        (jset, 0, 1, CLONE_NEWUSER),      # 15
        (ret, 0, 0, eperm),               # 16
        (ret, 0, 0, allow),               # 17
    ]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in instructions)


def filter_fd():
    """A fresh fd holding the filter (bubblewrap reads it to the end, so none is shared), or None."""
    program = filter_program()
    if program is None:
        return None
    fd = os.memfd_create("seccomp")
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
