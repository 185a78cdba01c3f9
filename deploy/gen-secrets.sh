#!/usr/bin/env bash
# Writes the files that deploy/'s secretGenerators read, so no key or token is ever committed:
#   base/secrets/gateway-token         bearer token every agent presents to the gateway
#   base/secrets/cost-token            write token: the gateway pushes into the ledger with it
#   base/secrets/cost-read-token       read-only token for users and dashboards (reports API)
#   base/secrets/ca.crt                CA that signed both serving certificates below
#   base/secrets/gateway-tls.{crt,key} serving certificate for otel-gateway.<namespace>.svc
#   base/secrets/cost-tls.{crt,key}    serving certificate for otel-agent-cost.<namespace>.svc
#   base/secrets/vendor-token          the vendor's API key (VENDOR_TOKEN; empty if none)
#   overlays/postgres/secrets/ledger-url   with --postgres-url URL
# Tokens are 32 random bytes in hex with no trailing newline (the Collector's bearertokenauth
# reads a token file line by line; a newline would add an empty token). Existing files are kept
# (re-running does not rotate); --force rewrites them. The CA's key is not kept: if any
# certificate is missing, the CA and both certificates are made anew.
#
#   deploy/gen-secrets.sh [--force] [--namespace NS] [--gateway-san NAME]... [--postgres-url URL]
#
# --gateway-san adds a DNS name to the gateway's certificate, for agents that reach it by
# another name (an ingress or a load balancer from outside the cluster).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ns=otel-agent
force=0
pg_url=""
gateway_sans=()
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "gen-secrets: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --namespace) need_value "$@"; ns=$2; shift ;;
    --gateway-san) need_value "$@"; gateway_sans+=("$2"); shift ;;
    --postgres-url) need_value "$@"; pg_url=$2; shift ;;
    *) echo "gen-secrets: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

out=$here/base/secrets
mkdir -p "$out"
umask 077

want() { [ $force -eq 1 ] || [ ! -s "$1" ]; }
token() { printf '%s' "$(openssl rand -hex 32)" > "$1"; }

for t in gateway-token cost-token cost-read-token; do
  if want "$out/$t"; then token "$out/$t"; fi
done

# serving_cert NAME FILE-PREFIX EXTRA-SANS...: a P-256 certificate for the Service NAME in $ns,
# signed by the CA in $tmp.
serving_cert() {
  local name=$1 prefix=$2; shift 2
  local sans="DNS:$name,DNS:$name.$ns,DNS:$name.$ns.svc,DNS:$name.$ns.svc.cluster.local"
  for s in "$@"; do sans="$sans,DNS:$s"; done
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$name.$ns.svc" -keyout "$out/$prefix.key" -out "$tmp/$prefix.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$sans" > "$tmp/$prefix.ext"
  openssl x509 -req -in "$tmp/$prefix.csr" -CA "$out/ca.crt" -CAkey "$tmp/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" \
    -days 825 -extfile "$tmp/$prefix.ext" -out "$out/$prefix.crt" 2>/dev/null
}

pki=(ca.crt cost-tls.crt cost-tls.key gateway-tls.crt gateway-tls.key)
regen=0
for f in "${pki[@]}"; do if want "$out/$f"; then regen=1; fi; done
if [ $regen -eq 1 ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=otel-agent CA" -keyout "$tmp/ca.key" -out "$out/ca.crt" 2>/dev/null
  # The gateway dials the short name otel-agent-cost; the agents dial
  # otel-gateway.<namespace>.svc; the other names cover other callers.
  serving_cert otel-agent-cost cost-tls
  serving_cert otel-gateway gateway-tls ${gateway_sans[@]+"${gateway_sans[@]}"}
fi

if want "$out/vendor-token"; then
  printf '%s' "${VENDOR_TOKEN:-}" > "$out/vendor-token"
fi

if [ -n "$pg_url" ]; then
  mkdir -p "$here/overlays/postgres/secrets"
  printf '%s' "$pg_url" > "$here/overlays/postgres/secrets/ledger-url"
fi

echo "gen-secrets: files in $out are ready; now: kubectl apply -k $here"
