"""VM lab guests only: a bytecode cache for modules imported from zip files.

Ansible sends every module to a host as a zip (AnsiballZ) that Python imports
with zipimport, which compiles each source it imports on every run: there is no
bytecode cache for zips. Natively that costs a fraction of a second per task;
in a TCG guest it was about 5 of the 11 s an `ansible.builtin.ping` took. The
guest's init (vm-guest-init.sh) puts this file and a .pth importing it into the
site-packages of the lab's Python, in the guest only. Cached code is keyed by
the source text, kept in the guest's /run (gone with the guest), and given the
current path back, so tracebacks name the file that runs. Any failure falls back
to compiling: the cache can make an import faster, never different.
"""
import marshal
import os
import sys
import zipimport

CACHE_DIR = "/run/netlb/zipimport-cache/" + sys.implementation.cache_tag
_compile_source = zipimport._compile_source


def _with_filename(code, filename):
    consts = tuple(_with_filename(c, filename) if isinstance(c, type(code)) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _cached_compile_source(pathname, source):
    import hashlib  # here: a Python that imports nothing from a zip never pays for it

    path = os.path.join(CACHE_DIR, hashlib.sha1(source).hexdigest())
    try:
        with open(path, "rb") as f:
            code = marshal.load(f)
        return code if code.co_filename == pathname else _with_filename(code, pathname)
    except Exception:  # noqa: BLE001 - no entry, or a torn one: compile
        pass
    code = _compile_source(pathname, source)
    try:
        os.makedirs(CACHE_DIR, exist_ok=True)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "wb") as f:
            marshal.dump(code, f)
        os.rename(tmp, path)
    except OSError:
        pass
    return code


zipimport._compile_source = _cached_compile_source
