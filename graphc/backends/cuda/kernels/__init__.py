"""The cuda lowering of each kernel kind, one module per family (``emitter.KERNELS`` maps a
kind to its function ``(emitter, kernel, hosted) -> Launch``): loops.py (elementwise loops,
block reductions, copies), sce.py (softmax-CE), indexing.py (take, scatter-add), slicing.py
(slice, pad, concatenate), conv.py (im2col, col2im, pooling), rng.py (random_uniform). GEMMs
are ../gemm.py's. The emitter (``em``) says where a node lives (``em.where``) and adds a
generated function (``em.function``)."""
