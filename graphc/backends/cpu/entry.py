"""A kernel module's native entry as the emitter wrote it: what the compilers need to know
about it, handed to them as data beside the text (emitter.py writes it, kernels.py and
driver.py read it; a program's manifest stores it, so a warm start has it too)."""
from __future__ import annotations

from dataclasses import dataclass

CTYPES = ("voidptr", "int64", "float32", "float64")  # an entry's parameter types (a bool is an int64)


@dataclass(frozen=True)
class EntryDesc:
    """``name``: the ``cfunc``'s name (bound to the symbol ``graphc_<name>``); ``args``: its
    parameters as (name, C type) in order; ``ret``: its C return type; ``dtypes``: for each
    address parameter, the dtype of the items it points to; ``intrinsics``: the dialect's
    intrinsics its text calls (intrinsics.DIALECT); ``raises``: the messages of its error
    path (the entry returns -1 where its kernel would raise; the driver raises)."""
    name: str
    args: tuple
    ret: str = "int64"
    dtypes: tuple = ()
    intrinsics: tuple = ()
    raises: tuple = ()

    @property
    def symbol(self) -> str:
        return f"graphc_{self.name}"

    @property
    def ctypes(self) -> list[str]:
        return [t for _, t in self.args]

    def dtype_of(self, param: str) -> str | None:
        return dict(self.dtypes).get(param)

    def to_json(self) -> dict:
        return {"name": self.name, "args": [list(a) for a in self.args], "ret": self.ret,
                "dtypes": [list(d) for d in self.dtypes], "intrinsics": list(self.intrinsics),
                "raises": list(self.raises)}

    @classmethod
    def from_json(cls, d: dict) -> "EntryDesc":
        return cls(d["name"], tuple((str(p), str(t)) for p, t in d["args"]), d["ret"],
                   tuple((str(p), str(t)) for p, t in d["dtypes"]), tuple(d["intrinsics"]), tuple(d["raises"]))
