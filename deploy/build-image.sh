#!/usr/bin/env bash
# Builds the docker image raftmq:latest (and raftmq:<git short sha>, with "-dirty" when tracked
# files differ from the commit) holding static mqbroker, mqnamesrv and mqadmin, without a
# Dockerfile or BuildKit: the binaries are built static for the host's gnu target, a root
# filesystem is assembled in a temporary directory and `docker import`ed.
# Needs: Rust (cargo, rustc), Python 3, Docker. Honours CARGO_TARGET_DIR; RAFTMQ_STRIP=0
# keeps the debug line tables in the image's binaries.
# Usage: deploy/build-image.sh [--no-build] [IMAGE_NAME]   (default raftmq)
#   --no-build  package the binaries already in the target directory (still checked static)
set -euo pipefail

die() {
    echo "build-image: error: $*" >&2
    exit 1
}
say() {
    echo "build-image: $*" >&2
}

build=1
if [ "${1:-}" = --no-build ]; then
    build=0
    shift
fi
case "${1:-}" in
    -*) die "unknown option $1 (usage: $0 [--no-build] [IMAGE_NAME])" ;;
esac
image="${1:-raftmq}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bins=(mqbroker mqnamesrv mqadmin)

for tool in cargo rustc python3 docker; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (this script needs Rust, Python 3 and Docker)"
done
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is it running, and may this user use it?)"

# The host's gnu target triple: static glibc binaries for the machine we run on.
host="$(rustc -vV | sed -n 's/^host: //p')"
[ -n "$host" ] || die "cannot read the host triple from 'rustc -vV'"
case "$host" in
    *-linux-gnu*) triple="$host" ;;
    *-linux-musl*) triple="${host%-musl*}-gnu" ;;
    *) die "host $host is not Linux: build on a Linux machine (the image runs Linux binaries)" ;;
esac

# Where cargo puts them (a relative CARGO_TARGET_DIR is relative to where cargo runs: here, $root).
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
    /*) ;;
    *) target_dir="$root/$target_dir" ;;
esac
out="$target_dir/$triple/release"

if [ "$build" = 1 ]; then
    say "building static release binaries for $triple into $out"
    (
        cd "$root"
        RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$triple" --bins
    ) || die "cargo build failed (see above)"
else
    say "--no-build: packaging the binaries already in $out"
fi

# Each binary must be static: no ELF interpreter (PT_INTERP) and no needed shared libraries.
for b in "${bins[@]}"; do
    [ -x "$out/$b" ] || die "$out/$b was not built"
    python3 - "$out/$b" <<'PY' || die "$out/$b is not a static executable; it would not run in the image"
import struct, sys
path = sys.argv[1]
with open(path, "rb") as f:
    data = f.read()
if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
    sys.exit(f"{path}: not a 64-bit little-endian ELF file")
phoff, = struct.unpack_from("<Q", data, 0x20)
phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
dynamic = None
for i in range(phnum):
    p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
    if p_type == 3:  # PT_INTERP
        interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
        sys.exit(f"{path}: dynamically linked (interpreter {interp})")
    if p_type == 2:  # PT_DYNAMIC
        dynamic = (p_offset, p_filesz)
if dynamic:
    off, size = dynamic
    for j in range(0, size, 16):
        tag, _ = struct.unpack_from("<qQ", data, off + j)
        if tag == 0:
            break
        if tag == 1:  # DT_NEEDED
            sys.exit(f"{path}: needs shared libraries")
PY
    say "$b: static"
done
if command -v file >/dev/null 2>&1; then
    for b in "${bins[@]}"; do file -b "$out/$b" | sed "s|^|build-image: $b: |" >&2; done
fi

# The root filesystem.
rootfs="$(mktemp -d)"
tarball="$(mktemp)"
trap 'rm -rf "$rootfs" "$tarball"' EXIT
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/raftmq" "$rootfs/data" "$rootfs/tmp" "$rootfs/root"
for b in "${bins[@]}"; do
    install -m 0755 "$out/$b" "$rootfs/usr/local/bin/$b"
done
# The release profile keeps line tables (about 4x the code's size): drop them from the
# image's copies, keeping symbols for backtraces. RAFTMQ_STRIP=0 keeps them.
if [ "${RAFTMQ_STRIP:-1}" != 0 ]; then
    if command -v strip >/dev/null 2>&1; then
        for b in "${bins[@]}"; do
            strip --strip-debug "$rootfs/usr/local/bin/$b" || die "strip failed on $b"
        done
    else
        say "no strip on PATH: the image keeps the binaries' debug line tables"
    fi
fi
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
chmod 0755 "$rootfs/data" "$rootfs/etc/raftmq"
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
raftmq:x:10001:10001:raftmq:/data:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
raftmq:x:10001:
EOF
cat >"$rootfs/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"

# A reproducible tarball: entries sorted, owned by root, fixed mtime; its digest tells
# whether the image already holds exactly this.
python3 - "$rootfs" "$tarball" <<'PY'
import os, sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
def norm(ti):
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mtime = 0
    return ti
with tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tar:
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for full in [dirpath] + [os.path.join(dirpath, f) for f in sorted(filenames)]:
            rel = os.path.relpath(full, src)
            arc = "." if rel == "." else "./" + rel
            tar.add(full, arcname=arc, recursive=False, filter=norm)
PY
digest="$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$tarball")"

tags=("$image:latest")
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    sha="$(git -C "$root" rev-parse --short HEAD)"
    if ! git -C "$root" diff --quiet HEAD -- 2>/dev/null; then
        sha="$sha-dirty"
        say "tracked files differ from the commit: tagging $image:$sha"
    fi
    tags+=("$image:$sha")
fi

old_id=""
existing="$(docker image inspect -f '{{index .Config.Labels "raftmq.rootfs.sha256"}}' "$image:latest" 2>/dev/null || true)"
if [ "$existing" = "$digest" ]; then
    say "$image:latest already holds this root filesystem (sha256 $digest); not importing again"
else
    old_id="$(docker image inspect -f '{{.Id}}' "$image:latest" 2>/dev/null || true)"
    say "importing the root filesystem as $image:latest"
    docker import \
        --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
        --change 'WORKDIR /data' \
        --change 'CMD ["mqbroker", "--config", "/etc/raftmq/broker.toml"]' \
        --change 'EXPOSE 8081 9091 9876' \
        --change "LABEL raftmq.rootfs.sha256=$digest" \
        --message "raftmq ${tags[*]}" \
        "$tarball" "$image:latest" >/dev/null || die "docker import failed"
fi
for t in "${tags[@]:1}"; do
    docker tag "$image:latest" "$t"
done
# The image this one replaced, once no tag names it (a container still using it keeps it).
if [ -n "$old_id" ] && [ "$(docker image inspect -f '{{len .RepoTags}}' "$old_id" 2>/dev/null || echo 1)" = 0 ]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi

id="$(docker image inspect -f '{{.Id}}' "$image:latest")"
size="$(docker image inspect -f '{{.Size}}' "$image:latest")"
echo "image $id  tags ${tags[*]}  size $size bytes ($((size / 1024 / 1024)) MiB)"
