#!/usr/bin/env bash
# Builds Moat's appliance images from this repository and Debian's packages alone:
#
#   out/moat-appliance.raw   GPT disk image booting under BIOS and UEFI: the appliance's own form,
#                            written to a disk (dd) or attached to a VM; it keeps its data
#   out/moat-appliance.iso   hybrid ISO (BIOS and UEFI, CD and USB) running the same system live,
#                            for trying it (nothing it does is kept) or installing it onto a disk
#                            (moat-install)
#
# Stages, each timed:
#   base   mmdebstrap of packages.txt from the host's apt sources (security updates included),
#          kept as .cache/base-KEY.tar and rebuilt only when the package list or the sources
#          change; downloaded .debs are kept in .cache/debs and reused
#   moat   cargo build --release --bin moat, unless MOAT_BINARY names a binary
#   disk   the base, Moat's release binary and rootfs/ laid into ext4 and FAT file systems
#          written straight into the partitions of the raw image (no loop device, no mount), and
#          GRUB for both firmwares
#   iso    the same tree as a squashfs for live-boot, wrapped by grub-mkrescue
#
# Usage: appliance-image/build.sh [--no-iso]
# Environment: MOAT_IMAGE_OUT (default appliance-image/out), MOAT_IMAGE_CACHE (default
# appliance-image/.cache), MOAT_APT_SOURCES (apt source files to use instead of the host's),
# MOAT_BINARY (a moat binary to use instead of `cargo build --release --bin moat`).
# Needs root (files of many owners, mmdebstrap's root mode) and the tools listed in need_tools.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${MOAT_IMAGE_OUT:-$here/out}
cache=${MOAT_IMAGE_CACHE:-$here/.cache}
build_iso=yes

# The disk layout, in 512-octet sectors: a BIOS boot partition for GRUB's core image, the EFI
# system partition, then the root file system last so that first boot can grow it to the disk.
readonly SECTOR=512
readonly BIOS_START=2048 BIOS_SECTORS=2048
readonly ESP_START=4096 ESP_SECTORS=131072
readonly ROOT_START=135168
# Free space left in the root file system of the image, in MiB; first boot grows it to the disk.
readonly ROOT_FREE_MIB=384
# Memory (tmpfs) the build's trees may take: the root tree and the ISO's squashfs, with room.
readonly WORK_IN_MEMORY_MIB=4096

readonly TYPE_BIOS_BOOT=21686148-6449-6E6F-744E-656564454649
readonly TYPE_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
readonly TYPE_ROOT_X86_64=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709

# The live system's kernel command line: the serial console last, so systemd's status lines go
# to it. The disk image's is written by rootfs/usr/lib/moat/boot-files.
readonly CONSOLE_ARGS="console=tty0 console=ttyS0,115200n8"

die() {
    echo "build: error: $*" >&2
    exit 1
}

# Prints a stage's name, runs it, and records how long it took.
declare -A took=()
stage() {
    local name=$1
    shift
    local start=$SECONDS
    echo "== build: $name"
    "$@"
    took[$name]=$((SECONDS - start))
    echo "== build: $name took ${took[$name]} s"
}

need_tools() {
    local -A package_of=(
        [mmdebstrap]=mmdebstrap [sfdisk]=fdisk [mkfs.ext4]=e2fsprogs [mkfs.vfat]=dosfstools
        [mmd]=mtools [mcopy]=mtools [grub-mkimage]=grub-common [grub-mkrescue]=grub-common
        [xorriso]=xorriso [mksquashfs]=squashfs-tools [objcopy]=binutils [systemctl]=systemd
        [systemd-sysusers]=systemd [sha256sum]=coreutils
    )
    local missing=()
    for tool in "${!package_of[@]}"; do
        command -v "$tool" >/dev/null || missing+=("$tool (Debian package ${package_of[$tool]})")
    done
    [ -f /usr/lib/grub/i386-pc/boot.img ] || missing+=("GRUB's BIOS modules (grub-pc-bin)")
    [ -d /usr/lib/grub/x86_64-efi ] || missing+=("GRUB's UEFI modules (grub-efi-amd64-bin)")
    [ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]}; scripts/setup installs them"
    [ "$(id -u)" -eq 0 ] || die "run as root: the image holds files of many owners"
}

# The host's enabled apt sources, so the image gets the same mirrors and security updates.
apt_sources() {
    if [ -n "${MOAT_APT_SOURCES:-}" ]; then
        # Word splitting is the point: a list of files.
        # shellcheck disable=SC2086
        printf '%s\n' $MOAT_APT_SOURCES
        return
    fi
    if [ -f /etc/apt/sources.list ] && grep -q '^[[:space:]]*deb' /etc/apt/sources.list; then
        echo /etc/apt/sources.list
    fi
    find /etc/apt/sources.list.d -maxdepth 1 \( -name '*.list' -o -name '*.sources' \) | sort
}

suite() {
    # The image's release is the build host's: the Moat binary built here links its glibc.
    # shellcheck disable=SC1091
    (. /etc/os-release && echo "${VERSION_CODENAME:?/etc/os-release has no VERSION_CODENAME}")
}

packages() {
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/packages.txt" | grep -v '^$'
}

build_base() {
    local sources=() key
    mapfile -t sources < <(apt_sources)
    [ ${#sources[@]} -gt 0 ] || die "no apt sources found in /etc/apt (set MOAT_APT_SOURCES)"
    # The cache key: everything the base is made from. Bump BASE_RECIPE when the hooks change.
    local BASE_RECIPE=1
    key=$( {
        echo "$BASE_RECIPE $(suite)"
        packages
        cat "${sources[@]}"
    } | sha256sum | cut -c1-16)
    base_tar=$cache/base-$key.tar
    if [ -f "$base_tar" ]; then
        echo "build: reusing the base $base_tar"
        return
    fi

    echo "build: making the base for $(suite) from ${sources[*]}"
    mkdir -p "$cache/debs"
    local include
    include=$(packages | paste -sd, -)
    # Hooks: Roundcube's database is SQLite, set up by dbconfig during the installation; the
    # .debs are synchronised with the cache. mmdebstrap stops with an error on any package that
    # cannot be found or installed. "$1" in the hooks is mmdebstrap's, not this shell's.
    # shellcheck disable=SC2016
    mmdebstrap --variant=apt --skip=essential/unlink --include="$include" \
        --essential-hook='printf "%s\n" "roundcube-core roundcube/dbconfig-install boolean true" "roundcube-core roundcube/database-type select sqlite3" | chroot "$1" debconf-set-selections' \
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
        --setup-hook="sync-in $cache/debs /var/cache/apt/archives/" \
        --customize-hook="sync-out /var/cache/apt/archives $cache/debs" \
        --format=tar "$(suite)" "$base_tar.tmp" "${sources[@]}"

    # Every package of the list must be installed, and systemd-resolved must not be (it would
    # take port 53 from the DNSBL zones).
    local listed
    listed=$(tar -xOf "$base_tar.tmp" ./var/lib/dpkg/status | awk '
        /^Package: / { name = $2 } /^Status: install ok installed/ { print name }')
    for package in $(packages); do
        grep -qx "$package" <<<"$listed" || die "package $package is not installed in the base"
    done
    if grep -qx systemd-resolved <<<"$listed"; then
        die "systemd-resolved was pulled into the base; it would take port 53"
    fi
    rm -f "$cache"/base-*.tar
    mv "$base_tar.tmp" "$base_tar"
}

build_moat() {
    if [ -n "${MOAT_BINARY:-}" ]; then
        moat_binary=$MOAT_BINARY
    else
        (cd "$repo" && cargo build --release --bin moat)
        moat_binary=$repo/target/release/moat
    fi
    [ -x "$moat_binary" ] || die "no moat binary at $moat_binary"
}

# Lays out the root file system: the base, Moat and rootfs/, configured from outside with
# systemctl --root, so nothing runs inside the tree.
stage_root() {
    root=$work/root
    mkdir -p "$root"
    tar -C "$root" --xattrs --xattrs-include='*' --numeric-owner -xf "$base_tar"
    # rootfs/ is owned by root whoever checked it out; existing directories keep their owners.
    tar -C "$here/rootfs" --owner=0 --group=0 --numeric-owner -cf - . \
        | tar -C "$root" --no-overwrite-dir -xf -

    objcopy --strip-debug "$moat_binary" "$root/usr/bin/moat"
    install -D -m 0644 "$repo/moat.example.toml" "$root/usr/share/doc/moat/moat.example.toml"
    git -C "$repo" describe --always --dirty >"$root/usr/share/doc/moat/version" 2>/dev/null \
        || echo unknown >"$root/usr/share/doc/moat/version"

    # Users, as systemd-sysusers would make them at boot.
    systemd-sysusers --root="$root" >/dev/null
    install -m 0640 -o root -g "$(group_id dovecot)" /dev/null "$root/etc/dovecot/users"
    chgrp "$(group_id www-data)" "$root/etc/roundcube/config.inc.php"
    chmod 0640 "$root/etc/roundcube/config.inc.php"

    # Webmail is the only site; the TLS files and secrets are made at first boot, and nothing
    # made while building the base may stay shared between appliances.
    rm -f "$root/etc/nginx/sites-enabled/default"
    ln -s ../sites-available/moat-webmail "$root/etc/nginx/sites-enabled/moat-webmail"
    rm -f "$root/etc/ssl/private/ssl-cert-snakeoil.key" "$root/etc/ssl/certs/ssl-cert-snakeoil.pem"
    : >"$root/etc/resolv.conf"
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"

    quietly systemctl --root="$root" enable moat-firstboot.service moat-roles.service \
        moat-issue.service moat-gateway.service moat-dnsbl.service moat-greylist.service \
        clamav-freshclam.service
    # moat-firstboot does the first boot's work; systemd-firstboot would prompt on the console.
    quietly systemctl --root="$root" mask systemd-firstboot.service
}

# Runs a command, showing its output only if it fails.
quietly() {
    local output
    output=$("$@" 2>&1) || { echo "$output" >&2; die "failed: $*"; }
}

group_id() {
    awk -F: -v name="$1" '$1 == name { print $3 }' "$root/etc/group"
}

# Writes little-endian integer VALUE of BYTES octets at OFFSET into FILE.
write_le() {
    local file=$1 offset=$2 bytes=$3 value=$4 hex="" i
    for ((i = 0; i < bytes; i++)); do
        hex+=$(printf '\\x%02x' $(((value >> (8 * i)) & 255)))
    done
    printf '%b' "$hex" | dd of="$file" bs=1 seek="$offset" conv=notrunc status=none
}

# GRUB for BIOS, as grub-bios-setup does it for a GPT disk (grub-bios-setup itself insists on
# finding the device of its -d directory, which a disk image in a file does not have): core.img
# goes into the BIOS boot partition, its first sector's block list is pointed at the rest of it,
# and boot.img's code goes into the MBR around the partition table, pointed at core.img.
install_grub_bios() {
    local disk=$1 core=$work/core.img sectors
    sectors=$((($(stat -c %s "$core") + SECTOR - 1) / SECTOR))
    [ "$sectors" -le "$BIOS_SECTORS" ] || die "GRUB's core.img needs $sectors sectors"
    # diskboot's block list (include/grub/i386/pc/boot.h): the start of core.img's second
    # sector; grub-mkimage has filled in its length and load segment.
    write_le "$core" $((0x1f4)) 8 $((BIOS_START + 1))
    dd if="$core" of="$disk" bs="$SECTOR" seek="$BIOS_START" conv=notrunc status=none

    # boot.img around the protective MBR that sfdisk wrote: its jump (0-2) and its code
    # (0x5a-0x1b7), not the BPB between them nor the partition table after.
    dd if="$work/boot.img" of="$disk" bs=1 count=3 conv=notrunc status=none
    dd if="$work/boot.img" of="$disk" bs=1 skip=$((0x5a)) seek=$((0x5a)) \
        count=$((0x1b8 - 0x5a)) conv=notrunc status=none
    # The sector core.img starts at, and the drive check replaced by two NOPs as for any hard
    # disk (GRUB_BOOT_MACHINE_KERNEL_SECTOR and GRUB_BOOT_MACHINE_DRIVE_CHECK).
    write_le "$disk" $((0x5c)) 8 "$BIOS_START"
    write_le "$disk" $((0x66)) 2 $((0x9090))
}

build_disk() {
    root_uuid=$(cat /proc/sys/kernel/random/uuid)
    esp_uuid=$(printf '%04X-%04X' $((RANDOM % 65536)) $((RANDOM % 65536)))

    stage_root
    # fstab, grub.cfg and GRUB's core images, as moat-install writes them on the live system.
    "$here/rootfs/usr/lib/moat/boot-files" "$root" "$root_uuid" "$esp_uuid" "$work"

    # Size the root file system to its content plus free space, in whole MiB.
    local used_mib root_mib disk_mib
    used_mib=$(du -s --block-size=1M --apparent-size "$root" | cut -f1)
    root_mib=$((used_mib * 115 / 100 + ROOT_FREE_MIB))
    disk_mib=$((ROOT_START * SECTOR / 1048576 + root_mib + 1))
    local disk=$out/moat-appliance.raw.tmp
    truncate -s "${disk_mib}M" "$disk"

    sfdisk --quiet --no-reread --no-tell-kernel "$disk" <<EOF
label: gpt
unit: sectors
first-lba: 2048
start=$BIOS_START, size=$BIOS_SECTORS, type=$TYPE_BIOS_BOOT, name="bios-boot"
start=$ESP_START, size=$ESP_SECTORS, type=$TYPE_ESP, name="esp"
start=$ROOT_START, size=$((root_mib * 2048)), type=$TYPE_ROOT_X86_64, name="moat-root"
EOF

    # The ESP: GRUB at the removable-media path, which firmware boots without NVRAM entries.
    local esp=$work/esp.img
    mkfs.vfat -C -F 32 -s 1 -n MOAT-ESP -i "${esp_uuid//-/}" "$esp" \
        $((ESP_SECTORS * SECTOR / 1024)) >/dev/null
    mmd -i "$esp" ::/EFI ::/EFI/BOOT
    mcopy -i "$esp" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
    dd if="$esp" of="$disk" bs="$SECTOR" seek="$ESP_START" conv=notrunc,sparse status=none

    # The root file system, filled from the tree as it is written (mke2fs -d).
    mkfs.ext4 -q -F -L moat-root -U "$root_uuid" \
        -E "offset=$((ROOT_START * SECTOR)),root_owner=0:0" \
        -d "$root" "$disk" "${root_mib}M"

    install_grub_bios "$disk"

    mv "$disk" "$out/moat-appliance.raw"
}

# The live ISO: the same tree as a squashfs that live-boot mounts under an overlay in memory.
build_iso() {
    local iso_root=$work/iso
    mkdir -p "$iso_root/live" "$iso_root/boot/grub"
    # No disk of the appliance's is there to mount when running live.
    echo "# Live system: live-boot mounts the root file system." >"$root/etc/fstab"
    cp "$root/boot/vmlinuz-"* "$iso_root/live/vmlinuz"
    cp "$root/boot/initrd.img-"* "$iso_root/live/initrd.img"
    mksquashfs "$root" "$iso_root/live/filesystem.squashfs" -comp zstd -Xcompression-level 6 \
        -noappend -no-progress -e boot/grub -xattrs-exclude "^system\.posix_acl" \
        >"$work/mksquashfs.log"
    cat >"$iso_root/boot/grub/grub.cfg" <<EOF
# Moat appliance, live: written by appliance-image/build.sh.
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=5
menuentry 'Moat mail appliance (live: nothing is kept at shutdown)' {
    linux /live/vmlinuz boot=live $CONSOLE_ARGS
    initrd /live/initrd.img
}
EOF
    grub-mkrescue -o "$out/moat-appliance.iso" "$iso_root" -- -volid MOAT_LIVE \
        2>"$work/grub-mkrescue.log" \
        || { cat "$work/grub-mkrescue.log" >&2; die "grub-mkrescue failed"; }
}

report() {
    local summary=$out/build-summary.txt
    {
        for name in base moat disk iso; do
            [ -n "${took[$name]+set}" ] && echo "time_${name}_s=${took[$name]}"
        done
        for file in "$out"/moat-appliance.raw "$out"/moat-appliance.iso; do
            [ -f "$file" ] || continue
            local kind=${file##*.}
            echo "size_${kind}_bytes=$(stat -c %s "$file")"
            echo "allocated_${kind}_bytes=$(($(stat -c %b "$file") * $(stat -c %B "$file")))"
        done
        echo "base_tar_bytes=$(stat -c %s "$base_tar")"
    } >"$summary"
    echo "== build: images"
    for file in "$out"/moat-appliance.raw "$out"/moat-appliance.iso; do
        [ -f "$file" ] || continue
        printf '   %-40s %6s MiB (%s MiB allocated)\n' "$file" \
            $(($(stat -c %s "$file") / 1048576)) \
            $(($(stat -c %b "$file") * $(stat -c %B "$file") / 1048576))
    done
    echo "== build: times: $(grep -o '^time_[a-z]*_s=[0-9]*' "$summary" | paste -sd' ')"
}

main() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --no-iso) build_iso=no ;;
            -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
            *) die "unknown argument '$1' (see --help)" ;;
        esac
        shift
    done
    need_tools
    mkdir -p "$out" "$cache"
    rm -f "$out"/moat-appliance.raw "$out"/moat-appliance.iso "$out"/build-summary.txt
    # The trees are laid out in memory when there is room: on this kind of machine's disk, making
    # the base's 25,000 files takes about 10 s, in tmpfs 1 s (and mke2fs reads them 3 times
    # faster). MOAT_IMAGE_WORK chooses another folder.
    local work_parent=${MOAT_IMAGE_WORK:-}
    if [ -z "$work_parent" ]; then
        work_parent=$out
        local free_kib
        free_kib=$(df --output=avail -k /dev/shm 2>/dev/null | tail -1 || echo 0)
        [ "$free_kib" -gt $((WORK_IN_MEMORY_MIB * 1024)) ] && work_parent=/dev/shm
    fi
    work=$(mktemp -d "$work_parent/moat-image.XXXXXX")
    trap 'rm -rf "$work" "$out/moat-appliance.raw.tmp"' EXIT

    stage base build_base
    stage moat build_moat
    stage disk build_disk
    [ "$build_iso" = yes ] && stage iso build_iso
    report
}

main "$@"
