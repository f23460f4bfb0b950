#!/bin/sh
# The base image's root filesystem: Debian bookworm minbase from the apt mirror this machine
# uses, the shared libraries CPython needs, and a CPython copied to /usr/local the way the
# official python:3.11-slim-bookworm image lays it out. Driven by hack/devenv/images.py (read its
# docstring for why the interpreter is not Debian's); every step runs in a private mount
# namespace, so the /proc, /dev and resolv.conf mounts it makes vanish with it, even on a crash.
#
#   base-rootfs.sh debootstrap ROOTFS MIRROR SOURCES_FILE   minbase + runtime libraries
#   base-rootfs.sh python ROOTFS PYTHON_PREFIX              the interpreter, into /usr/local
#   base-rootfs.sh verify ROOTFS                             imports, certificates, a venv
#   base-rootfs.sh pack ROOTFS OUT_TAR OUT_LIST              a tarball for `docker import`, and
#                                                            its suites' dates and package list
set -eu

if [ "${OBB_BASE_UNSHARED:-}" != 1 ]; then
  OBB_BASE_UNSHARED=1 exec unshare --mount --propagation private sh "$0" "$@"
fi

# Runtime libraries of CPython's extension modules (readelf -d lib-dynload/*.so: NEEDED), as in
# python:3.11-slim-bookworm; tkinter's Tcl/Tk are left out with tkinter itself.
PACKAGES="ca-certificates netbase tzdata libssl3 libffi8 zlib1g libbz2-1.0 liblzma5 \
libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libnsl2 libtirpc3 libcrypt1"

step=$1 rootfs=$2
case "$rootfs" in /?*) ;; *) echo "ROOTFS must be an absolute path below /: $rootfs" >&2; exit 2 ;; esac
[ "$(readlink -f "$rootfs")" != / ] || { echo "ROOTFS is /" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 HOME=/root DEBIAN_FRONTEND=noninteractive "$@"; }

mount_runtime() {  # private to this namespace: gone when the step ends
  mount -t proc proc "$rootfs/proc"
  mount -t tmpfs -o mode=755 dev "$rootfs/dev"
  for d in null zero full random urandom tty; do
    touch "$rootfs/dev/$d" && mount --bind "/dev/$d" "$rootfs/dev/$d"
  done
  mkdir "$rootfs/dev/shm" "$rootfs/dev/pts"
  mount -t tmpfs -o mode=1777 shm "$rootfs/dev/shm"  # multiprocessing (compileall -j)
  mount -t devpts -o newinstance,ptmxmode=0666 devpts "$rootfs/dev/pts"  # dpkg's log pty
  ln -s pts/ptmx "$rootfs/dev/ptmx"
}

case "$step" in
debootstrap)
  mirror=$3 sources=$4
  debootstrap --variant=minbase --components=main bookworm "$rootfs" "$mirror"
  mount_runtime
  # Name resolution for apt, from the host, for this step only (mounted, never copied).
  for f in resolv.conf hosts; do
    touch "$rootfs/etc/$f" && mount --bind "/etc/$f" "$rootfs/etc/$f"
  done
  # As debian:bookworm-slim: no documentation, manual pages or translations.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
  # The same suites as the host (bookworm, -updates, -security): security fixes included.
  rm -f "$rootfs/etc/apt/sources.list"
  cp "$sources" "$rootfs/etc/apt/sources.list.d/debian.sources"
  in_root apt-get -q update
  in_root apt-get -q -y upgrade
  # shellcheck disable=SC2086
  in_root apt-get -q -y install $PACKAGES
  in_root apt-get clean
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs/usr/share/man"/* "$rootfs/usr/share/info"/* "$rootfs/usr/share/lintian"
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  ;;

python)
  prefix=$3 version=$(basename "$(readlink -f "$prefix/bin/python3")")  # python3.11
  lib="$prefix/lib/$version"
  [ -d "$lib/lib-dynload" ] || { echo "no CPython under $prefix" >&2; exit 2; }
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/local/lib/$version/site-packages"
  cp -a "$prefix/bin/$version" "$rootfs/usr/local/bin/"
  cp -a "$prefix"/lib/libpython3*.so* "$rootfs/usr/local/lib/"
  # The standard library without tests, IDLE, tkinter and byte code; of site-packages only what
  # the official image has (pip, setuptools): the host's other packages stay on the host.
  tar -C "$lib" -cf - --exclude=./site-packages --exclude=test --exclude=tests \
    --exclude=idle_test --exclude=./idlelib --exclude=./tkinter --exclude=./turtledemo \
    --exclude=./turtle.py --exclude=__pycache__ --exclude='*.pyc' --exclude='libpython*.a' \
    --exclude='./lib-dynload/_test*' --exclude='./lib-dynload/_tkinter*' \
    --exclude='./lib-dynload/xxlimited*' --exclude='./lib-dynload/_xxtestfuzz*' \
    --exclude='./lib-dynload/_ctypes_test*' . | tar -C "$rootfs/usr/local/lib/$version" -xf -
  (cd "$lib/site-packages" && tar -cf - --exclude=__pycache__ --exclude='*.pyc' \
    pip pip-*.dist-info setuptools setuptools-*.dist-info pkg_resources _distutils_hack \
    distutils-precedence.pth) | tar -C "$rootfs/usr/local/lib/$version/site-packages" -xf -
  # No debug information (the official image links with --strip-all).
  find "$rootfs/usr/local/bin/$version" "$rootfs/usr/local/lib" -type f -name '*.so*' \
    -exec strip --strip-unneeded {} +
  strip --strip-all "$rootfs/usr/local/bin/$version"
  # Build-time paths of the host toolchain -> /usr/local (sysconfig, python-config).
  find "$rootfs/usr/local/lib/$version" -maxdepth 2 \( -name '_sysconfigdata_*.py' \
    -o -name Makefile \) -exec sed -i "s#$prefix#/usr/local#g" {} +
  short=${version#python}  # 3.11
  ln -sf "$version" "$rootfs/usr/local/bin/python3"
  ln -sf python3 "$rootfs/usr/local/bin/python"
  for name in pip pip3 "pip$short"; do
    printf '#!/usr/local/bin/%s\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n' \
      "$version" >"$rootfs/usr/local/bin/$name"
    chmod 755 "$rootfs/usr/local/bin/$name"
  done
  # The binary's RUNPATH names the host prefix; Debian's ld.so.conf.d/libc.conf lists
  # /usr/local/lib, so the cache resolves libpython there.
  in_root ldconfig
  mount_runtime
  # Byte code for the standard library, valid whatever the files' times (the image's root is
  # read-only at run time, so it could never be written there).
  in_root python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    "/usr/local/lib/$version" >/dev/null
  ;;

verify)
  mount_runtime
  in_root python3 - <<'EOF'
import importlib, os, ssl, sys, sysconfig
assert sys.version_info >= (3, 11, 3), sys.version
assert sys.prefix == "/usr/local", sys.prefix
import bz2, ctypes, decimal, hashlib, lzma, sqlite3, uuid, zlib, zoneinfo  # noqa
zoneinfo.ZoneInfo("Europe/Berlin")
dynload = os.path.join(sysconfig.get_path("platstdlib"), "lib-dynload")
for name in sorted(os.listdir(dynload)):
    importlib.import_module(name.split(".")[0])  # each extension's shared libraries resolve
ctx = ssl.create_default_context()
assert ctx.cert_store_stats()["x509_ca"] > 50, ctx.cert_store_stats()
print("base python ok:", sys.version.split()[0], len(os.listdir(dynload)), "extension modules")
EOF
  in_root python3 -m venv /tmp/obb-venv-check
  in_root /tmp/obb-venv-check/bin/python -c 'import sys; assert sys.prefix != sys.base_prefix'
  rm -rf "$rootfs/tmp/obb-venv-check"
  ;;

pack)
  out=$3 list=$4
  # File times are clamped to the newest suite's Release date: with the same snapshot, the same
  # inputs give the same tarball (contents, modes and owners are already the same).
  epoch=$(sed -n 's/^Date: //p' "$rootfs"/var/lib/apt/lists/*_InRelease |
    while read -r d; do date -d "$d" +%s; done | sort -n | tail -n 1)
  [ -n "$epoch" ] || { echo "no Release date in $rootfs/var/lib/apt/lists" >&2; exit 1; }
  { grep -h -E '^(Suite|Date):' "$rootfs"/var/lib/apt/lists/*_InRelease
    dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f '${Package} ${Version}\n'; } >"$list"
  # What a container runtime provides, or that tells about this machine, stays out.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/var/cache/ldconfig/aux-cache "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/lib/dpkg/*-old "$rootfs"/tmp/* "$rootfs"/root/.cache \
    "$rootfs"/etc/hostname "$rootfs"/etc/resolv.conf
  find "$rootfs/dev" "$rootfs/proc" "$rootfs/sys" -mindepth 1 -delete
  tar -C "$rootfs" --numeric-owner --sort=name --mtime="@$epoch" --clamp-mtime -cf "$out" .
  ;;

*)
  echo "usage: $0 debootstrap|python|verify|pack ROOTFS ..." >&2
  exit 2
  ;;
esac
