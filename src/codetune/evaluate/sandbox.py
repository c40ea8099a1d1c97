"""Run untrusted generated code: a subprocess in fresh namespaces with hard resource limits.

Layers, each reported in ``SandboxResult.isolation``:

* a fresh temporary working directory (HOME and TMPDIR too) and a scrubbed environment;
* rlimits set before exec: CPU seconds, address space (memory), file size (also caps the captured
  output, which goes to files), open files, core dumps off, and RLIMIT_NPROC (processes + threads);
* ``unshare``: a new network namespace (only a down loopback: no connection can leave), a PID
  namespace (killing its first process kills every descendant, so nothing outlives the run) and a
  mount namespace where every mount is remounted read-only except the working directory;
  unprivileged users get a user namespace for this;
* root ignores RLIMIT_NPROC, so as root the run also joins a fresh ``pids`` cgroup with pids.max;
* every capability dropped (``setpriv``), so even root inside cannot undo the above;
* a wall-clock limit after which the whole process group is killed.

Network isolation is required: where namespaces are not allowed, runs are refused unless
``unsafe_network=True`` (``--unsafe-network``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from codetune.errors import CodetuneError

log = logging.getLogger(__name__)

# Run inside the namespaces before the command: make every mount read-only except the work dir.
_BOOTSTRAP = r"""
set -e
work="$1"; cgroup="$2"; remount="$3"; shift 3
if [ -n "$cgroup" ]; then echo $$ > "$cgroup/cgroup.procs"; fi
if [ "$remount" = 1 ]; then
  mount --make-rprivate / 2>/dev/null || true
  mount --bind "$work" "$work"
  awk '{print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    case "$m" in *\\*) continue;; esac
    mount -o remount,bind,ro "$m" 2>/dev/null || true
  done
  mount -o remount,bind,rw "$work"
  ip link set lo up 2>/dev/null || true
fi
cd "$work"
if [ "$remount" = 1 ] && command -v setpriv >/dev/null 2>&1; then
  # no capabilities: the code cannot remount, re-enter namespaces or regain privileges
  exec setpriv --no-new-privs --bounding-set=-all --inh-caps=-all -- "$@"
fi
exec "$@"
"""


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


@functools.lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...] | None:
    """The ``unshare`` argv that works on this machine, or None when namespaces are not allowed."""
    if not shutil.which("unshare"):
        return None
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    candidates = [
        [*user, "--net", "--pid", "--fork", "--kill-child", "--mount"],
        [*user, "--net", "--pid", "--fork", "--kill-child"],
        [*user, "--net"],
    ]
    for flags in candidates:
        argv = ["unshare", *flags, "--", "true"]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run(argv, capture_output=True, timeout=10).returncode == 0:
                return ("unshare", *flags)
    return None


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


def run_sandboxed(
    command: list[str],
    files: dict[str, str] | None = None,
    *,
    limits: SandboxLimits | None = None,
    unsafe_network: bool = False,
    stdin: str | None = None,
) -> SandboxResult:
    """Write ``files`` into a fresh temp dir and run ``command`` there under the limits.

    ``{dir}`` and ``{file}`` (the first file) in the command are replaced by their paths.
    """
    limits = limits or SandboxLimits()
    files = files or {}
    prefix = namespace_prefix()
    if prefix is None and not unsafe_network:
        raise CodetuneError(
            "cannot isolate the network here (unshare of a network namespace is not permitted); "
            "refusing to run generated code. Pass --unsafe-network to run it anyway."
        )
    isolation = ["tempdir", "rlimits"]
    cgroup = _pids_cgroup(limits.max_processes + 4) if (prefix and os.geteuid() == 0) else None
    if cgroup is not None:
        isolation.append("pids-cgroup")
    elif os.geteuid() == 0:
        log.warning("running as root without a pids cgroup: the process limit is not enforced")
    with tempfile.TemporaryDirectory(prefix="codetune-sandbox-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        for name, text in files.items():
            target = (work / name).resolve()
            if not target.is_relative_to(work.resolve()):
                raise CodetuneError(f"sandbox file name escapes the work dir: {name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        first = str(work / next(iter(files))) if files else ""
        argv = [part.replace("{dir}", str(work)).replace("{file}", first) for part in command]
        remount = "1" if prefix is not None and "--mount" in prefix else "0"
        argv = ["sh", "-c", _BOOTSTRAP, "sandbox", str(work), str(cgroup or ""), remount, *argv]
        if prefix is not None:
            flags = ",".join(f.lstrip("-") for f in prefix[1:] if f.startswith("--"))
            isolation.append(f"namespaces:{flags}")
            argv = [*prefix, "--", *argv]
        rlimits = _rlimit_argv(limits)
        if rlimits is not None:
            argv = [*rlimits, *argv]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "TMPDIR": str(work),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
        }
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        start = time.monotonic()
        status = "error"
        returncode: int | None = None
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(
                    argv,
                    cwd=work,
                    env=env,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=None if rlimits is not None else _preexec(limits),
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
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    if returncode is None:
                        returncode = proc.returncode
        except OSError as error:
            return SandboxResult(
                False,
                "error",
                None,
                "",
                f"could not start {argv[0]}: {error}",
                time.monotonic() - start,
                isolation,
            )
        finally:
            _remove_cgroup(cgroup)
        seconds = time.monotonic() - start
        stdout = _read_capped(out_path, limits.output_bytes)
        stderr = _read_capped(err_path, limits.output_bytes)
    return SandboxResult(status == "passed", status, returncode, stdout, stderr, seconds, isolation)
