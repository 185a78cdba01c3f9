"""The image installs system packages only through scripts/install-system.sh.

That script is what `make test` runs, so the packages the tests proved (BCC from Debian, the
generic kernel headers) are the ones the image ships. No Docker engine runs here, so the
Dockerfile is checked statically: its instructions are parsed, every RUN is searched for another
route to a system package, and the checker is run on broken variants so it cannot pass vacuously.
The entrypoint, which (re)links kernel headers for the node's kernel, is run for real.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "image" / "entrypoint.sh"

# Ways to put a system package or a foreign binary into an image other than the install script.
FORBIDDEN = [
    (r"\bapt(-get)?\s+(-\S+\s+)*(install|dist-upgrade|upgrade)\b", "apt install"),
    (r"\baptitude\b", "aptitude"),
    (r"\bdpkg\s+(-\S+\s+)*(-i|--install|--unpack)\b", "dpkg -i"),
    (r"\b(curl|wget)\b", "download"),
    (r"\bpip3?\s+install\b(?!.*\s\.(\s|$))", "pip install of anything but this package"),
]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, buf = [], ""
    for line in text.splitlines():
        if not buf and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            joined.append(buf.strip())
        buf = ""
    out = []
    for ins in joined:
        word, _, rest = ins.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def problems(text: str) -> list[str]:
    ins = instructions(text)
    out = []
    froms = [a for i, a in ins if i == "FROM"]
    if froms != ["debian:12-slim"]:
        out.append(f"FROM must be debian:12-slim (single stage), got {froms}")
    for i, a in ins:
        if i == "ADD":
            out.append(f"ADD {a}: use COPY of files in the build context")
        if i == "RUN":
            for pattern, what in FORBIDDEN:
                if re.search(pattern, a):
                    out.append(f"RUN installs by another route ({what}): {a[:80]}")
    runs_script = [a for i, a in ins if i == "RUN" and re.search(r"(^|&&|;)\s*(bash|sh)\s+\S*install-system\.sh(\s|$)", a)]
    if not runs_script:
        out.append("no RUN calls install-system.sh")
    elif any(re.search(r"install-system\.sh\s+--dev", a) for a in runs_script):
        out.append("install-system.sh --dev: test-only packages in the image")
    copies = [a for i, a in ins if i == "COPY"]
    if not any(a.split()[0] == "scripts/install-system.sh" for a in copies):
        out.append("install-system.sh is not copied from scripts/ (a copy elsewhere could diverge)")
    stop = [a for i, a in ins if i == "STOPSIGNAL"]
    if stop != ["SIGTERM"]:
        out.append(f"STOPSIGNAL must be SIGTERM, got {stop}")
    entry = [a for i, a in ins if i == "ENTRYPOINT"]
    if len(entry) != 1 or not entry[0].startswith("["):
        out.append("ENTRYPOINT must be one exec-form instruction (a shell form would swallow SIGTERM)")
    if not any(i == "LABEL" and "org.opencontainers.image.title" in a for i, a in ins):
        out.append("no org.opencontainers.image.* labels")
    return out


def test_dockerfile():
    assert problems(DOCKERFILE.read_text()) == []


def test_install_script_copied_is_the_tested_one():
    text = DOCKERFILE.read_text()
    assert (ROOT / "scripts" / "install-system.sh").exists()
    assert "COPY scripts/install-system.sh " in text
    assert re.search(r"RUN bash /tmp/install-system.sh(\s|$)", text)


@pytest.mark.parametrize("bad,expected", [
    ("RUN apt-get update && apt-get install -y --no-install-recommends curl", "apt install"),
    ("RUN apt install tini", "apt install"),
    ("RUN dpkg -i /tmp/bcc.deb", "dpkg -i"),
    ("RUN curl -sSL https://example.invalid/x | sh", "download"),
    ("RUN pip install bcc", "pip install"),
    ("ADD https://example.invalid/tini /tini", "ADD"),
])
def test_checker_rejects_other_routes(bad, expected):
    text = DOCKERFILE.read_text() + "\n" + bad + "\n"
    assert any(expected in p for p in problems(text)), problems(text)


def test_checker_rejects_missing_script_and_shell_entrypoint():
    text = DOCKERFILE.read_text()
    no_script = re.sub(r"RUN bash /tmp/install-system.sh", "RUN true", text)
    assert "no RUN calls install-system.sh" in problems(no_script)
    dev = text.replace("RUN bash /tmp/install-system.sh", "RUN bash /tmp/install-system.sh --dev")
    assert any("--dev" in p for p in problems(dev))
    shell_entry = re.sub(r"ENTRYPOINT \[.*\]", "ENTRYPOINT otel-agent run", text)
    assert any("exec-form" in p for p in problems(shell_entry))


def test_dockerignore_admits_every_copy_source():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [l[1:].rstrip("/") for l in ignore if l.startswith("!")]
    assert "*" in ignore, ".dockerignore should exclude everything by default"
    for i, a in instructions(DOCKERFILE.read_text()):
        if i == "COPY":
            for src in a.split()[:-1]:
                assert any(src.rstrip("/") == p or src.startswith(p + "/") for p in allowed), src
                assert (ROOT / src).exists() or src == "README.md", src


def test_entrypoint_execs_its_command():
    # On this machine /lib/modules/$(uname -r)/build already exists (install-system.sh made it),
    # so the entrypoint only has to hand over to the command, as PID-replacing exec.
    r = subprocess.run(["sh", str(ENTRYPOINT), "sh", "-c", 'echo "$$ $PPID"'],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr


def test_entrypoint_propagates_exit_status():
    r = subprocess.run(["sh", str(ENTRYPOINT), "sh", "-c", "exit 7"], capture_output=True, timeout=30)
    assert r.returncode == 7


def test_entrypoint_links_headers_for_the_running_kernel():
    # As in the pod: /lib/modules is an empty writable mount (an emptyDir there). A private
    # mount namespace with a tmpfs over /lib/modules gives the same on this machine.
    import os
    import shutil
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private mount namespace")
    script = (
        'mount -t tmpfs none /lib/modules && '
        f'sh {ENTRYPOINT} sh -c \'readlink /lib/modules/$(uname -r)/build; '
        'test -e /lib/modules/$(uname -r)/build/include\''
    )
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"/usr/src/linux-headers-\S+-amd64\n", r.stdout), r.stdout


def test_image_ships_the_bpf_sources_where_the_agent_looks():
    from otel_agent.ebpf.config import IMAGE_SOURCE_DIR

    text = (ROOT / "Dockerfile").read_text()
    assert f"COPY bpf {IMAGE_SOURCE_DIR}" in text
    assert "!bpf/" in (ROOT / ".dockerignore").read_text()
