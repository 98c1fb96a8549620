"""Normal, truncated normal and Bernoulli draws from the in-step uniform generator
(``random_uniform``, ops/random.py): no new op, elementwise compositions that fuse into the
loop consuming the draw.

Why not Box-Muller: ``log`` and ``cos`` come from a different library on each target (NumPy's
SIMD loops, libm through LLVM, CUDA's libdevice), which may differ in the last bit, and a
draw must be bit-identical everywhere. So a normal draw is the inverse normal CDF of ONE
float64 uniform ``u + 2**-54`` (in (0, 1), symmetric about 1/2), evaluated with Acklam's
rational approximation (relative error < 1.2e-9; its tails reach 8.3 standard deviations)
written with +, -, *, /, sqrt, comparisons and selects only, each correctly rounded by IEEE 754
on every target; its tails need a logarithm, computed the same way (exact range reduction by
powers of two, then the ``atanh`` series). All of it runs in float64 and is rounded once to
the requested dtype. (On a real GPU, NVVM contracts a*b+c into an FMA by default, which may
change the last bits there; the CUDA simulator reproduces the interpreter's bits.)

The truncated normal (Keras' ``truncated_normal``: values beyond two standard deviations
re-drawn) is the same inverse CDF over the uniform mapped onto ``[Phi(-2), Phi(2)]``: an exact
sample of the truncated distribution from one uniform, no rejection loop, bound kept by a
final clip against rounding.
"""
from __future__ import annotations

LN2 = 0.6931471805599453
PHI_M2 = 0.022750131948179195            # Phi(-2)
PHI_SPAN = 0.9544997361036416            # Phi(2) - Phi(-2)
_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
      -3.066479806614716e+01, 2.506628277459239e+00)
_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
      -1.328068155288572e+01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
      4.374664141464968e+00, 2.938163982698783e+00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
P_LOW = 0.02425


def _F():
    from .. import dsl
    return dsl


def _horner(x, coefs, last=None):
    y = x * 0.0 + coefs[0]
    for c in coefs[1:]:
        y = y * x + c
    return y if last is None else y * x + last


def log_exact(x):
    """``log(x)`` for float64 ``x`` in [2**-63, 1], from correctly rounded operations only:
    ``x = m * 2**e`` with m in [sqrt(1/2), sqrt(2)) by exact scalings, then
    ``log(m) = 2 atanh(s)``, ``s = (m - 1) / (m + 1)``, ``|s| < 0.172`` (11 terms: float64's
    precision)."""
    F = _F()
    e = x * 0.0
    for s in (32, 16, 8, 4, 2, 1):
        c = F.less(x, 2.0 ** -s)
        x = F.where(c, x * 2.0 ** s, x)
        e = F.where(c, e - float(s), e)
    c = F.less(x, 0.7071067811865476)
    x = F.where(c, x * 2.0, x)
    e = F.where(c, e - 1.0, e)
    s = (x - 1.0) / (x + 1.0)
    s2 = s * s
    poly = _horner(s2, [1.0 / (2 * k + 1) for k in range(10, -1, -1)])
    return e * LN2 + 2.0 * s * poly


def ndtri(p):
    """The inverse standard normal CDF of float64 ``p`` in (0, 1) (Acklam's approximation)."""
    F = _F()
    q = p - 0.5
    r = q * q
    central = _horner(r, _A) * q / _horner(r, _B, 1.0)
    lower = F.less(p, 0.5)
    pt = F.where(lower, p, 1.0 - p)                   # exact: Sterbenz for p >= 1/2
    t = F.sqrt(log_exact(pt) * -2.0)
    tail = _horner(t, _C) / _horner(t, _D, 1.0)       # the lower tail's (negative) value
    tail = F.where(lower, tail, -tail)
    return F.where(F.less_equal(F.abs(q), 0.5 - P_LOW), central, tail)


def standard_normal(u):
    """N(0, 1) draws (float64) from float64 uniforms ``u`` in [0, 1) (multiples of 2**-53)."""
    return ndtri(u + 2.0 ** -54)


def truncated_standard_normal(u):
    """N(0, 1) draws truncated to [-2, 2] (float64) from float64 uniforms in [0, 1)."""
    F = _F()
    z = ndtri((u + 2.0 ** -54) * PHI_SPAN + PHI_M2)
    return F.clip(z, -2.0, 2.0)

