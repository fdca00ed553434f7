#!/usr/bin/env bash
# make bridge-image: build bridge/Dockerfile and push it to the stack's ECR repository (the
# BridgeRepositoryUri output of template.yaml), tagged with the commit; prints the image URI to
# deploy with (BridgeImageUri=<uri>:<tag>).
#
# Environment: STACK_NAME (default: samconfig.toml's stack_name), BRIDGE_REPOSITORY_URI (skip the
# stack lookup), TAG (default: the short commit, "-dirty" with local changes), PUSH_LATEST=1 to also
# move :latest, PY (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
    echo "bridge-image: $*" >&2
    exit 1
}

command -v docker >/dev/null 2>&1 ||
    die "docker is not installed (or not on PATH). Install Docker with BuildKit to build the bridge image."
docker info >/dev/null 2>&1 ||
    die "docker is installed but its daemon is not reachable. Start Docker (or check DOCKER_HOST and this user's access to the socket)."

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || die "$PY not found: run 'make install' first (or set PY)"

REPO_URI=${BRIDGE_REPOSITORY_URI:-$("$PY" -m bridge.ecr repository-uri)} || die "no repository to push to"
REGISTRY=${REPO_URI%%/*}
# <account>.dkr.ecr.<region>.amazonaws.com
REGION=$(cut -d. -f4 <<<"$REGISTRY")
[ -n "$REGION" ] || die "cannot tell the region from $REPO_URI"

if [ -z "${TAG:-}" ]; then
    TAG=$(git rev-parse --short=12 HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)
    git diff --quiet HEAD -- 2>/dev/null || TAG="$TAG-dirty"
fi
IMAGE="$REPO_URI:$TAG"

"$PY" -m bridge.ecr login-password --region "$REGION" |
    docker login --username AWS --password-stdin "$REGISTRY" >/dev/null ||
    die "docker login to $REGISTRY failed"

# Fargate runs the template's X86_64 platform.
DOCKER_BUILDKIT=1 docker build --platform linux/amd64 -f bridge/Dockerfile -t "$IMAGE" .
docker push "$IMAGE"
if [ "${PUSH_LATEST:-0}" = "1" ]; then
    docker tag "$IMAGE" "$REPO_URI:latest"
    docker push "$REPO_URI:latest"
fi

echo "bridge image: $IMAGE"
echo "deploy it:    set BridgeImageUri=$IMAGE in samconfig.toml's parameter_overrides, then make deploy"
