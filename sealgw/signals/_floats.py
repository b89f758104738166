"""
Floats written the way Prometheus writes C{le} and C{quantile} label values.

Prometheus 3 normalises both labels, for every scrape format, to Go's
shortest C{strconv.FormatFloat(f, 'g', -1, 64)} with C{.0} appended to
whole numbers (C{0.05}, C{1.0}, C{100000.0}, C{1e+06}, C{+Inf}); Prometheus 2
did the same for protobuf scrapes, which is what a seal push carries.  The
same numbers therefore name the same series whichever way they arrive.
"""

from __future__ import annotations

import math
from decimal import Decimal


def go_format_g(value: float) -> str:
    """
    Go's C{strconv.FormatFloat(value, 'g', -1, 64)}: the shortest digits
    that read back as C{value}, in exponent form when the decimal exponent
    is below -4 or at least 6 (C{1e-05}, C{1e+06}, C{1.5e+300}).
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    # repr is the shortest round-tripping decimal, as Go's is.
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    digits = digits.lstrip("0")
    point = len(digits) + exponent  # value = 0.<digits> * 10**point
    prefix = "-" if sign else ""
    decimal_exponent = point - 1
    if decimal_exponent < -4 or decimal_exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exp_sign = "-" if decimal_exponent < 0 else "+"
        return f"{prefix}{mantissa}e{exp_sign}{abs(decimal_exponent):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def format_bound(value: float) -> str:
    """
    C{value} as an C{le} or C{quantile} label value: L{go_format_g}, with
    C{.0} added when the result has neither a point nor an exponent.
    """
    if value == 0:
        return "0.0"  # -0 too, as Prometheus writes it
    text = go_format_g(value)
    if text in ("NaN", "+Inf", "-Inf") or "." in text or "e" in text:
        return text
    return text + ".0"
