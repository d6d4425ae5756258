#!/bin/sh
# The Debian 12 image `cargo xtask vm-test --os` boots: run by xtask as
# `build-image.sh OUT_DIR`; the cache directory's name carries a hash of this file, so any
# change here builds a new image. Writes into OUT_DIR.tmp and renames it when complete.
#   rootfs.ext4   raw ext4 image of the root file system (sparse; booted via a sparse copy)
#   vmlinuz       the image's kernel      initrd.img   its initramfs (initramfs-tools)
#   id_ed25519    root's ssh key (and .pub), made here; the image trusts only this key
#   kernel-release, packages.txt   what went in
set -eu
out=$1
tmp=$out.tmp
mirror=${KEELSON_DEBIAN_MIRROR:-http://deb.debian.org/debian}
rm -rf "$tmp"
mkdir -p "$tmp"
root=$tmp/root

# systemd as init, Docker from apt (with AppArmor, as a standard Debian install has it: the
# kernel enables it and Docker then needs apparmor_parser), the kernel and its modules, sshd, the tools the
# scenario checks with (ip, bpftool, curl).
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,udev,kmod,dbus,apparmor,iproute2,openssh-server,docker.io,linux-image-amd64,bpftool,curl,ca-certificates,procps \
  bookworm "$root" "$mirror"

echo keelson-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 keelson-vm\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' >"$root/etc/fstab"
: >"$root/etc/resolv.conf"
# A fresh machine id on first boot (the image is copied per run).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# Networking from the kernel command line: `ip=ADDR::GW:MASK:HOST:eth0:off` is turned into a
# .network file by systemd-network-generator and applied by systemd-networkd, so one image
# serves any address.
systemctl --root="$root" enable systemd-networkd.service systemd-network-generator.service
systemctl --root="$root" set-default multi-user.target
# Nothing waits for a network that is configured statically anyway.
systemctl --root="$root" mask systemd-networkd-wait-online.service

# Root logs in with the key made here, nothing else.
mkdir -p "$root/root/.ssh"
chmod 700 "$root/root/.ssh"
ssh-keygen -q -t ed25519 -N '' -C keelson-vm-os -f "$tmp/id_ed25519"
cp "$tmp/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chmod 600 "$root/root/.ssh/authorized_keys"
printf 'PasswordAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n' \
  >"$root/etc/ssh/sshd_config.d/keelson.conf"

# The kernel and initramfs, booted directly by qemu.
release=$(ls "$root/lib/modules" | sort -V | tail -n 1)
echo "$release" >"$tmp/kernel-release"
cp "$root/boot/vmlinuz-$release" "$tmp/vmlinuz"
cp "$root/boot/initrd.img-$release" "$tmp/initrd.img"
chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' >"$tmp/packages.txt"

chroot "$root" apt-get clean
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin

mkfs.ext4 -q -L keelson-root -d "$root" "$tmp/rootfs.ext4" 6G
rm -rf "$root"
mv "$tmp" "$out"
