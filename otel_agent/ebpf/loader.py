"""Compile and load the BPF programs in a short-lived child; the agent keeps only descriptors.

BCC compiles with LLVM, and LLVM stays mapped in the process that compiled (~100 MB of
file-backed pages here, DESIGN "What things cost here"). So the agent never imports bcc: it
runs this module as a child (`python -m otel_agent.ebpf.loader`, the same interpreter), which
compiles the sources with BCC, loads every program, creates the maps, and hands the agent each
program and map descriptor over a socketpair (SCM_RIGHTS) with a small JSON manifest, then
exits. The kernel keeps programs and maps alive as long as a descriptor refers to them, so
the agent attaches, reads and frees with libbcc_bpf (no LLVM) from then on.

Protocol: the parent writes one JSON request on the child's stdin; the child answers with one
SOCK_SEQPACKET message on the inherited socket: {"ok": manifest} with the descriptors, or
{"error": text, "kind": "import"|"compile"|...} without. Compiler diagnostics and verifier
logs go to the child's stderr, which the parent captures and quotes in its error.
"""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import otel_agent

MAX_FDS = 250  # SCM_MAX_FD is 253 per message
MAX_MESSAGE = 1 << 18
STDERR_TAIL = 4000  # characters of the child's stderr quoted in an error

# BPFProgType values (include/uapi/linux/bpf.h), by the names the parent asks for.
PROG_TYPES = {"tracepoint": 5, "cgroup_skb": 8, "raw_tracepoint": 17}


@dataclass(frozen=True, slots=True)
class MapInfo:
    name: str
    fd: int
    type: int  # enum bpf_map_type
    key_size: int
    value_size: int  # one CPU's value for per-CPU maps
    max_entries: int


@dataclass
class Loaded:
    """What the child handed over: descriptors owned by this process from now on."""

    programs: dict[str, int] = field(default_factory=dict)  # program name -> fd
    maps: dict[str, MapInfo] = field(default_factory=dict)
    family_errors: dict[str, str] = field(default_factory=dict)  # family -> why it did not load
    stderr: str = ""
    peak_rss_bytes: int = 0  # the child's own high-water mark (VmHWM): what compiling took

    def close(self) -> None:
        for fd in [*self.programs.values(), *(m.fd for m in self.maps.values())]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.programs.clear()
        self.maps.clear()


class LoaderError(Exception):
    """The child could not deliver. kind: "import" (no bcc), "compile", "timeout", "crash"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --- parent side ---------------------------------------------------------------------------

def _child_env() -> dict[str, str]:
    """The child must run this same package (a worktree, an editable install, the image)."""
    env = dict(os.environ)
    root = str(Path(otel_agent.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= STDERR_TAIL else "..." + text[-STDERR_TAIL:]


def _run_child(request: dict, timeout_seconds: float) -> tuple[dict | None, list[int], str]:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fds: list[int] = []
    try:
        request = {**request, "sock_fd": child.fileno()}
        try:
            # -P: not the working directory first on sys.path, the package this process runs
            # (PYTHONPATH from _child_env), so parent and child speak the same protocol.
            p = subprocess.Popen([sys.executable, "-P", "-m", "otel_agent.ebpf.loader"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, pass_fds=(child.fileno(),),
                                 env=_child_env(), encoding="utf-8", errors="replace")
        except OSError as e:
            raise LoaderError("crash", f"cannot start the BPF loader ({sys.executable}): {e}") from e
        child.close()  # only the child holds its end now
        try:
            _, err = p.communicate(json.dumps(request), timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            raise LoaderError("timeout", f"the BPF loader did not finish within {timeout_seconds:.0f} s "
                              f"(compiling on a loaded node?){': ' + _tail(err) if err.strip() else ''}")
        parent.setblocking(False)
        try:
            msg, fds = _recv(parent)
        except BlockingIOError:
            msg = b""
        if not msg:
            raise LoaderError("crash", f"the BPF loader exited with code {p.returncode} and sent "
                              f"nothing{': ' + _tail(err) if err.strip() else ''}")
        return json.loads(msg), fds, err
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        parent.close()
        child.close()


def _recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and its descriptors, close-on-exec from the start (recv_fds sets no flag)."""
    fds = array.array("i")
    msg, anc, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * fds.itemsize),
                                      socket.MSG_CMSG_CLOEXEC)
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    got = list(fds)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in got:
            os.close(fd)
        raise LoaderError("crash", "the BPF loader's answer was truncated (too many maps or programs?)")
    return msg, got


def load(text: str, cflags: list[str], programs: dict[str, list[tuple[str, str]]], *,
         timeout_seconds: float) -> Loaded:
    """Compile `text` in a child, load `programs` (family -> [(name, type)]), return the fds.

    A family whose programs the kernel refuses is in family_errors (the rest still load);
    anything that stops the whole load is a LoaderError whose message quotes the child.
    """
    request = {"mode": "load", "text": text, "cflags": cflags,
               "programs": {fam: [list(p) for p in progs] for fam, progs in programs.items()}}
    answer, fds, err = _run_child(request, timeout_seconds)
    try:
        if "error" in answer:
            detail = answer["error"]
            if err.strip() and answer.get("kind") != "import":
                detail += "\n" + _tail(err)
            raise LoaderError(answer.get("kind", "compile"), detail)
        man = answer["ok"]
        out = Loaded(stderr=err, family_errors=dict(man.get("family_errors", {})),
                     peak_rss_bytes=int(man.get("peak_rss_bytes", 0)))
        out.programs = {name: fds[i] for name, i in man["programs"].items()}
        out.maps = {name: MapInfo(name, fds[m["fd"]], m["type"], m["key_size"], m["value_size"],
                                  m["max_entries"]) for name, m in man["maps"].items()}
        used = set(out.programs.values()) | {m.fd for m in out.maps.values()}
        for fd in fds:
            if fd not in used:
                os.close(fd)
        return out
    except BaseException:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        raise


def check_bcc(timeout_seconds: float = 60.0) -> tuple[bool, str]:
    """Whether the child can import bcc (for `doctor`), without importing it here."""
    try:
        answer, fds, _ = _run_child({"mode": "check"}, timeout_seconds)
    except LoaderError as e:
        return False, str(e)
    for fd in fds:
        os.close(fd)
    if "error" in answer:
        return False, answer["error"]
    return True, answer["ok"]


# --- child side ----------------------------------------------------------------------------

def _answer(sock: socket.socket, payload: dict, fds: list[int] = ()) -> None:  # type: ignore[assignment]
    data = json.dumps(payload).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def _bcc():
    """bcc and the libbcc entry points the Python binding does not declare."""
    import ctypes as ct

    import bcc
    from bcc.libbcc import lib

    for name, res, args in (("bpf_num_tables", ct.c_ulonglong, [ct.c_void_p]),
                            ("bpf_table_name", ct.c_char_p, [ct.c_void_p, ct.c_ulonglong]),
                            ("bpf_table_fd_id", ct.c_int, [ct.c_void_p, ct.c_ulonglong]),
                            ("bpf_table_key_size_id", ct.c_size_t, [ct.c_void_p, ct.c_ulonglong]),
                            ("bpf_table_leaf_size_id", ct.c_size_t, [ct.c_void_p, ct.c_ulonglong])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return bcc, lib


def _load(req: dict) -> tuple[dict, list[int]]:
    bcc, lib = _bcc()
    b = bcc.BPF(text=req["text"], cflags=req["cflags"])
    fds: list[int] = []
    programs: dict[str, int] = {}
    family_errors: dict[str, str] = {}
    for fam, progs in req["programs"].items():
        loaded = {}
        with _StderrCapture() as log:  # libbcc prints the verifier's log on fd 2
            try:
                for name, typ in progs:
                    loaded[name] = b.load_func(name.encode(), PROG_TYPES[typ]).fd
            except Exception as e:  # this family only: the kernel refused one of its programs
                family_errors[fam] = str(e)
        if fam in family_errors:
            said = _verifier_tail(log.text)
            if said:
                family_errors[fam] += f"; the verifier said: {said}"
            continue
        for name, fd in loaded.items():
            programs[name] = len(fds)
            fds.append(fd)
    maps = {}
    for i in range(lib.bpf_num_tables(b.module)):
        name = lib.bpf_table_name(b.module, i).decode()
        fd = lib.bpf_table_fd_id(b.module, i)
        if fd < 0:
            continue
        maps[name] = {"fd": len(fds), "type": lib.bpf_table_type_id(b.module, i),
                      "key_size": lib.bpf_table_key_size_id(b.module, i),
                      "value_size": lib.bpf_table_leaf_size_id(b.module, i),
                      "max_entries": lib.bpf_table_max_entries_id(b.module, i)}
        fds.append(fd)
    if len(fds) > MAX_FDS:
        raise RuntimeError(f"{len(fds)} descriptors to hand over, at most {MAX_FDS} fit one message")
    return {"programs": programs, "maps": maps, "family_errors": family_errors,
            "peak_rss_bytes": vm_hwm_bytes()}, fds


def vm_hwm_bytes(status: str = "/proc/self/status") -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: that carries over the high-water mark
    of the address space a process had before its exec, e.g. a large parent's under vfork."""
    with open(status) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class _StderrCapture:
    """fd 2 into a temporary file while active (C code writes there, not to sys.stderr)."""

    def __enter__(self) -> "_StderrCapture":
        self.text = ""
        # A memfd, not a file under /tmp: the agent's root filesystem is read-only (deploy/).
        self._fd = os.memfd_create("bpf-loader-stderr", os.MFD_CLOEXEC)
        sys.stderr.flush()
        self._saved = os.dup(2)
        os.dup2(self._fd, 2)
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        size = os.lseek(self._fd, 0, os.SEEK_END)
        self.text = os.pread(self._fd, size, 0).decode(errors="replace")
        os.close(self._fd)
        sys.stderr.write(self.text)  # still quoted whole if the parent reports the child's stderr


def _verifier_tail(text: str, lines: int = 12) -> str:
    """The end of a verifier log: the refused instruction and the kernel's reason."""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])[-STDERR_TAIL // 2:]


def main() -> int:
    req = json.loads(sys.stdin.read())
    sock = socket.socket(fileno=req["sock_fd"])
    try:
        try:
            import bcc  # noqa: F401
        except ImportError as e:
            _answer(sock, {"error": str(e), "kind": "import"})
            return 2
        if req.get("mode") == "check":
            _answer(sock, {"ok": f"python3-bpfcc importable (bcc {getattr(bcc, '__version__', '?')})"})
            return 0
        try:
            manifest, fds = _load(req)
        except Exception as e:  # compile errors, map creation: the parent quotes it
            _answer(sock, {"error": str(e) or type(e).__name__, "kind": "compile"})
            return 1
        _answer(sock, {"ok": manifest}, fds)
        return 0
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
