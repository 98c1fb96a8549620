"""``Model.summary``: Keras' table of layers, output shapes, parameter counts and (for
functional models) the "Connected to" column, then the totals."""
from __future__ import annotations

import numpy as np

from .base import InputLayer


def _readable_size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1024 or unit == "TB":
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover


def _connections(model, layer) -> list[str]:
    """Keras' "Connected to" entries: ``<layer>[<call index>][0]`` per input of each call."""
    out = []
    for node in layer._inbound_nodes:
        if node.id not in {n.id for n in model._nodes}:
            continue
        for t in node.inputs:
            src = t._node
            out.append(f"{src.layer.name}[{src.layer._inbound_nodes.index(src)}][0]")
    return out


def summary(model, line_length: int | None, print_fn, functional: bool) -> None:
    """Print ``model``'s table with ``print_fn`` (``functional``: with the "Connected to" column)."""
    model._ensure_built()
    print_fn = print_fn or print
    line_length = line_length or (100 if functional else 65)
    if functional:
        cols = [int(line_length * 0.33), int(line_length * 0.25), int(line_length * 0.12)]
    else:
        cols = [int(line_length * 0.45), int(line_length * 0.30)]
    shown = model.layers if functional else [l for l in model.layers if not isinstance(l, InputLayer)]
    table = []
    for layer in shown:
        desc = f" {layer.name} ({type(layer).__name__})"
        shapes = ([n.output.shape for n in layer._inbound_nodes if n.id in {m.id for m in model._nodes}]
                  or [(None,) + tuple(layer.output_shape)]) if functional else [(None,) + layer.output_shape]
        table.append((layer, desc, str(shapes[0]) if len({str(s) for s in shapes}) == 1 else "multiple"))
    # long names (global_average_pooling2d (GlobalAveragePooling2D)) widen their column
    for c, width in ((0, max((len(d) + 2 for _, d, _ in table), default=0)),
                     (1, max((len(sh) + 2 for _, _, sh in table), default=0))):
        if width > cols[c]:
            line_length += width - cols[c]
            cols[c] = width
    head = " Layer (type)".ljust(cols[0]) + "Output Shape".ljust(cols[1])
    head += ("Param #".ljust(cols[2]) + "Connected to") if functional else "Param #"
    lines = [f'Model: "{model.name}"', "_" * line_length, head, "=" * line_length]
    for i, (layer, desc, shape) in enumerate(table):
        row = desc.ljust(cols[0]) + shape.ljust(cols[1])
        if functional:
            conn = _connections(model, layer) or ["-"]
            row = row.ljust(cols[0] + cols[1]) + f"{layer.count_params():,}".ljust(cols[2]) + conn[0]
            lines.append(row)
            lines.extend(" " * (cols[0] + cols[1] + cols[2]) + c for c in conn[1:])
        else:
            lines.append(row + f"{layer.count_params():,}")
        lines.append(("_" if i < len(shown) - 1 else "=") * line_length)
    total = model.count_params()
    frozen = sum(int(np.prod(w.shape)) for l in model.layers for w in l.non_trainable_weights)
    lines += [f"Total params: {total:,} ({_readable_size(total * 4)})",
              f"Trainable params: {total - frozen:,} ({_readable_size((total - frozen) * 4)})",
              f"Non-trainable params: {frozen:,} ({_readable_size(frozen * 4)})",
              "_" * line_length]
    for line in lines:
        print_fn(line)
