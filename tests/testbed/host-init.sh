#!/bin/bash
# Becomes one test-bed host. Started by testbed.ts as
#   ip netns exec outrun-NAME unshare --mount --uts --pid --fork --kill-child host-init.sh ...
# so it runs as pid 1 of a fresh pid namespace, in a private mount namespace and
# in the host's network namespace. It builds the host's root (an overlay of the
# cached root with a tmpfs upper, so every `up` starts pristine), then execs sshd,
# which stays pid 1 and reaps orphans. When pid 1 dies the kernel kills the rest
# and every mount made here disappears with the namespace.
#
# Modes:
#   pivot  the root has its own sshd (deb): pivot_root into it, exec its sshd.
#   chroot the root has no glibc (tiny): keep this machine's sshd and let it
#          ChrootDirectory each session into the root.
set -euo pipefail
umask 022 # whatever the caller had: sshd refuses a group- or world-writable /run/sshd
name=$1 mode=$2 lower=$3 hostdir=$4

mount --make-rprivate /
mnt=$hostdir/mnt
mount -t tmpfs -o mode=755 "testbed-$name" "$mnt"
mkdir -p "$mnt/upper" "$mnt/work" "$mnt/root"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$mnt/upper,workdir=$mnt/work" "$mnt/root"
r=$mnt/root

mkdir -p "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/run" "$r/root"
mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"
mount -t tmpfs -o mode=755,size=16m,nosuid testbed-dev "$r/dev"
mknod -m 666 "$r/dev/null" c 1 3
mknod -m 666 "$r/dev/zero" c 1 5
mknod -m 666 "$r/dev/full" c 1 7
mknod -m 666 "$r/dev/random" c 1 8
mknod -m 666 "$r/dev/urandom" c 1 9
mknod -m 666 "$r/dev/tty" c 5 0
mknod -m 666 "$r/dev/fuse" c 10 229
mkdir -m 755 "$r/dev/pts"
mkdir -m 1777 "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/tmp"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$r/run"
mkdir -p -m 700 "$r/root/.ssh"
cp "$hostdir/authorized_keys" "$r/root/.ssh/authorized_keys"
chmod 600 "$r/root/.ssh/authorized_keys"
hostname "$name"

case "$mode" in
pivot)
  # Logins other than root, for outrun's sudo -n path: alice may sudo without a
  # password, bob may not sudo at all.
  for u in alice bob; do
    chroot "$r" useradd -m -s /bin/sh "$u"
    # useradd leaves the account locked (!), which sshd without PAM refuses even for keys.
    chroot "$r" usermod -p '*' "$u"
    mkdir -p -m 700 "$r/home/$u/.ssh"
    cp "$hostdir/authorized_keys" "$r/home/$u/.ssh/authorized_keys"
    chroot "$r" chown -R "$u:$u" "/home/$u/.ssh"
  done
  mkdir -p "$r/etc/sudoers.d"
  echo 'alice ALL=(ALL) NOPASSWD: ALL' >"$r/etc/sudoers.d/alice"
  chmod 440 "$r/etc/sudoers.d/alice"
  mkdir -p "$r/etc/ssh/testbed" "$r/run/sshd"
  cp "$hostdir"/sshd_config "$hostdir"/ssh_host_ed25519_key "$r/etc/ssh/testbed/"
  chmod 600 "$r/etc/ssh/testbed/ssh_host_ed25519_key"
  cd "$r"
  mkdir -p .oldroot
  pivot_root . .oldroot
  cd /
  umount -l /.oldroot
  rmdir /.oldroot
  exec /usr/sbin/sshd -D -e -f /etc/ssh/testbed/sshd_config
  ;;
chroot)
  # sshd reads the account before it chroots: give root a shell that exists in the root.
  sed 's|^\(root:[^:]*:0:0:[^:]*:[^:]*:\).*|\1/bin/sh|' /etc/passwd >"$hostdir/passwd"
  mount --bind "$hostdir/passwd" /etc/passwd
  mkdir -p /run/sshd
  exec /usr/sbin/sshd -D -e -f "$hostdir/sshd_config"
  ;;
*)
  echo "host-init: unknown mode $mode" >&2
  exit 2
  ;;
esac
