#!/usr/bin/env bash
# The base of the flowtel test image: Debian 12 (bookworm) made with
# debootstrap, since no image registry is reachable here, and imported into
# Docker as flowtel-debian-base:bookworm. Made once: while an image of that
# name exists this says "cached" and does nothing. Prints how long it took.
# Needs root, debootstrap, a Docker daemon that answers, and Debian's
# mirror. Elsewhere, build from an official base instead (otel-config/README.md).
set -euo pipefail

image=${1:-flowtel-debian-base:bookworm}
mirror=${FLOWTEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image: cached"
    exit 0
fi
# One build at a time (tests of two processes may ask together).
exec 9>/run/lock/flowtel-debian-base.lock
flock 9
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image: cached"
    exit 0
fi

SECONDS=0
root=$(mktemp -d /var/tmp/flowtel-debian-base.XXXXXX)
log="$root.log"
trap 'rm -rf "$root" "$log"' EXIT
# minbase: dpkg, apt and Essential: priority packages only; ca-certificates
# for TLS to an OTLP endpoint (the Dockerfile installs it on bases without).
if ! debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "$image: debootstrap failed (apt-get install debootstrap; $mirror reachable?)" >&2
    exit 1
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" --numeric-owner -c . | docker import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$image")
echo "$image: made with debootstrap and imported in ${SECONDS}s ($((size / 1048576)) MiB)"
