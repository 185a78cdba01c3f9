# otel-agent image: the node agent (`otel-agent run`) and the cost processor (`otel-agent cost serve`).
#
# System packages come from scripts/install-system.sh and nowhere else: the same script that
# `make test` runs, so the image ships what the tests proved (BCC from Debian, generic kernel
# headers). tests/unit/deploy/test_dockerfile.py fails if this file installs packages another way.
FROM debian:12-slim

LABEL org.opencontainers.image.title="otel-agent" \
      org.opencontainers.image.description="Kernel-exact Kubernetes resource accounting: cgroup v2 + eBPF -> OTLP, and a chargeback ledger" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:12-slim"

COPY scripts/install-system.sh /tmp/install-system.sh

# 1. The tested install script (runtime set, no --dev).
# 2. linux-headers-amd64 depends on linux-compiler-gcc-12-x86 -> gcc-12 -> binutils, but BCC
#    compiles with its own LLVM/clang libraries and only reads the header files: the C
#    toolchain is dead weight and attack surface. It is purged with --force-depends (the
#    header packages stay, their unmet dependency on the compiler is deliberate), and the
#    build fails if a compiler, assembler or linker is left.
# 3. apt lists and caches go: the image never installs at run time.
RUN bash /tmp/install-system.sh \
 && toolchain=$(dpkg-query -W -f '${Package}\n' \
      | grep -E '^(linux-compiler-gcc-[0-9]+-x86|gcc|gcc-[0-9]+|cpp|cpp-[0-9]+|libgcc-[0-9]+-dev|binutils|binutils-.*|libbinutils|libctf0|libctf-nobfd0|libgprofng0|make)$' || true) \
 && if [ -n "$toolchain" ]; then dpkg --purge --force-depends $toolchain; fi \
 && for t in cc gcc gcc-12 cpp as ld make; do ! command -v "$t" >/dev/null || { echo "toolchain left: $t" >&2; exit 1; }; done \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/install-system.sh

# The package into a venv that sees Debian's python3-bpfcc (the PyPI "bcc" is unrelated).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY otel_agent ./otel_agent
RUN python3 -m venv --system-site-packages /opt/otel-agent \
 && /opt/otel-agent/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && rm -rf /src
WORKDIR /

# The BPF C sources BCC compiles at start (otel_agent/ebpf/config.py IMAGE_SOURCE_DIR).
COPY bpf /usr/share/otel-agent/bpf
COPY deploy/image/entrypoint.sh /usr/local/bin/otel-agent-entrypoint
ENV PATH=/opt/otel-agent/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The agent health endpoint (/healthz, /readyz).
EXPOSE 8089
# SIGTERM reaches the agent directly (the entrypoint execs it as PID 1): it flushes one last
# cumulative export and exits within the pod's grace period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/otel-agent-entrypoint"]
CMD ["otel-agent", "run"]
