#!/bin/bash
# mmdebstrap customize hook (run by deploy/openzfs-guest.sh build):
#   customize.sh ROOT HOOKDIR
# Installs OpenZFS into the guest root ROOT and builds its module with DKMS
# for the *guest* kernel (the one under ROOT/lib/modules, never the host's
# `uname -r`), then configures the root to boot straight into the
# nasfleet-guest-init script from HOOKDIR.
#
# While this runs, mmdebstrap has /proc, /sys and /dev mounted inside ROOT:
# nothing here removes anything outside ROOT's own regular directories.
set -euo pipefail
R=$1
HOOKDIR=$2

in_root() { chroot "$R" env DEBIAN_FRONTEND=noninteractive "$@"; }

kernels=("$R"/lib/modules/*)
[[ ${#kernels[@]} -eq 1 && -d ${kernels[0]} ]] ||
    { echo "customize: expected exactly one guest kernel, found: ${kernels[*]}" >&2; exit 1; }
KV=$(basename "${kernels[0]}")
echo "customize: guest kernel $KV"
in_root test -d "/lib/modules/$KV/build" ||
    { echo "customize: no headers for the guest kernel $KV (linux-headers-amd64)" >&2; exit 1; }

# zfs-dkms's postinst builds the module for every kernel that has headers,
# here only the guest's. Installed in a hook, not with --include: the build
# needs the headers configured first, which one apt transaction does not
# promise. The apt preferences (kernel and OpenZFS from backports for 2.3)
# were put in place by the setup hook.
t0=$SECONDS
in_root apt-get install -y --no-install-recommends zfs-dkms zfsutils-linux
if ! ls "$R/lib/modules/$KV/updates/dkms/"zfs.ko* > /dev/null 2>&1; then
    echo "customize: zfs.ko not built by the postinst; running dkms for $KV"
    in_root dkms autoinstall -k "$KV"
fi
ls "$R/lib/modules/$KV/updates/dkms/"zfs.ko* > /dev/null ||
    { echo "customize: DKMS did not build zfs.ko for $KV" >&2; exit 1; }
in_root depmod -a "$KV"
echo "customize: zfs-dkms install and module build took $((SECONDS - t0)) s"
in_root dkms status

install -m 0755 "$HOOKDIR/init" "$R/usr/local/sbin/nasfleet-guest-init"
echo nasfleet-guest > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nasfleet-guest\n::1 localhost\n' > "$R/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$R/etc/fstab"
# A throwaway machine with no network: root needs no password on the serial
# console (only useful when debugging with a shell).
in_root passwd -d root

# A small initrd (about 6 MB instead of 33 MB) boots seconds faster under
# TCG: only the drivers this machine has (virtio disk, 9p share). virtio_pci
# is built into the backports kernel (2.3) but a module in bookworm's 6.1
# (2.1), which without it finds no /dev/vda.
sed -i 's/^MODULES=.*/MODULES=list/' "$R/etc/initramfs-tools/initramfs.conf"
printf 'virtio_pci\nvirtio_blk\next4\n9pnet_virtio\n9p\n' >> "$R/etc/initramfs-tools/modules"
in_root update-initramfs -u -k "$KV"

# The image gets its packages from the host's build only; the guest never
# uses apt (it has no network).
rm -f "$R"/var/cache/apt/archives/*.deb
rm -rf "$R"/var/lib/apt/lists/*
