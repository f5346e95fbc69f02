"""The worker's sandbox: what learner code may read, write, connect to and signal.

Applied by the worker to itself (``grader.worker._shut_in``), after its fork and
before any learner code runs, with no root and no container, through Linux's
Landlock (binding: ``landlockpy``, dependency-free, ABI 1-11):

- **files** (ABI >= 1): read only the interpreter, the standard library, the
  third-party packages learner code may use (:data:`PACKAGES` and what they
  require, allowed package by package, never a whole site-packages folder: the
  kit's own packages are never readable, editable install or wheel), system
  libraries and fonts, a few ``/proc/self`` and ``/sys`` entries, and the CUDA
  device nodes where present; write only in the worker's own folder (its copy of
  the submission, with its caches and ``TMPDIR`` redirected into ``.scratch/``),
  ``/dev/null`` and ``/dev/shm``.
- **network** (ABI >= 4): no TCP connect nor bind (UDP too from ABI 10).
- **signals** (ABI >= 6): no signal to, and no abstract unix socket of, any
  process outside the worker's own domain (the judge, the fork server, other
  workers); ptrace is confined by Landlock at every ABI.
- **limits** (always): ``RLIMIT_FSIZE`` (a file stops growing at 1 GiB) and, for
  a user other than root (for whom the kernel does not enforce it),
  ``RLIMIT_NPROC``; memory and time limits are the judge's (``grader.judge``).

Where Landlock is missing (not Linux, a kernel before 5.13, Landlock off at
boot), :func:`unavailable` says why: ``grade ex4`` grades with a one-line notice,
``grade batch`` and ``grade gradescope`` refuse unless told ``--no-sandbox``
(which sets ``GRADE_SANDBOX=off``, inherited by batch judges).
"""

from __future__ import annotations

import functools
import glob
import os
import re
import resource
import site
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

KIT_ROOT = Path(__file__).resolve().parent.parent  # as grader.judge.KIT_ROOT
ENV = "GRADE_SANDBOX"  # "off": workers run without the sandbox
FILE_SIZE_LIMIT = 2**30  # bytes: the largest file learner code may write
PROCESS_ALLOWANCE = 256  # tasks (processes, threads) a worker may add to the machine's count (not for root)
# what learner code may import, beyond the standard library; with what these require, installed
PACKAGES = ("torch", "numpy", "matplotlib", "sympy", "pytest", "hypothesis", "pillow")
IMPORTABLE = "the standard library, torch, numpy, matplotlib, sympy, pytest, hypothesis and PIL"  # for learners
KIT_PACKAGES = ("grader", "reference", "solutions", "exercises", "tests")
SCRATCH = ".scratch"  # in the worker's folder: TMPDIR, HOME and the caches
CACHE_VARIABLES = ("TMPDIR", "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR",
                   "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CUDA_CACHE_PATH")
SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share/fonts", "/usr/share/zoneinfo", "/etc/fonts",
               "/etc/ld.so.cache", "/etc/localtime", "/dev/urandom", "/dev/random", "/dev/zero",
               "/proc/cpuinfo", "/proc/meminfo", "/sys/devices/system/cpu", "/sys/devices/system/node")
PROC_SELF = ("fd", "fdinfo", "stat", "statm", "status", "maps", "limits", "cmdline", "auxv", "cgroup", "mountinfo")
# CUDA, where /dev/nvidiactl exists: the driver's device nodes (read-write, ioctls), what it reads in /proc, /sys
CUDA_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset", "/dev/nvidia-caps")
CUDA_READ = ("/proc/driver/nvidia", "/proc/devices", "/sys/module/nvidia", "/sys/bus/pci/devices", "/sys/devices")


def enabled() -> bool:
    """False when told ``--no-sandbox`` (``GRADE_SANDBOX=off`` in the environment)."""
    return os.environ.get(ENV, "on") != "off"


def disable() -> None:
    """Grade without the sandbox from now on, in this process and the judges it starts."""
    os.environ[ENV] = "off"


def abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none or the binding is missing."""
    try:
        import landlockpy

        return landlockpy.abi_version() if sys.platform == "linux" else 0
    except (ImportError, OSError):  # OSError: a seccomp filter (a container's) refuses the system call
        return 0


def unavailable() -> str | None:
    """Why no sandbox can be applied here (one line), or None when it can."""
    if sys.platform != "linux":
        return f"Landlock is Linux-only (this is {sys.platform})"
    try:
        import landlockpy  # noqa: F401
    except ImportError:
        return "the landlockpy package is not installed"
    if abi() < 1:
        return "this kernel has no Landlock (Linux 5.13 or later, enabled at boot)"
    return None


def inactive() -> dict:
    """The layers record of a worker without Landlock (the limits stay: file size, processes, time, memory)."""
    return {"files": False, "network": False, "signals": False, "limits": True, "landlock_abi": abi()}


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _key(name: str) -> str:
    """A distribution's normalized name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _distributions() -> list:
    """:data:`PACKAGES`, pytest's plugins (the worker runs q6's learner tests) and all they require."""
    import importlib.metadata as metadata

    todo = list(PACKAGES) + [ep.dist.name for ep in metadata.entry_points(group="pytest11") if ep.dist]
    seen: dict[str, object] = {}
    while todo:
        name = todo.pop()
        key = _key(name)
        if key in seen:
            continue
        try:
            seen[key] = dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            seen[key] = None
            continue
        todo += [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in dist.requires or () if "extra ==" not in r]
    return [d for d in seen.values() if d is not None]


def _installed(dist) -> set[str]:
    """The top-level folders and files a distribution installed (from ``top_level.txt``, else its RECORD)."""
    base = os.path.realpath(str(dist.locate_file("")))
    names = (dist.read_text("top_level.txt") or "").split()
    if names:  # cheaper than RECORD (torch's lists 15,000 files)
        found = set()
        for name in names + [f"{name}.libs" for name in names + [dist.name]]:
            found |= set(glob.glob(os.path.join(base, glob.escape(name)))) \
                | set(glob.glob(os.path.join(base, glob.escape(name) + ".*"))) \
                | set(glob.glob(os.path.join(base, "__pycache__", glob.escape(name) + ".*.pyc")))
        return found
    return {os.path.join(base, *file.parts[:2]) if file.parts[0] == "__pycache__" else os.path.join(base, file.parts[0])
            for file in dist.files or () if file.parts[0] != ".." and not file.parts[0].endswith(".pth")}


@functools.lru_cache(maxsize=None)
def _rules(kit_root: str) -> tuple[tuple[tuple[str, bool], ...], ...]:
    """``(read-only, read-write devices, listable folders)``: ``(path, is a folder)`` pairs, computed once.

    The fork server computes it in its preload (:func:`prepare`): each worker then only applies it.
    Every path that holds, or lies in, one of the kit's packages is left out.
    """
    kit = [os.path.join(os.path.realpath(kit_root), name) for name in KIT_PACKAGES]
    read: set[str] = {os.path.realpath(sys.executable), os.path.realpath(getattr(sys, "_base_executable", sys.executable))}
    read |= set(glob.glob(os.path.join(sys.base_prefix, "lib", "libpython*")))
    sites = {os.path.realpath(p) for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)}
    for folder in {sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")}:
        if os.path.isdir(folder):  # entry by entry: its site-packages folder is left out
            read |= {os.path.join(folder, e) for e in os.listdir(folder) if e not in ("site-packages", "dist-packages")}
    for folder in {os.path.realpath(f) for f in SYSTEM_READ[:4]}:  # /lib is often /usr/lib
        if os.path.isdir(folder):  # entry by entry: the system Python's packages (python3/dist-packages) are left out
            read |= {os.path.join(folder, e) for e in os.listdir(folder) if not e.startswith("python")}
    cuda = os.path.exists("/dev/nvidiactl")  # an NVIDIA driver is loaded
    read |= {p for p in SYSTEM_READ[4:] + CUDA_READ * cuda if os.path.exists(p)}
    metadata = {(folder, _key(e.rsplit(".", 1)[0].split("-")[0])): os.path.join(folder, e)  # what importlib.metadata reads
                for folder in sites for e in os.listdir(folder) if e.endswith((".dist-info", ".egg-info"))}
    for dist in _distributions():  # the others' metadata reads as empty (importlib.metadata skips it)
        read |= _installed(dist)
        info = metadata.get((os.path.realpath(str(dist.locate_file(""))), _key(dist.name)))
        read |= {info} if info else set()
    read = {p for p in read if os.path.exists(p) and not any(_inside(p, k) or _inside(k, p) for k in kit)}
    devices = {"/dev/null", "/dev/shm"} | {p for p in (CUDA_DEVICES + tuple(glob.glob("/dev/nvidia[0-9]*"))) * cuda
                                            if os.path.exists(p)}
    return tuple(tuple((p, os.path.isdir(p)) for p in sorted(paths)) for paths in (read, devices, sites))


def prepare() -> None:
    """Compute the rules now (the fork server does, in ``grader.frozen``: each worker only applies them)."""
    if unavailable() is None and enabled():  # unavailable() loads the binding (ctypes finds libc: ms)
        _rules(str(KIT_ROOT))


def _redirect_caches(workdir: Path) -> Path:
    scratch = workdir / SCRATCH
    scratch.mkdir(exist_ok=True)
    for name in CACHE_VARIABLES:
        os.environ[name] = str(scratch)
    tempfile.tempdir = str(scratch)
    return scratch


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    if os.getuid() != 0:  # the kernel counts all of the user's tasks, and never limits root
        with open("/proc/loadavg") as loadavg:  # "0.5 0.4 0.3 2/310 4242": 310 tasks on the machine, the
            tasks = int(loadavg.read().split()[3].split("/")[1])  # user's at most (counting theirs costs 10 ms)
        limit = tasks + PROCESS_ALLOWANCE
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        if hard == resource.RLIM_INFINITY or limit < hard:
            resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def apply(workdir: Path, kit_root: Path, landlock: bool = True) -> dict:
    """Shut the calling process in (irreversible); return the layers that are active.

    The caches' redirection and the limits are applied always; Landlock's layers where
    ``landlock`` (``--no-sandbox`` turns them off) and the kernel has it.

    Below Landlock ABI 8, must be called while the process has a single thread (a worker
    right after its fork): Landlock then restricts the calling thread and the threads it
    starts later; from ABI 8 it restricts all of them (``TSYNC``).

    Returns:
        ``{"files": bool, "network": bool, "signals": bool, "limits": True, "landlock_abi": int}``.

    Raises:
        RuntimeError: another thread is running below ABI 8 (it would stay unrestricted).
    """
    workdir = Path(workdir)
    _redirect_caches(workdir)
    _limits()
    if not landlock or unavailable() is not None:
        return inactive()
    from landlockpy import AccessFS, AccessNet, RestrictFlag, Ruleset, Scope, fs_for_abi
    from landlockpy.flags import LATEST_ABI

    if abi() < 8 and (threading.active_count() > 1 or len(os.listdir("/proc/self/task")) > 1):
        raise RuntimeError("grader.sandbox.apply must run before the worker starts a thread (Landlock ABI < 8 "
                           "restricts only the calling thread and the threads it starts later)")
    read, devices, sites = _rules(str(kit_root))
    reading = AccessFS.READ_FILE | AccessFS.READ_DIR
    writing = reading | AccessFS.WRITE_FILE | AccessFS.TRUNCATE
    everything = fs_for_abi(LATEST_ABI) & ~(AccessFS.EXECUTE | AccessFS.MAKE_CHAR | AccessFS.MAKE_BLOCK | AccessFS.IOCTL_DEV)
    files = AccessFS.EXECUTE | AccessFS.READ_FILE | AccessFS.WRITE_FILE | AccessFS.TRUNCATE | AccessFS.IOCTL_DEV

    def allow(path: str, folder: bool, access: AccessFS) -> None:  # a file's rule holds only files' rights
        rules.allow_path(path, access if folder else access & files)

    with Ruleset(handled_net=AccessNet.BIND_TCP | AccessNet.CONNECT_TCP | AccessNet.BIND_UDP
                 | AccessNet.CONNECT_SEND_UDP, scoped=Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET) as rules:
        for path, folder in read:
            allow(path, folder, reading | AccessFS.EXECUTE)
        for path, folder in sites:
            allow(path, folder, AccessFS.READ_DIR)  # names only: imports list it; contents per package
        own = f"/proc/{os.getpid()}"
        for entry in PROC_SELF:
            allow(f"{own}/{entry}", entry in ("fd", "fdinfo"), reading)
        for path, folder in devices:
            allow(path, folder, writing | everything & (AccessFS.MAKE_REG | AccessFS.REMOVE_FILE) | AccessFS.IOCTL_DEV)
        rules.allow_path(workdir, everything)
        rules.restrict(RestrictFlag.TSYNC)  # ABI >= 8: every thread of the process (dropped before)
        return {"files": bool(rules.handled_fs), "network": bool(rules.handled_net & AccessNet.CONNECT_TCP),
                "signals": bool(rules.scoped & Scope.SIGNAL), "limits": True, "landlock_abi": rules.abi_version}
