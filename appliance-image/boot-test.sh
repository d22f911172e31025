#!/usr/bin/env bash
# The appliance's boot test: builds the images (unless --no-build), then boots the disk image
# under BIOS and under UEFI in qemu with software emulation and checks mail, DNSBL, clamd and
# webmail from outside the VM (boot_test.py says what). The VM runs inside a network namespace
# of its own, with qemu's user networking forwarding ports from that namespace's loopback; no
# packet goes anywhere else. Ends with "N passed, N failed"; exits non-zero if any check failed.
#
# Usage: appliance-image/boot-test.sh [--no-build] [bios] [uefi] [iso-bios] [iso-uefi]
# Default: bios uefi (the disk image). iso-bios boots the live ISO as a CD under BIOS, iso-uefi
# as a USB stick under UEFI; asking for either builds the ISO too.
# Environment: as build.sh's (MOAT_BINARY, MOAT_IMAGE_CACHE, ...).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=yes
targets=()
for argument in "$@"; do
    case "$argument" in
        --no-build) build=no ;;
        bios | uefi | iso-bios | iso-uefi) targets+=("$argument") ;;
        *)
            echo "boot-test: unknown argument '$argument' (--no-build, bios, uefi, iso-bios, iso-uefi)" >&2
            exit 64
            ;;
    esac
done

for tool in ip qemu-system-x86_64 qemu-img swaks dig python3; do
    command -v "$tool" >/dev/null \
        || { echo "boot-test: $tool is missing; scripts/setup installs it" >&2; exit 1; }
done
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] \
    || { echo "boot-test: OVMF is missing (Debian package ovmf); scripts/setup installs it" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "boot-test: run as root (network namespaces)" >&2; exit 1; }

if [ "$build" = yes ]; then
    if [[ " ${targets[*]} " == *" iso-"* ]]; then
        "$here/build.sh"
    else
        "$here/build.sh" --no-iso
    fi
fi
image=${MOAT_IMAGE_OUT:-$here/out}/moat-appliance.raw
[ -f "$image" ] || { echo "boot-test: no image at $image; run build.sh" >&2; exit 1; }

# The namespace, and what to undo on any exit: every process left in it (the VM) is killed by
# its id, then the namespace is deleted.
namespace=moat-boot-$$
cleanup() {
    local pids
    pids=$(ip netns pids "$namespace" 2>/dev/null || true)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    ip netns delete "$namespace" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$namespace"
ip -n "$namespace" link set lo up

ip netns exec "$namespace" python3 "$here/boot_test.py" --image "$image" \
    --iso "${MOAT_IMAGE_OUT:-$here/out}/moat-appliance.iso" "${targets[@]}"
