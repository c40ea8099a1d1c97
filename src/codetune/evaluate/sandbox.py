"""Run untrusted generated code: a subprocess in fresh namespaces with hard resource limits.

Layers (``codetune sandbox check`` prints which are active here; each run lists them in
``SandboxResult.isolation``):

* **network**: a new network namespace with only a down loopback, so no connection leaves, and
  abstract unix sockets (which live in the network namespace) are out of reach;
* **mount**: a private mount namespace whose root is a fresh tmpfs holding read-only binds of the
  interpreter, its libraries and the system directories, and the work dir on a size-bound tmpfs.
  The host's /tmp, /run, /root, /home, /etc/shadow and every unix socket file do not exist there
  (see ``sandbox_init.py``);
* **pid**: a pid namespace with a fresh /proc: the code sees only its own processes, and when the
  first one ends the kernel kills every descendant, so no daemon outlives the run;
* **user**: unprivileged users get a user namespace (root mapped to themselves) to do the above;
  as real root the code instead runs as a fresh uid of its own;
* **cgroups**: as root, a fresh ``pids`` cgroup with pids.max;
* **seccomp**: a filter refusing mount, ptrace, unshare, setns, bpf, keyctl and the like;
* **limits**: rlimits on CPU seconds, address space, file size (also the captured output), open
  files, core dumps and processes, and a wall-clock limit after which everything is killed;
  capabilities are dropped and no_new_privs set.

network, mount and pid are required: where one is missing, runs are refused unless the caller
allows it in so many words (``--unsafe-network``, ``--unsafe-mount``, ``--unsafe-pid``).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import logging
import os
import random
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError

log = logging.getLogger(__name__)

REQUIRED_LAYERS = ("network", "mount", "pid")
# System directories bound read-only (links such as /lib -> usr/lib are recreated as links).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The /etc entries (globs) the dynamic linker, libc and interpreters read; nothing with secrets.
ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "nsswitch.conf",
    "mime.types",
    "python3*",
    "java-*",  # the JDK's conf/ links here (MultiPL-E's Java)
    "ssl",
)
_INIT = Path(__file__).with_name("sandbox_init.py")
SETUP_FAILED = 125  # sandbox_init.py's exit status when it could not build the sandbox


@dataclass
class SandboxLimits:
    """Resource limits of one run."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 1024
    max_processes: int = 32
    output_bytes: int = 64 * 1024
    file_bytes: int = 16 * 1024 * 1024
    open_files: int = 256
    disk_mb: int = 64  # size of the work dir's tmpfs (all files together)
    inodes: int = 4096


@dataclass
class SandboxResult:
    """What a run did: passed means exit 0 within the limits."""

    passed: bool
    status: str  # passed, failed, timeout, killed, error
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    isolation: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Layer:
    """One isolation layer: whether it is active on this machine, and how (or why not)."""

    name: str
    active: bool
    detail: str


@dataclass(frozen=True)
class Plan:
    """How runs are isolated on this machine (probed once per process)."""

    unshare: tuple[str, ...]
    mount: bool
    pid: bool
    seccomp: bool
    cgroups: bool
    layers: tuple[Layer, ...]

    def layer(self, name: str) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)

    def missing(self) -> list[str]:
        """Required layers that are not active."""
        return [name for name in REQUIRED_LAYERS if not self.layer(name).active]


def _bind_paths(command: list[str]) -> list[str]:
    """The host paths the code may read: system directories, this Python and the command's prefix."""
    paths = [*SYSTEM_PATHS, sys.prefix, sys.base_prefix, sys.exec_prefix]
    paths += [p for p in site.getsitepackages() if os.path.isdir(p)]
    for exe in (sys.executable, shutil.which(command[0]) if command else None):
        if exe:
            real = Path(os.path.realpath(exe)).parent
            paths.append(str(real.parent if real.name == "bin" else real))
    unique = []
    for path in paths:
        path = os.path.normpath(path)
        if path != "/" and path not in unique:
            unique.append(path)
    return unique


def _pids_cgroup(limit: int) -> Path | None:
    """A fresh pids cgroup (v1 or v2) with pids.max, when we may create one (root), else None."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        try:
            if root.name != "pids":
                controllers = root / "cgroup.controllers"
                if not controllers.is_file() or "pids" not in controllers.read_text().split():
                    continue
                subtree = root / "cgroup.subtree_control"
                if "pids" not in subtree.read_text().split():
                    subtree.write_text("+pids")
            group = root / f"codetune-sandbox-{uuid.uuid4().hex[:12]}"
            group.mkdir()
            (group / "pids.max").write_text(str(limit))
            return group
        except OSError:
            continue
    return None


def _remove_cgroup(group: Path | None) -> None:
    if group is None:
        return
    for _ in range(50):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.05)
    log.warning("could not remove cgroup %s", group)


def _rlimit_values(limits: SandboxLimits) -> dict[str, tuple[int, int]]:
    memory = limits.memory_mb * 1024 * 1024
    return {
        "cpu": (limits.cpu_seconds, limits.cpu_seconds + 1),
        "as": (memory, memory),
        "fsize": (limits.file_bytes, limits.file_bytes),
        "nofile": (limits.open_files, limits.open_files),
        "core": (0, 0),
        "nproc": (limits.max_processes, limits.max_processes),
    }


def _rlimit_argv(limits: SandboxLimits) -> list[str] | None:
    """``prlimit`` in front of the command (no preexec_fn needed: the eval process runs threads)."""
    if not shutil.which("prlimit"):
        return None
    return ["prlimit", *(f"--{k}={soft}:{hard}" for k, (soft, hard) in _rlimit_values(limits).items()), "--"]


def _preexec(limits: SandboxLimits):
    """Fallback when ``prlimit`` is missing: set the limits between fork and exec."""
    import resource

    names = {
        "cpu": "RLIMIT_CPU",
        "as": "RLIMIT_AS",
        "fsize": "RLIMIT_FSIZE",
        "nofile": "RLIMIT_NOFILE",
        "core": "RLIMIT_CORE",
        "nproc": "RLIMIT_NPROC",
    }

    def apply() -> None:
        for key, value in _rlimit_values(limits).items():
            resource.setrlimit(getattr(resource, names[key]), value)

    return apply


def _read_capped(path: Path, cap: int) -> str:
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    text = data[:cap].decode("utf-8", errors="replace")
    return text + "\n[output truncated]" if len(data) > cap else text


def _spec(
    plan: Plan,
    tmp: Path,
    argv: list[str],
    env: dict[str, str],
    cgroup: Path | None,
    limits: SandboxLimits,
) -> dict[str, Any]:
    # Only inside its own root can the code run as a uid of its own: the interpreter may live
    # where only root can reach it (/root/.pyenv).
    as_root = os.geteuid() == 0 and plan.mount
    # Real root runs the code as a fresh uid of its own: no host file is its, RLIMIT_NPROC applies.
    uid = random.randrange(1 << 20, 1 << 30) if as_root else (0 if plan.unshare else os.getuid())
    last_cap = Path("/proc/sys/kernel/cap_last_cap")
    return {
        "mount": plan.mount,
        "proc": plan.mount and plan.pid,
        "seccomp": plan.seccomp,
        "root": str(tmp / "root"),
        "stage": str(tmp / "stage"),
        "work": str(tmp / "work"),
        "binds": _bind_paths(argv),
        "etc": sorted({Path(p).name for entry in ETC_ENTRIES for p in glob.glob(f"/etc/{entry}")}),
        "disk_bytes": limits.disk_mb * 1024 * 1024,
        "inodes": limits.inodes,
        "uid": uid,
        "gid": uid if as_root else (0 if plan.unshare else os.getgid()),
        "setuid": as_root,
        "cap_last": int(last_cap.read_text()) if last_cap.is_file() else 40,
        "cgroup": str(cgroup) if cgroup else None,
        "argv": argv,
        "env": env,
    }


def _execute(
    plan: Plan,
    command: list[str],
    files: dict[str, str],
    limits: SandboxLimits,
    stdin: str | None,
) -> SandboxResult:
    isolation = [layer.name for layer in plan.layers if layer.active]
    cgroup = _pids_cgroup(limits.max_processes + 4) if plan.cgroups else None
    if plan.cgroups and cgroup is None:
        isolation.remove("cgroups")
    tmp = Path(tempfile.mkdtemp(prefix="codetune-sandbox-"))
    try:
        # With a mount namespace the files are copied into the work tmpfs; without, they are used here.
        stage = tmp / ("stage" if plan.mount else "work")
        stage.mkdir()
        (tmp / "root").mkdir()
        for name, text in files.items():
            target = (stage / name).resolve()
            if not target.is_relative_to(stage.resolve()):
                raise CodetuneError(f"sandbox file name escapes the work dir: {name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        work = tmp / "work"
        first = str(work / next(iter(files))) if files else ""
        argv = [part.replace("{dir}", str(work)).replace("{file}", first) for part in command]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "TMPDIR": str(work),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
        }
        spec = _spec(plan, tmp, argv, env, cgroup, limits)
        full = [*plan.unshare, sys.executable, "-I", "-S", str(_INIT), json.dumps(spec)]
        rlimits = _rlimit_argv(limits)
        if rlimits is not None:
            full = [*rlimits, *full]
        return _wait(full, tmp, limits, stdin, isolation)
    finally:
        _remove_cgroup(cgroup)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait(
    argv: list[str], tmp: Path, limits: SandboxLimits, stdin: str | None, isolation: list[str]
) -> SandboxResult:
    out_path, err_path = tmp / "stdout", tmp / "stderr"
    start = time.monotonic()
    status = "error"
    returncode: int | None = None
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                argv,
                cwd=tmp,
                stdout=out,
                stderr=err,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=None if argv[0] == "prlimit" else _preexec(limits),
            )
            try:
                if stdin is not None:
                    proc.communicate(stdin.encode(), timeout=limits.wall_seconds)
                else:
                    proc.wait(timeout=limits.wall_seconds)
                returncode = proc.returncode
                status = "passed" if returncode == 0 else ("killed" if returncode < 0 else "failed")
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                # unshare --kill-child: its death kills the namespace's first process, and with it
                # every process of the pid namespace (daemons that left the process group too).
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if returncode is None:
                    returncode = proc.returncode
    except OSError as error:
        message = f"could not start {argv[0]}: {error}"
        return SandboxResult(False, "error", None, "", message, time.monotonic() - start, isolation)
    seconds = time.monotonic() - start
    stdout = _read_capped(out_path, limits.output_bytes)
    stderr = _read_capped(err_path, limits.output_bytes)
    if returncode == SETUP_FAILED and "codetune-sandbox-setup:" in stderr:
        status = "error"
    return SandboxResult(status == "passed", status, returncode, stdout, stderr, seconds, isolation)


def _reason(result: SandboxResult) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return (lines[-1] if lines else f"exit status {result.returncode}")[:300]


@functools.lru_cache(maxsize=1)
def probe() -> Plan:
    """Find the strongest isolation this machine allows, by running a trivial program under it."""
    as_root = os.geteuid() == 0
    user = () if as_root else ("--user", "--map-root-user")
    pid = ("--pid", "--fork", "--kill-child")
    candidates: list[tuple[tuple[str, ...], bool, bool]] = []
    if shutil.which("unshare"):
        candidates = [
            (("unshare", *user, "--net", *pid, "--mount", "--"), True, True),
            (("unshare", *user, "--net", *pid, "--"), False, True),
            (("unshare", *user, "--net", "--"), False, False),
        ]
    candidates.append(((), False, False))
    limits = SandboxLimits(wall_seconds=20)
    failures: list[str] = []
    trial = [sys.executable, "-c", "pass"]
    chosen = None
    for unshare, mount, in_pid in candidates:
        for seccomp in (True, False):
            plan = Plan(unshare, mount, in_pid, seccomp, False, ())
            result = _execute(plan, trial, {}, limits, None)
            if result.passed:
                chosen = plan
                break
            failures.append(f"{' '.join(unshare[:-1]) or 'no namespaces'}: {_reason(result)}")
        if chosen is not None:
            break
    if chosen is None:
        chosen = Plan((), False, False, False, False, ())
    why = failures[0] if failures else "unshare not found"
    cgroup = _pids_cgroup(4) if chosen.unshare and as_root else None
    _remove_cgroup(cgroup)
    uses_user = "--user" in chosen.unshare
    layers = (
        Layer(
            "network", bool(chosen.unshare), "new network namespace, loopback down" if chosen.unshare else why
        ),
        Layer(
            "mount",
            chosen.mount,
            "private mount namespace: fresh tmpfs root, read-only binds of the system and the "
            "interpreter, work dir on a size-bound tmpfs"
            if chosen.mount
            else why,
        ),
        Layer("pid", chosen.pid, "pid namespace with a fresh /proc" if chosen.pid else why),
        Layer(
            "user",
            uses_user,
            "user namespace: root inside maps to this user"
            if uses_user
            else ("not needed as root: the code runs as a fresh uid" if as_root else why),
        ),
        Layer(
            "cgroups",
            cgroup is not None,
            "pids cgroup with pids.max"
            if cgroup is not None
            else (
                "no writable pids cgroup controller" if as_root else "not root: RLIMIT_NPROC limits processes"
            ),
        ),
        Layer(
            "seccomp",
            chosen.seccomp,
            "filter refusing mount, ptrace, unshare, setns, bpf, keyctl, ..."
            if chosen.seccomp
            else "unavailable (unknown architecture or refused by the kernel)",
        ),
        Layer(
            "limits",
            True,
            "rlimits (cpu, address space, file size, open files, core, processes) via "
            + ("prlimit" if shutil.which("prlimit") else "setrlimit")
            + "; capabilities dropped, no_new_privs; wall-clock kill",
        ),
    )
    plan = Plan(chosen.unshare, chosen.mount, chosen.pid, chosen.seccomp, cgroup is not None, layers)
    return plan


def require(unsafe: Iterable[str] = ()) -> Plan:
    """This machine's plan, or a CodetuneError naming each missing required layer not in ``unsafe``."""
    plan = probe()
    refused = [name for name in plan.missing() if name not in set(unsafe)]
    if refused:
        reasons = "; ".join(f"{name}: {plan.layer(name).detail}" for name in refused)
        flags = " ".join(f"--unsafe-{name}" for name in refused)
        raise CodetuneError(
            f"cannot isolate generated code here ({reasons}); refusing to run it. "
            f"Pass {flags} to run it anyway."
        )
    return plan


def run_sandboxed(
    command: list[str],
    files: dict[str, str] | None = None,
    *,
    limits: SandboxLimits | None = None,
    unsafe_network: bool = False,
    unsafe: Iterable[str] = (),
    stdin: str | None = None,
) -> SandboxResult:
    """Write ``files`` into a fresh work dir and run ``command`` there under the limits.

    ``{dir}`` and ``{file}`` (the first file) in the command are replaced by their paths. Refuses
    (CodetuneError) when a required layer is missing and not named in ``unsafe``.
    """
    plan = require(set(unsafe) | ({"network"} if unsafe_network else set()))
    return _execute(plan, list(command), files or {}, limits or SandboxLimits(), stdin)


def eval_limits(timeout: float, memory_mb: int, max_processes: int) -> SandboxLimits:
    """The limits ``codetune eval`` runs each program under (``sandbox run`` uses the same)."""
    return SandboxLimits(
        wall_seconds=timeout,
        cpu_seconds=max(1, int(-(-timeout // 1))),
        memory_mb=memory_mb,
        max_processes=max_processes,
    )
