"""The guest kernel of the VM lab: Debian's own ``linux-image-*-amd64``, never installed.

``ensure_kernel(series)`` downloads the newest ``linux-image-<ver>-amd64-unsigned`` of
that series (``apt-get download``: nothing is installed on this machine), unpacks it
under ``.build/vm/kernel-<ver>/``, runs ``depmod`` there, and writes next to it:

- ``vmlinux``: the kernel decompressed from ``vmlinuz``. QEMU boots an ELF kernel with
  a PVH note straight into 64-bit code: no real-mode setup and no decompression, which
  under TCG saves seconds per boot.
- ``initramfs.cpio``: busybox (static) and the modules needed before the root is mounted
  (virtio-pci, 9p, overlay, virtio-blk + ext4), and ``/init`` (vm-initramfs-init.sh).

Series (``SERIES``): "6.1" (the default, Debian 12's own kernel, from the machine's apt
sources) and "6.12" (bookworm-backports, through a private apt configuration under
``.build/vm/apt-bookworm-backports/``: the machine's sources are not touched). Each
series is cached in its own ``kernel-<ver>`` directory; a cached kernel is kept until
that directory is removed.

Everything is cached; a lock makes concurrent callers (a fleet booting several guests)
wait for one download. ``NETLB_VM_KERNEL_DEB`` takes a local .deb instead of apt (default
series only; it must hold a kernel of that series).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import io
import lzma
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent
REPO_ROOT = LAB_DIR.parents[1]
INITRAMFS_INIT = LAB_DIR / "vm-initramfs-init.sh"
BUSYBOX = "/bin/busybox"
# Loaded by the initramfs, in this order (with their dependencies): the root is a
# 9p share of the host's /, the writable layer a tmpfs or a virtio disk (ext4).
EARLY_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_blk", "ext4"]
DEFAULT_SERIES = "6.1"


@dataclass(frozen=True)
class Series:
    """A guest kernel series: which packages belong to it, and where apt finds them."""

    name: str
    version: re.Pattern[str]  # the <ver> of linux-image-<ver>-amd64(-unsigned), = kernel-<ver>
    suite: str | None  # None: the machine's apt sources; else a private apt config of this suite

    def package_version(self, pkg: str) -> str | None:
        m = re.match(r"^linux-image-(.+)-amd64-unsigned$", pkg)
        return m.group(1) if m and self.version.match(m.group(1)) else None


SERIES = {
    "6.1": Series("6.1", re.compile(r"^6\.1\.\d+-\d+$"), None),  # 6.1.0-57
    "6.12": Series("6.12", re.compile(r"^6\.12\.\d+\+deb12$"), "bookworm-backports"),  # 6.12.95+deb12
}


class VmSetupError(RuntimeError):
    """Something the VM lab needs is missing; the message says what to install or set."""


@dataclass(frozen=True)
class GuestKernel:
    release: str  # uname -r in the guest, e.g. 6.1.0-57-amd64
    vmlinux: Path
    initramfs: Path
    modules: Path  # .../lib/modules/<release>: the guest's module tree (host path)

    @property
    def description(self) -> str:
        return f"Debian linux-image-{self.release} (QEMU)"


def vm_dir() -> Path:
    return Path(os.environ.get("NETLB_VM_DIR") or REPO_ROOT / ".build" / "vm")


def _series(name: str) -> Series:
    try:
        return SERIES[name]
    except KeyError:
        raise ValueError(f"unknown guest kernel series {name!r} (one of {', '.join(SERIES)})") from None


def _version_key(ver: str) -> tuple[int, ...]:
    """6.1.0-57 -> (6, 1, 0, 57); 6.12.95+deb12 -> (6, 12, 95, 12): ordered within a series."""
    return tuple(int(x) for x in re.findall(r"\d+", ver))


def _debian_mirror() -> tuple[str, str]:
    """(URI, keyring) of the machine's Debian archive (not -security), from its deb822 sources."""
    uri, keyring = "http://deb.debian.org/debian", "/usr/share/keyrings/debian-archive-keyring.gpg"
    with contextlib.suppress(OSError):
        for stanza in re.split(r"\n\s*\n", Path("/etc/apt/sources.list.d/debian.sources").read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                uri = fields["URIs"].split()[0]
                keyring = fields.get("Signed-By", keyring).strip() or keyring
                break
    return uri, keyring


def _apt_options(suite: str | None) -> list[str]:
    """apt options for *suite* through a private configuration under vm_dir() (lists and
    cache of its own; the machine's sources and state stay untouched); [] for the
    machine's own sources."""
    if suite is None:
        return []
    d = vm_dir() / f"apt-{suite}"
    (d / "lists/partial").mkdir(parents=True, exist_ok=True)
    (d / "cache/archives/partial").mkdir(parents=True, exist_ok=True)
    uri, keyring = _debian_mirror()
    (d / "sources.list").write_text(f"deb [signed-by={keyring}] {uri} {suite} main\n")
    return ["-o", f"Dir::Etc::sourcelist={d / 'sources.list'}", "-o", "Dir::Etc::sourceparts=/dev/null",
            "-o", f"Dir::State::Lists={d / 'lists'}", "-o", f"Dir::Cache={d / 'cache'}"]  # fmt: skip


def _newest_package(series: Series, apt: list[str]) -> str:
    try:
        if series.suite is not None:  # a private configuration: its lists are ours to refresh
            r = subprocess.run(["apt-get", "-q", *apt, "update"], capture_output=True, text=True,
                               check=False, stdin=subprocess.DEVNULL)  # fmt: skip
            if r.returncode != 0:
                raise VmSetupError(f"apt-get update of {series.suite} failed: {r.stderr.strip()[-300:]}")
        out = subprocess.run(["apt-cache", *apt, "pkgnames", "linux-image-"], capture_output=True, text=True,
                             check=False, stdin=subprocess.DEVNULL).stdout  # fmt: skip
    except FileNotFoundError as e:
        raise VmSetupError("apt-cache not found: set NETLB_VM_KERNEL_DEB to a linux-image-*-amd64 .deb") from e
    versions = [v for v in map(series.package_version, out.split()) if v]
    if not versions:
        where = f"in {series.suite}" if series.suite else "to apt: run `apt-get update`"
        raise VmSetupError(f"no linux-image-*-amd64-unsigned package of series {series.name} known {where}, "
                           "or set NETLB_VM_KERNEL_DEB to a Debian kernel .deb")  # fmt: skip
    return f"linux-image-{max(versions, key=_version_key)}-amd64-unsigned"


def _download(workdir: Path, series: Series) -> Path:
    deb = os.environ.get("NETLB_VM_KERNEL_DEB") if series.name == DEFAULT_SERIES else None
    if deb:
        if not Path(deb).is_file():
            raise VmSetupError(f"NETLB_VM_KERNEL_DEB={deb}: no such file")
        return Path(deb)
    apt = _apt_options(series.suite)
    pkg = _newest_package(series, apt)
    r = subprocess.run(["apt-get", *apt, "download", "-q", pkg], cwd=workdir, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    debs = list(workdir.glob("*.deb"))
    if r.returncode != 0 or not debs:
        raise VmSetupError(f"cannot download {pkg} (apt-get download: {r.stderr.strip()[-300:]}); "
                           "check the apt sources, or set NETLB_VM_KERNEL_DEB to a Debian kernel .deb")  # fmt: skip
    return debs[0]


def _unzstd(data: bytes, what: str) -> bytes:
    """Python 3.11 has no zstd: the zstd program decompresses."""
    try:
        r = subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, check=False)
    except FileNotFoundError as e:
        raise VmSetupError(f"{what} is zstd-compressed: apt-get install zstd") from e
    if r.returncode != 0:
        raise VmSetupError(f"zstd -d {what}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (Debian compresses 6.1 with xz, 6.12 with zstd)."""
    start = bzimage.find(b"\xfd7zXZ\x00")
    while start != -1:
        with contextlib.suppress(lzma.LZMAError):
            data = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(bzimage[start:])
            if data[:4] == b"\x7fELF":
                return data
        start = bzimage.find(b"\xfd7zXZ\x00", start + 1)
    # The boot protocol's header says where the payload is (setup_sects at 0x1f1,
    # payload_offset and payload_length at 0x248); a zstd payload ends with the
    # uncompressed size (4 bytes), which the zstd program would take for a broken frame.
    if len(bzimage) > 0x250 and bzimage[0x202:0x206] == b"HdrS":
        off = (bzimage[0x1F1] + 1) * 512 + int.from_bytes(bzimage[0x248:0x24C], "little")
        payload = bzimage[off : off + int.from_bytes(bzimage[0x24C:0x250], "little")]
        if payload[:4] == b"\x28\xb5\x2f\xfd":
            data = _unzstd(payload[:-4], "vmlinuz")
            if data[:4] == b"\x7fELF":
                return data
    raise VmSetupError("no xz- or zstd-compressed ELF kernel found in vmlinuz")


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data); symlinks carry their target as data."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def _early_module_paths(root: Path, release: str) -> list[Path]:
    """EARLY_MODULES and their dependencies as insmod would need them, in order."""
    ordered: list[Path] = []
    for mod in EARLY_MODULES:
        r = subprocess.run(["modprobe", "-d", str(root), "-S", release, "--show-depends", mod],
                           capture_output=True, text=True, check=False)  # fmt: skip
        if r.returncode != 0:
            raise VmSetupError(f"guest kernel {release}: module {mod}: {r.stderr.strip()}")
        for line in r.stdout.splitlines():
            words = line.split()
            if words[:1] == ["insmod"]:
                path = Path(words[1])
                if path not in ordered:
                    ordered.append(path)
    return ordered


def _module_bytes(path: Path) -> tuple[bytes, str]:
    """A module file's content, decompressed (busybox insmod loads only plain .ko files),
    and its name without the compression suffix."""
    if path.name.endswith(".ko"):
        return path.read_bytes(), path.name
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes()), path.name[: -len(".xz")]
    if path.name.endswith(".ko.zst"):
        return _unzstd(path.read_bytes(), str(path)), path.name[: -len(".zst")]
    raise VmSetupError(f"module {path}: unknown compression (expected .ko, .ko.xz or .ko.zst)")


def _build_initramfs(root: Path, release: str) -> bytes:
    if not os.access(BUSYBOX, os.X_OK):
        raise VmSetupError("busybox not found: apt-get install busybox-static")
    entries: list[tuple[str, int, bytes]] = [(d, stat.S_IFDIR | 0o755, b"") for d in
                                             ("bin", "dev", "proc", "sys", "mnt", "newroot", "modules")]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, Path(BUSYBOX).read_bytes()))
    entries.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
    order = []
    for i, path in enumerate(_early_module_paths(root, release)):
        data, name = _module_bytes(path)
        name = f"{i:02d}-{name}"
        entries.append((f"modules/{name}", stat.S_IFREG | 0o644, data))
        order.append(name)
    entries.append(("modules/order", stat.S_IFREG | 0o644, "\n".join(order).encode() + b"\n"))
    entries.append(("init", stat.S_IFREG | 0o755, INITRAMFS_INIT.read_bytes()))
    return _cpio_newc(entries)


def _inputs_digest() -> str:
    """Rebuild the initramfs when its init script or busybox changes."""
    h = hashlib.sha256(INITRAMFS_INIT.read_bytes())
    with open(BUSYBOX, "rb") as f:
        h.update(hashlib.sha256(f.read()).digest())
    h.update(",".join(EARLY_MODULES).encode())
    return h.hexdigest()[:16]


def _find_kernel(base: Path, series: Series) -> GuestKernel | None:
    """The newest cached kernel of *series* (kernel-<ver> directories of other series are ignored)."""
    dirs = [d for d in base.glob("kernel-*") if series.version.match(d.name[7:])]
    for d in sorted(dirs, key=lambda p: _version_key(p.name[7:]), reverse=True):
        release = d.name[7:] + "-amd64"
        paths = GuestKernel(release, d / "vmlinux", d / "initramfs.cpio", d / "root/lib/modules" / release)
        if paths.vmlinux.is_file() and paths.modules.is_dir():
            return paths
    return None


def ensure_kernel(series: str = DEFAULT_SERIES) -> GuestKernel:
    """The cached guest kernel of *series* ("6.1", "6.12": SERIES), downloading and
    preparing it the first time."""
    ser = _series(series)
    base = vm_dir()
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kernel = _find_kernel(base, ser)
        if kernel is None:
            kernel = _prepare(base, ser)
        digest_file = kernel.initramfs.with_suffix(".digest")
        digest = _inputs_digest()
        if not kernel.initramfs.is_file() or not digest_file.exists() or digest_file.read_text() != digest:
            root = kernel.modules.parents[2]
            tmp = kernel.initramfs.with_suffix(".tmp")
            tmp.write_bytes(_build_initramfs(root, kernel.release))
            tmp.rename(kernel.initramfs)
            digest_file.write_text(digest)
        return kernel


def python_trees() -> list[str]:
    """Where the guest's Python reads its code from: the running venv and its base
    interpreter's standard library, and the distribution's python3 (the role's boot
    script). Imports over 9p cost a round trip per stat and read (an Ansible module's
    imports took 8-10 s in a TCG guest); from an ext4 image in the guest's page cache
    they are several times faster."""
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    trees = [os.path.realpath(os.path.join(sys.base_prefix, "lib", ver))]
    if sys.prefix != sys.base_prefix:
        trees.append(os.path.realpath(sys.prefix))
    trees += [t for t in (f"/usr/lib/{ver}", "/usr/lib/python3/dist-packages") if os.path.isdir(t)]
    out: list[str] = []
    for t in trees:  # no tree inside another
        if t not in out and not any(t.startswith(o + "/") for o in out):
            out.append(t)
    return out


# Inside those trees, what the guest never imports.
_SKIP = ("site-packages", "test")


def _trees_key(trees: list[str]) -> str:
    """Changes when a package is installed or removed (directory mtimes, two levels)."""
    h = hashlib.sha256()
    for tree in trees:
        h.update(tree.encode())
        for top in [Path(tree), *[p for p in Path(tree).iterdir() if p.is_dir()]]:
            with contextlib.suppress(OSError):
                h.update(b"%s %d" % (str(top).encode(), top.stat().st_mtime_ns))
        for sp in Path(tree).glob("lib/python3*/site-packages"):  # a venv's packages
            for p in sp.iterdir():
                with contextlib.suppress(OSError):
                    h.update(b"%s %d" % (p.name.encode(), p.stat().st_mtime_ns))
    return h.hexdigest()[:16]


def ensure_python_image() -> tuple[Path, list[str]]:
    """A read-only ext4 image holding python_trees() (top-level dirs 0, 1, ...), rebuilt
    when they change; the guest mounts each over its own path."""
    base = vm_dir()
    base.mkdir(parents=True, exist_ok=True)
    trees = python_trees()
    key = _trees_key(trees)
    image = base / f"python-{key}.img"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.is_file():
            return image, trees
        for old in base.glob("python-*.img"):
            old.unlink()
        size = 0
        for tree in trees:
            for dirpath, dirnames, filenames in os.walk(tree):
                if dirpath == tree:
                    dirnames[:] = [d for d in dirnames if d not in _SKIP or tree.endswith("-packages")]
                for f in filenames:
                    with contextlib.suppress(OSError):
                        size += os.lstat(os.path.join(dirpath, f)).st_size + 4096
        size_mb = size * 13 // 10 // (1 << 20) + 64
        # A staging tree of bind mounts in a private mount namespace: mke2fs -d copies one
        # directory, and nothing here may touch the machine's own mounts.
        binds = []
        for i, tree in enumerate(trees):
            binds.append(f"mkdir -p $S/{i} && mount --bind {shlex.quote(tree)} $S/{i}")
            if not tree.endswith("-packages"):
                for skip in _SKIP:
                    if os.path.isdir(os.path.join(tree, skip)):
                        binds.append(f"mount -t tmpfs none $S/{i}/{skip}")
        tmp = image.with_suffix(".tmp")
        script = (f"set -e; S=$(mktemp -d); mount -t tmpfs none $S; {'; '.join(binds)}; "
                  f"mke2fs -q -F -t ext4 -i 4096 -m 0 -O ^has_journal -d $S {shlex.quote(str(tmp))} {size_mb}M")
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                           capture_output=True, text=True, check=False)  # fmt: skip
        if r.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise VmSetupError(f"building the guest's Python image failed: {r.stderr.strip()[-400:]}")
        tmp.rename(image)
        return image, trees


def _prepare(base: Path, series: Series) -> GuestKernel:
    with tempfile.TemporaryDirectory(dir=base, prefix="download-") as tmp:
        work = Path(tmp)
        deb = _download(work, series)
        root = work / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        vmlinuz = sorted(glob.glob(str(root / "boot/vmlinuz-*")))
        if not vmlinuz:
            raise VmSetupError(f"{deb.name} holds no boot/vmlinuz-*: not a kernel image package")
        release = Path(vmlinuz[0]).name[len("vmlinuz-"):]
        if not release.endswith("-amd64"):
            raise VmSetupError(f"{deb.name}: expected an -amd64 kernel, got {release}")
        if not series.version.match(release[: -len("-amd64")]):
            raise VmSetupError(f"{deb.name}: kernel {release} is not of series {series.name}")
        subprocess.run(["depmod", "-b", str(root), release], check=True)
        (work / "vmlinux").write_bytes(extract_vmlinux(Path(vmlinuz[0]).read_bytes()))
        # Only what the guest uses: the module tree and the kernel.
        shutil.rmtree(root / "usr", ignore_errors=True)
        shutil.rmtree(root / "boot", ignore_errors=True)
        if deb.parent == work:  # downloaded, not NETLB_VM_KERNEL_DEB
            deb.unlink()
        final = base / ("kernel-" + release[: -len("-amd64")])
        os.rename(work, final)
        os.mkdir(work)  # TemporaryDirectory removes it again
    kernel = _find_kernel(base, series)
    assert kernel is not None
    return kernel
