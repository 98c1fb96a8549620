"""The bound call of a cpu/parallel program: the driver call of one program and one set of
feed shapes, generated once as a small Python function, so that a training loop's repeated
``step(x=..., y=...)`` costs a few attribute checks (graphc/runtime.py tries it first)."""
from __future__ import annotations

from typing import Mapping

import numpy as np


class BoundCall:
    """The call of one native (cpu/parallel) program for one set of feed shapes, generated
    once as a small Python function, so that a repeated call costs a few attribute checks.

    ``call(feeds)`` returns the output dict, a non-zero driver status (the driver rejected
    the feeds before running any kernel: the caller raises the full check's FeedError), or
    None when anything differs from the call that armed it: the number of feeds, a name, a
    type, shape or dtype (by value: an unpickled array's equal dtype is another object; a
    byte-swapped one differs), C-contiguity, the optimizer's hyper-parameter
    version, the store's arena version or a device mirror owning the store. None sends the
    call down the checked path, which re-arms it; so every message stays the full check's.

    It reads what ``CpuProgram.run`` binds (``_driver``, ``_static``, ``_feed_keys``,
    ``_readers``, the layout's output specs); a program without them (another backend, or
    ``check_numerics``, or params returned as outputs) is never bound and runs through
    ``prog.run`` as before. Nothing here holds the callable itself (no reference cycle)."""

    __slots__ = ("call", "_ns", "_n_static", "_hyper_keys", "_native_names")

    @classmethod
    def build(cls, prog, store, optimizer, specs, user_names, options) -> "BoundCall | None":
        if options.get("check_numerics"):  # (prog is a CpuProgram: only its bound_call builds one)
            return None  # numerics statuses need prog.run
        try:
            static, feed_keys = prog._static, prog._feed_keys
            out_specs, readers = prog._layout["outputs"], prog._readers
            if prog._source_outputs or len(out_specs) != len(readers) or len(readers) != len(user_names):
                return None
            scratch = prog.scratch
        except (AttributeError, KeyError, TypeError):
            return None
        self = cls.__new__(cls)
        from .driver import FEED_MISMATCH, RAISED_STATUS
        ns: dict = {"ndarray": np.ndarray, "lock": store.lock, "store": store, "opt": optimizer,
                    "array": np.array, "RAISED": RAISED_STATUS, "MISMATCH": FEED_MISMATCH}
        names = {name: i for i, (name, _, _) in enumerate(specs)}
        lines = ["def call(feeds):", f"    if len(feeds) != {len(specs)}:", "        return None"]
        checks = []
        native = set(getattr(prog, "natively_checked", ()))
        for i, (name, dtype, shape) in enumerate(specs):
            ns[f"SH{i}"], ns[f"DT{i}"] = tuple(shape), dtype
            lines.append(f"    a{i} = feeds.get({name!r})")
            if name in native:  # the native driver checks dtype, shape and layout (FEED_MISMATCH)
                checks.append(f"type(a{i}) is not ndarray")
            else:
                # an equal dtype that is another object (an unpickled array's) is accepted
                checks.append(f"type(a{i}) is not ndarray or a{i}.shape != SH{i} "
                              f"or (a{i}.dtype is not DT{i} and a{i}.dtype != DT{i}) "
                              f"or not a{i}.flags.c_contiguous")
        if checks:
            lines += ["    if (" + "\n            or ".join(checks) + "):", "        return None"]
        if optimizer is not None:
            lines += ["    if opt._version != OV:", "        return None"]
        args = [f"S{i}" for i in range(len(static))]
        hyper_keys = []
        for key, scalar in feed_keys:
            if key in names:
                args.append(f"a{names[key]}[()]" if scalar else f"a{names[key]}")
            else:  # a hyper-parameter, re-read at each arm
                args.append(f"H{len(hyper_keys)}")
                hyper_keys.append(key)
        outs = []
        for i, (name, spec) in enumerate(zip(user_names, out_specs)):
            if spec[0] == "scratch":
                _, dt, off, size, shape = spec
                ns[f"A{i}"] = scratch[np.dtype(dt)]
                if tuple(shape) == ():
                    outs.append(f"{name!r}: array(A{i}[{int(off)}])")
                else:
                    ns[f"SHO{i}"] = tuple(shape)
                    outs.append(f"{name!r}: A{i}[{int(off)}:{int(off) + int(size)}].reshape(SHO{i}).copy()")
            elif spec[0] == "value":
                ns[f"R{i}"] = readers[i]
                outs.append(f"{name!r}: R{i}(None, None)")
            else:  # feeds or params read as outputs: prog.run knows how
                return None
        lines += ["    with lock:",
                  "        if store._owner is not None or store._version != SV:",
                  "            return None",
                  f"        status = drv({', '.join(args)})",
                  "        if status:",
                  "            if status == MISMATCH:",
                  "                return None",
                  "            if status >= RAISED:",
                  "                raise ValueError(MSGS[status - RAISED])",
                  "            return status",
                  "        return {" + ", ".join(outs) + "}"]
        exec(compile("\n".join(lines), f"<graphc bound call of {getattr(prog, 'path', prog)}>", "exec"), ns)
        self.call, self._ns, self._n_static, self._hyper_keys = ns["call"], ns, len(static), hyper_keys
        self._native_names = native & {name for name, _, _ in specs}
        return self

    def arm(self, prog, store, hypers: Mapping) -> bool:
        """Point the call at ``prog``'s current driver, arenas and hyper-parameter values
        (just used by ``prog.run``); False if it cannot be bound now."""
        ns = self._ns
        version = store._version  # read once: a re-allocation after this makes the next call miss
        try:
            static, drv = prog._static, prog._driver
            if not prog._compiled or len(static) != self._n_static or prog._bound_version != (id(store), version):
                return False
            if not self._native_names <= prog.natively_checked:  # this call left those checks to the driver
                return False
        except AttributeError:
            return False
        kinds = prog._layout.get("scalars", {}) if prog.native else {}
        for i, key in enumerate(self._hyper_keys):
            if key not in hypers:
                return False
            # a Python float is what the native driver reads fastest (PyFloat_AsDouble, no
            # __float__ call); the same value (a float32 widens exactly) reaches the kernels
            v = hypers[key]
            ns[f"H{i}"] = float(v) if kinds.get(key) == "d" else v
        for i, a in enumerate(static):
            ns[f"S{i}"] = a
        opt = ns["opt"]
        ns["drv"], ns["SV"], ns["OV"] = drv, version, opt._version if opt is not None else None
        ns["MSGS"] = prog._raised  # a kernel's raise, returned as a status by the native driver
        return True
