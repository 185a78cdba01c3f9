#!/usr/bin/env bash
# Writes the files that deploy/'s secretGenerators read, so no key or token is ever committed:
#   base/secrets/cost-token            bearer token the gateway presents to the cost processor
#   base/secrets/ca.crt                CA that signed the cost processor's serving certificate
#   base/secrets/cost-tls.{crt,key}    serving certificate for otel-agent-cost.<namespace>.svc
#   base/secrets/vendor-token          the vendor's API key (VENDOR_TOKEN; empty if none)
#   overlays/postgres/secrets/ledger-url   with --postgres-url URL
# Existing files are kept (re-running does not rotate); --force rewrites them.
#
#   deploy/gen-secrets.sh [--force] [--namespace NS] [--postgres-url URL]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ns=otel-agent
force=0
pg_url=""
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --namespace) ns=$2; shift ;;
    --postgres-url) pg_url=$2; shift ;;
    *) echo "gen-secrets: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

out=$here/base/secrets
mkdir -p "$out"
umask 077

want() { [ $force -eq 1 ] || [ ! -s "$1" ]; }

if want "$out/cost-token"; then
  openssl rand -hex 32 > "$out/cost-token"
fi

if want "$out/cost-tls.crt" || want "$out/cost-tls.key" || want "$out/ca.crt"; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=otel-agent-cost CA" -keyout "$tmp/ca.key" -out "$out/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=otel-agent-cost.$ns.svc" -keyout "$out/cost-tls.key" -out "$tmp/cost.csr" 2>/dev/null
  # The gateway dials the short name otel-agent-cost; the others cover other namespaces' callers.
  cat > "$tmp/ext" <<EXT
subjectAltName=DNS:otel-agent-cost,DNS:otel-agent-cost.$ns,DNS:otel-agent-cost.$ns.svc,DNS:otel-agent-cost.$ns.svc.cluster.local
extendedKeyUsage=serverAuth
EXT
  openssl x509 -req -in "$tmp/cost.csr" -CA "$out/ca.crt" -CAkey "$tmp/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" \
    -days 825 -extfile "$tmp/ext" -out "$out/cost-tls.crt" 2>/dev/null
fi

if want "$out/vendor-token"; then
  printf '%s' "${VENDOR_TOKEN:-}" > "$out/vendor-token"
fi

if [ -n "$pg_url" ]; then
  mkdir -p "$here/overlays/postgres/secrets"
  printf '%s' "$pg_url" > "$here/overlays/postgres/secrets/ledger-url"
fi

echo "gen-secrets: files in $out are ready; now: kubectl apply -k $here"
