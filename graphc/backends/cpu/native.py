"""Names importers of the cpu backend's native compilation still find here; the code lives in
jit.py (graphc's LLVM JIT and the runtime symbols it binds), driver.py (the driver compiled by
graphc itself), image.py (the kernels' native image and its ELF reader) and lowering.py (what
the driver's and the kernels' translators share). New code imports those modules."""
from .driver import FEED_MISMATCH, RAISED_STATUS, enabled, expect_of, native_driver  # noqa: F401
from .image import host_tag, image_of, load_images, undefined_symbols  # noqa: F401
from .jit import jit as _jit  # noqa: F401
from .lowering import Unsupported  # noqa: F401
