"""The guest kernel of the VM lab: Debian's own ``linux-image-*-amd64``, never installed.

``ensure_kernel()`` downloads the newest ``linux-image-<ver>-amd64-unsigned`` that apt
offers (``apt-get download``: nothing is installed on this machine), unpacks it under
``.build/vm/kernel-<ver>/``, runs ``depmod`` there, and writes next to it:

- ``vmlinux``: the kernel decompressed from ``vmlinuz``. QEMU boots an ELF kernel with
  a PVH note straight into 64-bit code: no real-mode setup and no decompression, which
  under TCG saves seconds per boot.
- ``initramfs.cpio``: busybox (static) and the modules needed before the root is mounted
  (virtio-pci, 9p, overlay, virtio-blk + ext4), and ``/init`` (vm-initramfs-init.sh).

Everything is cached; a lock makes concurrent callers (a fleet booting several guests)
wait for one download. ``NETLB_VM_KERNEL_DEB`` takes a local .deb instead of apt.
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
_PKG = re.compile(r"^linux-image-(\d+\.\d+\.\d+-\d+)-amd64-unsigned$")


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


def _version_key(ver: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.split(r"[.-]", ver))


def _newest_package() -> str:
    try:
        out = subprocess.run(["apt-cache", "pkgnames", "linux-image-"], capture_output=True, text=True,
                             check=False, stdin=subprocess.DEVNULL).stdout  # fmt: skip
    except FileNotFoundError as e:
        raise VmSetupError("apt-cache not found: set NETLB_VM_KERNEL_DEB to a linux-image-*-amd64 .deb") from e
    versions = [m.group(1) for m in map(_PKG.match, out.split()) if m]
    if not versions:
        raise VmSetupError("no linux-image-*-amd64-unsigned package known to apt: run `apt-get update`, "
                           "or set NETLB_VM_KERNEL_DEB to a Debian kernel .deb")  # fmt: skip
    return f"linux-image-{max(versions, key=_version_key)}-amd64-unsigned"


def _download(workdir: Path) -> Path:
    deb = os.environ.get("NETLB_VM_KERNEL_DEB")
    if deb:
        if not Path(deb).is_file():
            raise VmSetupError(f"NETLB_VM_KERNEL_DEB={deb}: no such file")
        return Path(deb)
    pkg = _newest_package()
    r = subprocess.run(["apt-get", "download", "-q", pkg], cwd=workdir, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    debs = list(workdir.glob("*.deb"))
    if r.returncode != 0 or not debs:
        raise VmSetupError(f"cannot download {pkg} (apt-get download: {r.stderr.strip()[-300:]}); "
                           "check the apt sources, or set NETLB_VM_KERNEL_DEB to a Debian kernel .deb")  # fmt: skip
    return debs[0]


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (Debian compresses it with xz)."""
    start = bzimage.find(b"\xfd7zXZ\x00")
    while start != -1:
        with contextlib.suppress(lzma.LZMAError):
            data = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(bzimage[start:])
            if data[:4] == b"\x7fELF":
                return data
        start = bzimage.find(b"\xfd7zXZ\x00", start + 1)
    raise VmSetupError("no xz-compressed ELF kernel found in vmlinuz")


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


def _build_initramfs(root: Path, release: str) -> bytes:
    if not os.access(BUSYBOX, os.X_OK):
        raise VmSetupError("busybox not found: apt-get install busybox-static")
    entries: list[tuple[str, int, bytes]] = [(d, stat.S_IFDIR | 0o755, b"") for d in
                                             ("bin", "dev", "proc", "sys", "mnt", "newroot", "modules")]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, Path(BUSYBOX).read_bytes()))
    entries.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
    order = []
    for i, path in enumerate(_early_module_paths(root, release)):
        name = f"{i:02d}-{path.name}"
        entries.append((f"modules/{name}", stat.S_IFREG | 0o644, path.read_bytes()))
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


def _find_kernel(base: Path) -> GuestKernel | None:
    for d in sorted(base.glob("kernel-*"), key=lambda p: _version_key(p.name[7:]), reverse=True):
        release = d.name[7:] + "-amd64"
        paths = GuestKernel(release, d / "vmlinux", d / "initramfs.cpio", d / "root/lib/modules" / release)
        if paths.vmlinux.is_file() and paths.modules.is_dir():
            return paths
    return None


def ensure_kernel() -> GuestKernel:
    """The cached guest kernel, downloading and preparing it the first time."""
    base = vm_dir()
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kernel = _find_kernel(base)
        if kernel is None:
            kernel = _prepare(base)
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


def _prepare(base: Path) -> GuestKernel:
    with tempfile.TemporaryDirectory(dir=base, prefix="download-") as tmp:
        work = Path(tmp)
        deb = _download(work)
        root = work / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        vmlinuz = sorted(glob.glob(str(root / "boot/vmlinuz-*")))
        if not vmlinuz:
            raise VmSetupError(f"{deb.name} holds no boot/vmlinuz-*: not a kernel image package")
        release = Path(vmlinuz[0]).name[len("vmlinuz-"):]
        if not release.endswith("-amd64"):
            raise VmSetupError(f"{deb.name}: expected an -amd64 kernel, got {release}")
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
    kernel = _find_kernel(base)
    assert kernel is not None
    return kernel
