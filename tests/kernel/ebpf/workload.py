"""Processes the kernel tests run inside cgroups: burners, a sender and a receiver.

Run as `python workload.py <mode> ...`; the test moves the process into its cgroup before exec,
so everything it does (interpreter start-up included) is that cgroup's. Each mode prints one
JSON line with what the kernel says about itself (/proc/self/schedstat run_delay, bytes moved).
"""

import json
import socket
import sys
import time


def run_delay_ns() -> int:
    with open("/proc/self/schedstat") as f:
        return int(f.read().split()[1])


def burn(cpu_seconds: float) -> None:
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    out: dict = {}
    if mode == "burn":  # a CPU hog for N CPU-seconds
        burn(float(args[0]))
    elif mode == "spin":  # a CPU hog for N wall seconds at most: load that stops by itself
        end = time.monotonic() + float(args[0])
        while time.monotonic() < end:
            pass
    elif mode == "forkburn":  # fork K children that burn S CPU-seconds each, burn S, reap them
        import os

        k, secs = int(args[0]), float(args[1])
        kids = []
        for _ in range(k):
            pid = os.fork()
            if pid == 0:
                burn(secs)
                os._exit(0)
            kids.append(pid)
        burn(secs)
        for pid in kids:
            os.waitpid(pid, 0)
    elif mode == "wakeburn":  # burn 2 ms, sleep 1 ms, for N wall seconds: many short waits
        end = time.monotonic() + float(args[0])
        while time.monotonic() < end:
            burn(0.002)
            time.sleep(0.001)
    elif mode == "touch":  # write one byte into each of N fresh anonymous pages: N faults
        import mmap
        import resource

        n = int(args[0])
        m = mmap.mmap(-1, n * mmap.PAGESIZE)
        for i in range(n):
            m[i * mmap.PAGESIZE] = 1
        m.close()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out["faults_total"] = ru.ru_minflt + ru.ru_majflt  # the kernel's count, kernel-mode faults too
    elif mode == "syscalls":  # N getppid() system calls (never cached by libc)
        import os

        for _ in range(int(args[0])):
            os.getppid()
    elif mode == "recv":  # accept K connections on the given listening ports, count bytes
        k = int(args[0])
        socks = []
        for spec in args[1:]:
            host, port = spec.rsplit(":", 1)
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
            s.listen(8)
            socks.append(s)
        print(json.dumps({"listening": True}), flush=True)
        import selectors

        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        got = 0
        for _ in range(k):
            key, _ = sel.select()[0]
            c, _ = key.fileobj.accept()
            while True:
                b = c.recv(1 << 16)
                if not b:
                    break
                got += len(b)
            c.close()
        out["received"] = got
    elif mode == "send":  # send host:port:N triples, one connection each
        sent, conns = 0, []
        for spec in args:
            host, port, n = spec.rsplit(":", 2)
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            c = socket.socket(fam, socket.SOCK_STREAM)
            # From the address we send to: loopback would otherwise pick 127.0.0.1 as source,
            # and the receiver's ingress is classed by source.
            c.bind((host, 0))
            c.connect((host, int(port)))
            c.sendall(b"x" * int(n))
            c.shutdown(socket.SHUT_WR)
            c.recv(1)  # wait for the peer's close: all our data was taken
            # The kernel's count of what this socket put on the wire: payload bytes including
            # retransmissions (tcpi_bytes_sent, offset 200) and segments (tcpi_segs_out, 136).
            info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            conns.append({"host": host, "bytes_sent": int.from_bytes(info[200:208], "little"),
                          "segs_out": int.from_bytes(info[136:140], "little")})
            c.close()
            sent += int(n)
        out["sent"] = sent
        out["conns"] = conns
    out["run_delay_ns"] = run_delay_ns()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
