#!/usr/bin/env bash
# Validate deploy/daemonset against a real Kubernetes API server (e.g. kubelite).
#
#   KUBECONFIG=/path/to/kubeconfig deploy/daemonset/validate.sh
#
# What it does:
#   1. installs the Gateway API standard CRDs that are missing (server-side apply),
#      and Sluice's SluicePolicy CRD (server-side apply of crds/);
#   2. makes sure the namespaces sluice-system and team-a exist;
#   3. `kubectl apply --dry-run=server --validate=strict -k` on the cluster-wide install
#      (deploy/daemonset) and the namespace-scoped overlay (overlays/namespaced);
#   4. checks examples/sluicepolicy.yaml is accepted and a set of invalid SluicePolicies
#      is rejected, each for the expected reason.
# Nothing but CRDs and namespaces is created for real, and on exit it deletes exactly the
# CRDs and namespaces that it created (anything that existed before is left alone; a
# SluicePolicy CRD that already existed is updated to crds/ and kept).
# Exits non-zero on any failure, and on any warning other than the two known-harmless ones
# (kubectl/server version skew; the last-applied annotation on objects first applied
# server-side).
#
# Environment:
#   KUBECONFIG        required
#   KUBECTL           kubectl binary (default: kubectl)
#   GATEWAY_API_CRDS  directory with the Gateway API standard-channel CRDs
#                     (default: ../shared/gateway-api/crd/standard next to the repo)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KUBECTL="${KUBECTL:-kubectl}"
GATEWAY_API_CRDS="${GATEWAY_API_CRDS:-$REPO/../shared/gateway-api/crd/standard}"
FIELD_MANAGER=sluice-validate
INSTALL_NS=sluice-system
WATCH_NS=team-a   # must match overlays/namespaced

die() { echo "validate.sh: FAIL: $*" >&2; exit 1; }
info() { echo "validate.sh: $*" >&2; }

[ -n "${KUBECONFIG:-}" ] || die "KUBECONFIG is not set"
command -v "$KUBECTL" >/dev/null || die "kubectl not found ($KUBECTL)"
[ -d "$GATEWAY_API_CRDS" ] || die "Gateway API CRDs not found at $GATEWAY_API_CRDS (set GATEWAY_API_CRDS)"

WORK="$(mktemp -d)"
CREATED_NS=()
CREATED_CRD_FILES=()
cleanup() {
  local rc=$?
  set +e
  for ns in "${CREATED_NS[@]}"; do
    "$KUBECTL" delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1 \
      && info "cleanup: deleted namespace $ns"
  done
  for f in "${CREATED_CRD_FILES[@]}"; do
    "$KUBECTL" delete -f "$f" --wait=false --ignore-not-found >/dev/null 2>&1 \
      && info "cleanup: deleted $(basename "$f")"
  done
  rm -rf "$WORK"
  if [ "$rc" -eq 0 ]; then info "OK: all checks passed"; fi
  exit "$rc"
}
trap cleanup EXIT

# kc LABEL ARGS...: run kubectl, show its output, fail on error or on an unexpected warning.
kc() {
  local label="$1"; shift
  local out="$WORK/out" rc=0
  "$KUBECTL" "$@" >"$out" 2>&1 || rc=$?
  grep -v 'version difference between client' "$out" | sed "s/^/  [$label] /" >&2 || true
  [ "$rc" -eq 0 ] || die "$label: kubectl $* exited $rc"
  check_warnings "$label" "$out"
}

check_warnings() {
  local label="$1" out="$2"
  if grep -Eqi 'unknown field|duplicate field|strict decoding' "$out"; then
    die "$label: field validation problems (see above)"
  fi
  local bad
  bad="$(grep -i 'warning' "$out" \
    | grep -v 'version difference between client' \
    | grep -v 'missing the kubectl.kubernetes.io/last-applied-configuration annotation' || true)"
  [ -z "$bad" ] || die "$label: unexpected warning(s): $bad"
}

"$KUBECTL" version >/dev/null 2>&1 || die "cannot reach the API server in $KUBECONFIG"

# --- 1. CRDs ---------------------------------------------------------------------------------
info "Gateway API CRDs from $GATEWAY_API_CRDS"
shopt -s nullglob
gw_files=("$GATEWAY_API_CRDS"/*.yaml)
[ "${#gw_files[@]}" -gt 0 ] || die "no YAML files in $GATEWAY_API_CRDS"
for f in "${gw_files[@]}"; do
  if "$KUBECTL" get -f "$f" -o name >/dev/null 2>&1; then
    info "  present, left as is: $(basename "$f")"
  else
    CREATED_CRD_FILES+=("$f")
    kc "gateway-api" apply --server-side --field-manager="$FIELD_MANAGER" -f "$f"
  fi
done

sluice_crd="$HERE/crds/sluice.dev_sluicepolicies.yaml"
if ! "$KUBECTL" get -f "$sluice_crd" -o name >/dev/null 2>&1; then
  CREATED_CRD_FILES=("$sluice_crd" "${CREATED_CRD_FILES[@]}")
fi
kc "sluice-crd" apply --server-side --force-conflicts --field-manager="$FIELD_MANAGER" -f "$HERE/crds/"

for crd in gatewayclasses.gateway.networking.k8s.io gateways.gateway.networking.k8s.io \
           httproutes.gateway.networking.k8s.io referencegrants.gateway.networking.k8s.io \
           sluicepolicies.sluice.dev; do
  "$KUBECTL" wait --for=condition=Established --timeout=60s "crd/$crd" >/dev/null 2>&1 \
    || die "CRD $crd is not Established"
done

# --- 2. namespaces -----------------------------------------------------------------------------
for ns in "$INSTALL_NS" "$WATCH_NS"; do
  if ! "$KUBECTL" get namespace "$ns" >/dev/null 2>&1; then
    CREATED_NS+=("$ns")
    kc "namespace" create namespace "$ns" --save-config
  fi
done

# --- 3. kustomizations -------------------------------------------------------------------------
kc "cluster-wide" apply --dry-run=server --validate=strict -k "$HERE"
kc "namespaced" apply --dry-run=server --validate=strict -k "$HERE/overlays/namespaced"

# The overlay must really be namespace-scoped.
"$KUBECTL" apply --dry-run=client -o name -k "$HERE/overlays/namespaced" >"$WORK/ns-names" 2>/dev/null \
  || die "overlay: cannot list its objects"
"$KUBECTL" kustomize "$HERE/overlays/namespaced" >"$WORK/ns.yaml"
grep -q -- '--watch-namespace=team-a' "$WORK/ns.yaml" || die "overlay: DaemonSet lacks --watch-namespace"
if grep -Eqx 'clusterrole(binding)?\.rbac\.authorization\.k8s\.io/sluice' "$WORK/ns-names"; then
  die "overlay: still contains the cluster-wide ClusterRole/ClusterRoleBinding 'sluice'"
fi
grep -qx 'role.rbac.authorization.k8s.io/sluice' "$WORK/ns-names" || die "overlay: no Role 'sluice'"

# --- 4. SluicePolicy examples ------------------------------------------------------------------
kc "example" apply --dry-run=server --validate=strict -f "$HERE/examples/sluicepolicy.yaml"

minimal() {  # a SluicePolicy whose spec is read from stdin
  cat <<EOF
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata:
  name: validate-case
  namespace: $WATCH_NS
spec:
EOF
  sed 's/^/  /'
}

# A minimal policy must pass (so the rejections below are about the broken part only).
minimal >"$WORK/ok.yaml" <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}]
limits: {maxRequestBodyBytes: 1024}
EOF
kc "minimal" apply --dry-run=server --validate=strict -f "$WORK/ok.yaml"

# reject NAME EXPECTED-MESSAGE-REGEX <<spec
reject() {
  local name="$1" expect="$2" rc=0
  minimal >"$WORK/bad.yaml"
  "$KUBECTL" apply --dry-run=server --validate=strict -f "$WORK/bad.yaml" >"$WORK/out" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    cat "$WORK/out" >&2
    die "invalid SluicePolicy '$name' was accepted"
  fi
  if ! grep -Eq -- "$expect" "$WORK/out"; then
    cat "$WORK/out" >&2
    die "invalid SluicePolicy '$name' was rejected, but not with /$expect/"
  fi
  info "  rejected as expected: $name"
}

# The CRD is generated from the agent's types (cargo xtask gen-crd) and checks structure and a
# few cross-field rules. Values (CIDRs, durations, header names, at least one section, ...) are
# the agent's to check: it keeps an invalid policy's targets failing closed (HTTP 500) and
# names the field in the policy's status.
info "invalid SluicePolicies"
reject "no targetRefs" 'spec.targetRefs: Required value' <<'EOF'
limits: {maxRequestBodyBytes: 1024}
EOF
reject "empty targetRefs" 'spec.targetRefs.*should have at least 1 items' <<'EOF'
targetRefs: []
limits: {maxRequestBodyBytes: 1024}
EOF
reject "duplicate targetRefs" 'targetRefs must be distinct' <<'EOF'
targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw}
  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw}
limits: {maxRequestBodyBytes: 1024}
EOF
reject "target without a name" 'spec.targetRefs\[0\].name.*should be at least 1 chars long' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: ""}]
limits: {maxRequestBodyBytes: 1024}
EOF
reject "jwks inline and remote" 'exactly one of inline, secretRef, configMapRef, remote' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
jwt:
  providers:
    - name: idp
      issuer: https://idp.example.com
      jwks: {inline: '{"keys":[]}', remote: {uri: https://idp.example.com/jwks}}
EOF
reject "token from a header and a cookie" 'exactly one of header, cookie, queryParam' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
apiKeys:
  secretRefs: [{name: keys}]
  source: {header: {name: x-api-key}, cookie: key}
EOF
reject "apiKeys without Secrets" 'spec.apiKeys.secretRefs: Required value' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
apiKeys: {clientIdHeader: x-client}
EOF
reject "negative maxRequestBodyBytes" 'spec.limits.maxRequestBodyBytes.*greater than or equal to 0' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
limits: {maxRequestBodyBytes: -1}
EOF
reject "cache maxBytes of zero" 'spec.cache.maxBytes.*greater than or equal to 1' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
cache: {maxBytes: 0}
EOF
reject "extAuth port out of range" 'spec.extAuth.backendRef.port.*less than or equal to 65535' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
extAuth: {protocol: HTTP, backendRef: {name: authz, port: 70000}}
EOF
reject "rateLimit rule without a unit" 'spec.rateLimit.local\[0\].unit: Required value' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
rateLimit: {local: [{name: r, requests: 10}]}
EOF
reject "ConsistentHash without its key" 'consistentHash is set exactly when type is ConsistentHash' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}]
loadBalancer: {type: ConsistentHash}
EOF
reject "maxEjectionPercent over 100" 'spec.outlierDetection.maxEjectionPercent.*less than or equal to 100' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}]
outlierDetection: {maxEjectionPercent: 150}
EOF
reject "healthCheck without a path" 'spec.healthCheck.path: Required value' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}]
healthCheck: {interval: 5s}
EOF
reject "unknown override section" 'unknown field "spec.override.noSuchSection"' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
override: {noSuchSection: {requests: 1}}
EOF
reject "unknown field" 'unknown field "spec.ipAlow"' <<'EOF'
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
ipAlow: [10.0.0.0/8]
EOF
