#!/bin/sh
# Build the ktstr_fifo sched_ext fixture scheduler.
#
#   scheds/build.sh [BZIMAGE [OUTDIR]]
#
# BZIMAGE defaults to the newest kernel in the ktstr cache; OUTDIR to
# scheds/target. Produces OUTDIR/ktstr_fifo (loader with the BPF object
# embedded). vmlinux.h is generated from that kernel's BTF every time the
# kernel changes and never committed. Only Debian bookworm packages needed.
set -eu

APT_HINT="apt-get install -y clang-14 llvm-14 libbpf-dev libelf-dev bpftool zstd gcc"
die() { echo "scheds/build.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)

# The same cache root the host crate uses (host/src/kernel/cache.rs).
cache_root() {
	if [ -n "${KTSTR_CACHE_DIR:-}" ]; then echo "$KTSTR_CACHE_DIR"
	elif [ -n "${XDG_CACHE_HOME:-}" ] && [ "${XDG_CACHE_HOME#/}" != "$XDG_CACHE_HOME" ]; then
		echo "$XDG_CACHE_HOME/ktstr"
	elif [ -n "${HOME:-}" ]; then echo "$HOME/.cache/ktstr"
	else die "no cache directory: set KTSTR_CACHE_DIR, XDG_CACHE_HOME or HOME"
	fi
}

if [ $# -ge 1 ] && [ -n "$1" ]; then
	bzimage=$1
else
	kdir=$(cache_root)/kernels
	newest=$(ls -1 "$kdir" 2>/dev/null | grep -v '^\.' | sort -V | tail -n 1 || true)
	[ -n "$newest" ] || die "no kernel in $kdir; fetch one with ktstr or pass a bzImage path"
	bzimage=$kdir/$newest/bzImage
fi
[ -r "$bzimage" ] || die "cannot read kernel image '$bzimage'"
out=${2:-$here/target}
mkdir -p "$out"

# Tools: clang-14 and llvm-strip-14 by default; CLANG/LLVM_STRIP override.
CLANG=${CLANG:-clang-14}
LLVM_STRIP=${LLVM_STRIP:-llvm-strip-14}
CC=${CC:-gcc}
# bpftool is in /usr/sbin, which a non-root PATH may lack.
BPFTOOL=${BPFTOOL:-$(command -v bpftool || echo /usr/sbin/bpftool)}
missing=
for t in "$CLANG" "$LLVM_STRIP" "$CC" "$BPFTOOL" zstd od; do
	command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
done
[ -z "$missing" ] || die "missing tools:$missing; install with: $APT_HINT"
[ -r /usr/include/bpf/libbpf.h ] || die "missing libbpf headers; install with: $APT_HINT"
[ -r /usr/include/libelf.h ] || die "missing libelf headers; install with: $APT_HINT"

# vmlinux.h, regenerated only when the kernel image changes.
stamp="$bzimage $(wc -c <"$bzimage") $(stat -c %Y "$bzimage")"
if [ ! -s "$out/vmlinux.h" ] || [ "$(cat "$out/vmlinux.h.stamp" 2>/dev/null)" != "$stamp" ]; then
	# The compressed vmlinux sits at payload_offset (0x248) past the setup
	# sectors ((setup_sects at 0x1f1) + 1) * 512; payload_length is at
	# 0x24c and counts a trailing 4-byte size (x86 boot protocol 2.08+).
	u() { od -An -tu"$2" -j "$1" -N "$2" "$bzimage" | tr -d ' '; }
	[ "$(od -An -c -j 514 -N 4 "$bzimage" | tr -d ' ')" = HdrS ] ||
		die "'$bzimage' is not a bzImage (no HdrS header)"
	start=$(( ($(u 497 1) + 1) * 512 + $(u 584 4) ))
	len=$(( $(u 588 4) - 4 ))
	[ "$(od -An -tx1 -j "$start" -N 4 "$bzimage" | tr -d ' ')" = 28b52ffd ] ||
		die "'$bzimage' payload is not zstd-compressed; extract its vmlinux another way"
	tail -c +$((start + 1)) "$bzimage" | head -c "$len" | zstd -dcq >"$out/vmlinux"
	"$BPFTOOL" btf dump file "$out/vmlinux" format c >"$out/vmlinux.h.tmp" ||
		die "bpftool found no BTF in the kernel (needs CONFIG_DEBUG_INFO_BTF=y)"
	rm -f "$out/vmlinux"
	mv "$out/vmlinux.h.tmp" "$out/vmlinux.h"
	echo "$stamp" >"$out/vmlinux.h.stamp"
fi

# Nothing to do when the binaries were built from these sources for this
# kernel (tests build the fixture once per run; the caller holds a lock).
build_stamp="$stamp $(cat "$here/fifo/fifo.bpf.c" "$here/fifo/loader.c" "$here/build.sh" | cksum)"
if [ -x "$out/ktstr_fifo" ] && [ -x "$out/ktstr_fifo_versioned" ] &&
	[ "$(cat "$out/build.stamp" 2>/dev/null)" = "$build_stamp" ]; then
	echo "up to date: $out/ktstr_fifo and $out/ktstr_fifo_versioned"
	exit 0
fi

# -fms-extensions: newer kernels embed unnamed "struct foo;" members, which
# bpftool 7.1 prints as such; without it clang drops them from the layout.
# -mcpu=v3 for atomic fetch-and-add; DWARF is stripped, BTF kept.
# build_variant FILE OPS_NAME: the loader with the BPF object embedded,
# registering OPS_NAME.
build_variant() {
	dir="$out/$1.d"
	mkdir -p "$dir"
	"$CLANG" -target bpf -mcpu=v3 -O2 -g -Wall -fms-extensions \
		-Wno-microsoft-anon-tag -D__TARGET_ARCH_x86 -DKTSTR_OPS_NAME="\"$2\"" \
		-I"$out" -c "$here/fifo/fifo.bpf.c" -o "$dir/fifo.bpf.o"
	"$LLVM_STRIP" -g "$dir/fifo.bpf.o"
	"$BPFTOOL" gen skeleton "$dir/fifo.bpf.o" name fifo_bpf >"$dir/fifo.skel.h.tmp"
	mv "$dir/fifo.skel.h.tmp" "$dir/fifo.skel.h"
	"$CC" -O2 -Wall -I"$dir" "$here/fifo/loader.c" -o "$out/$1.tmp" -lbpf -lelf -lz
	mv "$out/$1.tmp" "$out/$1"
}
build_variant ktstr_fifo ktstr_fifo
build_variant ktstr_fifo_versioned ktstr_fifo_0.1.0_x86_64_unknown_linux_gnu
echo "$build_stamp" >"$out/build.stamp"
echo "built $out/ktstr_fifo and $out/ktstr_fifo_versioned (kernel BTF from $bzimage)"
