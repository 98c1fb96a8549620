"""The native image: a cpu program's kernels loaded without Numba.

A warm start spent ~0.5 s in Numba before the first step: importing it, initializing its
CPU target, and loading each kernel's cache entry through it. The kernels' machine code
does not need any of that: after a program's first successful call graphc writes each
kernel entry's object code (graphc's own, kernels.py, or what Numba's cache holds) to
``<module>-<host>-<digest>.o``, with its
digest in the program manifest, and a later process adds those objects to its own LLVM JIT
and binds each entry's address to ``graphc_<name>``. What the objects call into Numba's C
runtime (helpers, NRT, the math functions, Python's exception objects) is bound exactly as
Numba binds it, from Numba's C extensions loaded on their own (the ``numba`` package is not
imported). Every undefined symbol of every object is checked before anything is added (an
unresolved one would abort the process inside LLVM); anything unusual (a digest mismatch, a
symbol that cannot be bound, another host) makes the program compile its kernels instead."""
from __future__ import annotations

import hashlib

from .jit import LOCK, add_objects, bind_runtime, jit

_IMAGES: dict[str, int] = {}  # object file digest -> its entry's address (loaded once per process)


def host_tag() -> str:
    """Object code is specific to the CPU it was compiled for (Numba compiles for the host)
    and to the Numba and llvmlite that compiled it."""
    if not _HOST:  # once per process: it is read at every program's start
        import importlib.metadata as md
        ll = jit()[0]
        parts = [ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten(), ll.get_process_triple()]
        for dist in ("numba", "llvmlite"):
            try:
                parts.append(md.version(dist))
            except md.PackageNotFoundError:  # pragma: no cover - installed with graphc
                parts.append("?")
        _HOST.append(hashlib.sha256("|".join(parts).encode()).hexdigest()[:16])
    return _HOST[0]


_HOST: list[str] = []


def image_of(module) -> tuple[str, str, bytes] | None:
    """(symbol, entry's native name, object code) of a loaded kernel module's ``cfunc``
    entry, or None. (Parallel programs are not imaged: their kernels link Numba's parfor
    runtime, which needs Numba.)"""
    cf = getattr(module, "_cfunc", None)
    if cf is None:
        return None
    # the module's own ``name = export(name, _cfunc)``: the external function drivers call
    ext = getattr(module, getattr(getattr(cf, "__wrapped__", None), "__name__", ""), None)
    sym = getattr(ext, "symbol", None)
    try:
        obj = cf._library._compiled_object  # compiled in this process (the JIT consumes it on load)
        if obj is None:  # loaded from Numba's cache: the object code is in its cache file
            codegen = cf._targetdescr.target_context.codegen()
            data = cf._cache._cache_file.load(cf._cache._index_key(cf._sig, codegen))
            name, kind, (obj, _) = data[0]
            if kind != "object":
                return None
    except Exception:  # noqa: BLE001 - Numba's internals: no image then, not an error
        return None
    return (sym, cf.native_name, bytes(obj)) if sym and obj else None


def undefined_symbols(obj: bytes) -> list[str]:
    """The undefined symbols of an ELF64 little-endian relocatable object (its .symtab)."""
    import struct
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    sections = []
    for i in range(shnum):
        h = shoff + i * shentsize
        sh_type, = struct.unpack_from("<I", obj, h + 4)
        off, size, link = struct.unpack_from("<QQI", obj, h + 24)
        entsize, = struct.unpack_from("<Q", obj, h + 56)
        sections.append((sh_type, off, size, link, entsize))
    out = []
    for sh_type, off, size, link, entsize in sections:
        if sh_type != 2 or entsize < 24:  # SHT_SYMTAB
            continue
        strtab = sections[link][1]
        for s in range(off + entsize, off + size, entsize):  # entry 0 is the null symbol
            name_off, info, _, shndx = struct.unpack_from("<IBBH", obj, s)
            if shndx == 0 and name_off:  # SHN_UNDEF
                end = obj.index(b"\0", strtab + name_off)
                out.append(obj[strtab + name_off:end].decode())
    return out


def load_images(images: list[tuple[str, str, str, bytes]]) -> str | None:
    """Add kernel objects ``(symbol, native name, digest, object code)`` to the JIT and
    bind each entry to its symbol; returns None, or why not (nothing is bound then)."""
    with LOCK:
        ll = jit()[0]
        try:
            bind_runtime(ll)
        except (ImportError, OSError, AttributeError) as e:
            return f"Numba's C runtime could not be loaded ({e})"
        todo = []
        for sym, native_name, digest, obj in images:
            if hashlib.sha256(obj).hexdigest() != digest:
                return f"{sym}: its object code does not match its digest"
            if digest in _IMAGES:
                continue
            try:
                missing = [u for u in undefined_symbols(obj) if not ll.address_of_symbol(u)]
            except (ValueError, IndexError, UnicodeDecodeError) as e:
                return f"{sym}: unreadable object code ({e})"
            if missing:
                return f"{sym}: unresolved symbols {missing[:4]}"
            todo.append((sym, native_name, digest, obj))
        addrs = add_objects([(native_name, obj) for _, native_name, _, obj in todo])
        for (_, _, digest, _), addr in zip(todo, addrs):
            _IMAGES[digest] = addr
        addrs = {sym: _IMAGES[digest] for sym, _, digest, _ in images}
        if not all(addrs.values()):
            return "an entry point is missing from its object code"
        for sym, addr in addrs.items():
            ll.add_symbol(sym, addr)
        return None
