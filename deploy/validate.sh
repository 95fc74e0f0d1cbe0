#!/usr/bin/env bash
# Validates the deployment manifests offline, without a Docker engine or a cluster:
#
#   bash deploy/validate.sh
#
# 1. docker-compose.yml: dclint (the compose specification's JSON schema plus correctness rules)
#    on the file as written; then the same schema on the model compose would run (YAML anchors
#    merged, ${VARIABLES} substituted), with deploy/validate/check.py's checks of profiles,
#    dependencies, health checks, secrets, the TRIBUTARY__* variables and configuration files
#    each binary accepts, and the credentials registry clients log in with.
# 2. deploy/k8s: kustomize renders the base and both overlays; kubernetes-validate checks every
#    object against the Kubernetes OpenAPI schemas (strict: unknown fields are errors) of the
#    oldest and the newest Kubernetes version we support; check.py checks probes, resources,
#    security contexts, references, secrets by reference (each pod mounting only the keys it
#    reads), configuration files, registry credentials, autoscaling and the catalog ConfigMaps.
#
# Installs what it needs once, idempotently, under $TRIBUTARY_CACHE/deploy-tools (default
# ~/.cache/tributary): a Python venv with kubernetes-validate (which bundles the schemas) and
# dclint from npm. Kustomize is `kustomize` if installed, else the one built into kubectl.
# Exits non-zero on the first broken manifest, naming the file and the field.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
DCLINT_VERSION=3.1.0
# Oldest and newest Kubernetes versions the manifests must be valid for.
K8S_VERSIONS="${K8S_VERSIONS:-1.29.0 1.37.0}"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
TOOLS="$CACHE/deploy-tools"
VENV="$TOOLS/venv"
NPM="$TOOLS/npm"

step() { printf '\n--> %s\n' "$*"; }

step "validation tools"
if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
  echo "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if [ "$("$NPM/node_modules/.bin/dclint" --version 2>/dev/null)" != "$DCLINT_VERSION" ]; then
  echo "installing dclint $DCLINT_VERSION into $NPM"
  mkdir -p "$NPM"
  npm install --prefix "$NPM" --no-audit --no-fund --silent "dclint@$DCLINT_VERSION"
fi
if command -v kustomize >/dev/null; then
  KUSTOMIZE=(kustomize build)
elif command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  KUSTOMIZE=(kubectl kustomize)
else
  echo "error: neither kustomize nor kubectl (whose kustomize renders the overlays) is installed" >&2
  exit 1
fi
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version), dclint $("$NPM/node_modules/.bin/dclint" --version), ${KUSTOMIZE[*]} ($(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p' || true))"

step "docker-compose.yml: dclint (compose specification schema and rules)"
compose_status=0
if "$NPM/node_modules/.bin/dclint" --config deploy/validate/dclintrc.json --max-warnings 0 docker-compose.yml; then
  echo "docker-compose.yml passed dclint"
else
  compose_status=1
fi

# Runs even after a dclint error: it names the field at fault, which dclint's schema error does not.
step "docker-compose.yml: the resolved model and how the services fit together"
"$VENV/bin/python" deploy/validate/check.py compose docker-compose.yml \
  "$NPM/node_modules/dclint/schemas/compose.schema.json" || compose_status=1
[ "$compose_status" -eq 0 ] || { echo "error: docker-compose.yml is invalid (see above)" >&2; exit 1; }

step "deploy/k8s: kustomize build (base, overlays/dev, overlays/prod)"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
renders=()
for target in base overlays/dev overlays/prod; do
  name="${target#overlays/}"
  "${KUSTOMIZE[@]}" "deploy/k8s/$target" > "$OUT/$name.yaml"
  echo "deploy/k8s/$target: $(grep -c '^kind:' "$OUT/$name.yaml") objects ($(grep '^kind:' "$OUT/$name.yaml" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}'))"
  renders+=("$name" "$OUT/$name.yaml")
done

for version in $K8S_VERSIONS; do
  step "deploy/k8s: Kubernetes $version OpenAPI schemas, strict (kubernetes-validate)"
  for name in base dev prod; do
    "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$OUT/$name.yaml"
    echo "$name: $(grep -c '^kind:' "$OUT/$name.yaml") objects valid for Kubernetes $version"
  done
done

step "deploy/k8s: probes, resources, security, references, secrets, credentials, scaling, catalog"
# Every check passed is listed with VERBOSE=1; failures and notes always.
status=0
"$VENV/bin/python" deploy/validate/check.py k8s "${renders[@]}" > "$OUT/k8s-checks.txt" || status=$?
if [ -n "${VERBOSE:-}" ]; then cat "$OUT/k8s-checks.txt"; else grep -v '^  ok ' "$OUT/k8s-checks.txt" || true; fi
echo "$(grep -c '^  ok ' "$OUT/k8s-checks.txt") checks passed"
[ "$status" -eq 0 ] || exit "$status"

step "deploy manifests valid"
