"""Runs inside the sandbox's fresh namespaces, before the untrusted command: build its root, then exec.

Started as ``python -I -S sandbox_init.py SPEC_JSON`` by ``sandbox.run_sandboxed`` (standard library
only: codetune is not importable here). With ``mount`` set it builds a new root on a small tmpfs:

* read-only, nosuid, non-recursive bind mounts of the interpreter, its libraries and the system
  directories (``/usr``, ``/lib*``, ``/bin``...), a handful of ``/etc`` files, and ``/dev/null`` and
  friends. Nothing else of the host exists: no ``/run``, ``/var/run``, host ``/tmp``, ``/root``,
  ``/home``, ``/etc/shadow``, no unix socket file. Binds are non-recursive and the old root is
  detached after ``pivot_root``, so no host mount (with spaces, backslashes or anything else in its
  path) is reachable, writable or not;
* the work dir on its own tmpfs with a size and inode bound;
* a fresh read-only ``/proc`` that shows only this pid namespace.

Then it drops every capability (bounding set, ambient set; as real root it also switches to a
per-run uid), sets no_new_privs, installs a seccomp filter when the architecture is known, and
execs the command.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import struct
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 24, 47, 4
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2

# Syscalls the code never needs and that widen the kernel's attack surface or undo the sandbox.
# Numbers from the kernel's arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h.
SYSCALLS = {
    "x86_64": {
        "ptrace": 101, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272,
        "setns": 308, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246, "init_module": 175,
        "finit_module": 313, "delete_module": 176, "swapon": 167, "swapoff": 168, "reboot": 169,
        "open_by_handle_at": 304, "name_to_handle_at": 303, "io_uring_setup": 425,
    },
    "aarch64": {
        "ptrace": 117, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97,
        "setns": 268, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
        "perf_event_open": 241, "userfaultfd": 282, "kexec_load": 104, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "swapon": 224, "swapoff": 225, "reboot": 142,
        "open_by_handle_at": 265, "name_to_handle_at": 264, "io_uring_setup": 425,
    },
}  # fmt: skip
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    result = libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data))
    _check(result, f"mount {source or fstype} on {target}")


def _locked_flags(path: str) -> int:
    """The flags of the mount holding ``path`` that a user namespace may not clear on remount."""
    f_flag = os.statvfs(path).f_flag
    mapping = {
        os.ST_NOSUID: MS_NOSUID,
        os.ST_NODEV: MS_NODEV,
        os.ST_NOEXEC: MS_NOEXEC,
        os.ST_NOATIME: MS_NOATIME,
        os.ST_NODIRATIME: MS_NODIRATIME,
        getattr(os, "ST_RELATIME", 4096): MS_RELATIME,
    }
    return sum(ms for st, ms in mapping.items() if f_flag & st)


def bind_readonly(source: str, root: str) -> None:
    """Bind ``source`` (not its submounts) at the same path under ``root``, read-only and nosuid."""
    target = root + source
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "w").close()
    mount(source, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | _locked_flags(source)
    mount(None, target, None, flags)


def add_path(path: str, root: str, done: set[str], bound: list[str]) -> None:
    """Make ``path`` exist under ``root``: symlinks recreated (and followed), directories bound.

    A path already visible through a bound ancestor is skipped unless it is another mount
    (non-recursive binds leave submounts out).
    """
    if path in done or not os.path.lexists(path):
        return
    done.add(path)
    parent = os.path.dirname(path)
    current = ""
    for part in [p for p in parent.split("/") if p]:
        current += "/" + part
        if os.path.islink(current):
            # a parent that is a link (/lib -> usr/lib): recreate it, the rest is reached through it
            add_path(current, root, done, bound)
            if os.path.lexists(root + path):
                return
        elif not os.path.lexists(root + current):
            os.makedirs(root + current)
    if os.path.islink(path):
        if not os.path.lexists(root + path):
            os.symlink(os.readlink(path), root + path)
        add_path(os.path.normpath(os.path.join(parent, os.readlink(path))), root, done, bound)
        return
    ancestors = [b for b in bound if path.startswith(b.rstrip("/") + "/")]
    if ancestors and os.stat(path).st_dev == os.stat(max(ancestors, key=len)).st_dev:
        return
    bind_readonly(path, root)
    bound.append(path)


def build_root(spec: dict) -> None:
    root, work, uid, gid = spec["root"], spec["work"], spec["uid"], spec["gid"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("codetune-root", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=0755")
    done: set[str] = set()
    bound: list[str] = []
    for path in spec["binds"]:
        add_path(path, root, done, bound)
    # Devices: bind the harmless nodes (mknod is not allowed in a user namespace).
    os.makedirs(root + "/dev", exist_ok=True)
    for name in ("null", "zero", "full", "random", "urandom"):
        target = f"{root}/dev/{name}"
        open(target, "w").close()
        mount(f"/dev/{name}", target, None, MS_BIND)
        mount(
            None, target, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC | _locked_flags(f"/dev/{name}")
        )
    for name, link in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(link, f"{root}/dev/{name}")
    tmpfs = f"size={spec['disk_bytes']},nr_inodes={spec['inodes']}"
    os.makedirs(root + "/dev/shm")
    shm = f"size={spec['disk_bytes'] // 4},nr_inodes={spec['inodes'] // 4},mode=1777"
    mount("codetune-shm", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, shm)
    # /etc: only what the dynamic linker and libc need, and a passwd without the host's users.
    os.makedirs(root + "/etc", exist_ok=True)
    for name in spec["etc"]:
        if os.path.exists("/etc/" + name):
            add_path("/etc/" + name, root, done, bound)
    with open(root + "/etc/passwd", "w") as handle:
        handle.write(f"root:x:0:0:root:/:/bin/sh\nsandbox:x:{uid}:{gid}:sandbox:{work}:/bin/sh\n")
    with open(root + "/etc/group", "w") as handle:
        handle.write(f"root:x:0:\nsandbox:x:{gid}:\n")
    # The work dir: its own size-bound tmpfs, holding a copy of the staged files.
    os.makedirs(root + work)
    mount(
        "codetune-work", root + work, "tmpfs", MS_NOSUID | MS_NODEV, f"{tmpfs},mode=0700,uid={uid},gid={gid}"
    )
    copy_tree(spec["stage"], root + work, uid, gid)
    if spec["proc"]:
        os.makedirs(root + "/proc")
        mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
    cgroup = spec.get("cgroup")
    if cgroup:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))
    pivot(root)
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def copy_tree(source: str, target: str, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(source):
        relative = os.path.relpath(dirpath, source)
        base = target if relative == "." else os.path.join(target, relative)
        for name in dirnames:
            os.makedirs(os.path.join(base, name), exist_ok=True)
            os.chown(os.path.join(base, name), uid, gid)
        for name in filenames:
            shutil.copyfile(os.path.join(dirpath, name), os.path.join(base, name))
            os.chown(os.path.join(base, name), uid, gid)


def pivot(root: str) -> None:
    """Make ``root`` the root and detach the old one (``pivot_root . .`` as runc does)."""
    os.chdir(root)
    number = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
    if number is None:
        raise OSError("pivot_root: unknown syscall number for " + platform.machine())
    _check(libc.syscall(number, b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def drop_privileges(spec: dict) -> None:
    for cap in range(spec["cap_last"] + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # fails (harmlessly) without CAP_SETPCAP
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if spec["setuid"]:
        os.setgroups([])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def seccomp_filter() -> bytes | None:
    """A BPF program: wrong architecture or x32 -> kill; DENIED -> EPERM; anything else allowed."""
    machine = platform.machine()
    if machine not in SYSCALLS:
        return None
    numbers = list(SYSCALLS[machine].values())
    ld_w_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, kill, eperm = 0x7FFF0000, 0x80000000, 0x00050000 | 1
    n = len(numbers)
    program = [(ld_w_abs, 0, 0, 4), (jeq, 1, 0, AUDIT_ARCH[machine]), (ret, 0, 0, kill), (ld_w_abs, 0, 0, 0)]
    if machine == "x86_64":
        program.append((jge, n + 1, 0, 0x40000000))  # x32 syscalls: EPERM
    for i, number in enumerate(numbers):
        program.append((jeq, n - i, 0, number))  # to the EPERM return after the allow
    program += [(ret, 0, 0, allow), (ret, 0, 0, eperm)]
    return b"".join(struct.pack("HBBI", code, jt, jf, k) for code, jt, jf, k in program)


def install_seccomp() -> None:
    program = seccomp_filter()
    if program is None:
        return
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxP", len(program) // 8, ctypes.addressof(buffer))
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.c_char_p(fprog), 0, 0), "seccomp")


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        if spec["mount"]:
            build_root(spec)
        os.chdir(spec["work"])
        drop_privileges(spec)
        if spec["seccomp"]:
            install_seccomp()
    except OSError as error:
        # Exit 125 marks "the sandbox could not be set up" (the probe reads this line).
        print(f"codetune-sandbox-setup: {error}", file=sys.stderr)
        os._exit(125)
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as error:
        print(f"cannot run {argv[0]}: {error}", file=sys.stderr)
        os._exit(127)


if __name__ == "__main__":
    main()
