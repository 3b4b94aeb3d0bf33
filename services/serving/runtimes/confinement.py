"""Confine the tensor worker process before it loads a model: resource limits and Linux Landlock.

- Landlock (Linux >= 5.13, via raw syscalls): the process and every thread it
  starts afterwards may read only the model's folder, the Python installation
  and system libraries; it may write, create or delete no file anywhere, and
  (ABI >= 4) bind or connect no TCP socket; (ABI >= 6) it may not signal other
  processes or reach abstract Unix sockets. UDP and Unix sockets by path are
  not covered (no allowed operator opens a socket). Applied while the worker
  still runs one thread (after the imports, which start none), so no thread
  escapes it. When the kernel refuses (no Landlock, a seccomp-filtered syscall),
  the worker runs without it and says so (`confine` returns why; serving logs
  it); the operator allowlist and the limits below still hold.
- rlimits: no core dumps, no file writes (RLIMIT_FSIZE 0), few descriptors
  (RLIMIT_NOFILE), and an address-space cap (RLIMIT_AS): what the imports
  mapped plus the model's memory budget.
  RLIMIT_CPU is not used: it counts the worker's whole life, not one call; the
  serving side bounds each call with a deadline and restarts the worker instead.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from pathlib import Path

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1

_EXECUTE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 2, 1 << 3
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

# Directories whose files the worker may read (and map as code): the interpreter and shared libraries.
_SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib64", "/etc/ld.so.cache")
# Read by the OpenMP and CPU-feature code torch runs when its threads start.
_DEVICE_READ = ("/sys/devices/system/cpu", "/proc/cpuinfo", "/dev/null", "/dev/urandom")

MAX_OPEN_FILES = 64


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def confine(model_folder: Path, memory_bytes: int) -> str:
    """Confine this process for good; returns what filesystem confinement holds ("landlock ABI n" or why none).

    Call it with one thread running, after the imports, before any model file is opened.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)  # SIGKILL when serving goes away
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    if memory_bytes > 0:
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + memory_bytes, mapped + memory_bytes))
    try:
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:  # Landlock binds the calling thread only: others would stay free
            return f"none ({threads} threads were running)"
        return f"landlock ABI {_landlock(libc, _readable_paths(model_folder))}"
    except OSError as exc:
        return f"none (Landlock refused: {exc.strerror or exc})"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))


def _readable_paths(model_folder: Path) -> list[str]:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    services = Path(__file__).resolve().parents[2]  # this package's own sources, nothing else of the repo
    return [str(model_folder), str(services), *sorted(prefixes), *_SYSTEM_READ, *_DEVICE_READ]


def _landlock(libc, readable: list[str]) -> int:
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if abi < 0:
        raise _errno()
    fs = _FS_RIGHTS_BY_ABI[max(k for k in _FS_RIGHTS_BY_ABI if k <= abi)]
    attr = _RulesetAttr(fs, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0, 0)
    size = 8 if abi < 4 else 16
    if abi >= 6:
        attr.scoped, size = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL, 24
    ruleset = syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise _errno()
    try:
        for path in readable:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this system
            try:
                rights = _EXECUTE | _READ_FILE | (_READ_DIR if os.path.isdir(path) else 0)
                rule = _PathBeneathAttr(rights, fd)
                if syscall(
                    _SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule), 0
                ):
                    raise _errno()
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
            raise _errno()
        if syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)):
            raise _errno()
    finally:
        os.close(ruleset)
    return abi


def _errno() -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code))
