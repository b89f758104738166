"""
The PromQL functions a query held to a tenant by label may call: only
those reviewed as reading nothing but the series its selectors name.

Every selector of the query carries the tenant's matcher, so a function
that computes from its arguments cannot reach another tenant's series.
One that fetches series of its own can: Prometheus 3's C{info()} joins
C{target_info} series that no selector of the query names.  A function
the parser knows and this list does not (one added to Prometheus later,
or registered with promql-parser's C{register_extra_functions}) is
refused until it is reviewed: the boundary fails closed.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Functions refused, and why, in the words of the refusal.
REFUSED_FUNCTIONS: Mapping[str, str] = {
    "info": "it joins target_info series that no selector of the query names",
}

#: Functions reviewed: each computes from its arguments only (the series
#: of the selectors it is given, numbers, strings naming labels of those
#: series).  C{absent} and C{absent_over_time} answer with the labels of
#: their selector's equality matchers, the tenant's own among them;
#: C{label_replace} and C{label_join} rename labels of series already
#: held to the tenant, and may rename the tenant's label on the answer,
#: which selects nothing.
ALLOWED_FUNCTIONS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time
    ceil changes clamp clamp_max clamp_min cos cosh count_over_time
    day_of_month day_of_week day_of_year days_in_month deg delta deriv
    double_exponential_smoothing exp first_over_time floor histogram_avg
    histogram_count histogram_fraction histogram_quantile histogram_stddev
    histogram_stdvar histogram_sum hour idelta increase irate label_join
    label_replace last_over_time ln log10 log2 mad_over_time max_over_time
    min_over_time minute month pi predict_linear present_over_time
    quantile_over_time rad rate resets round scalar sgn sin sinh sort
    sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time
    stdvar_over_time sum_over_time tan tanh time timestamp ts_of_first_over_time
    ts_of_last_over_time ts_of_max_over_time ts_of_min_over_time vector year
    """.split()
)


def function_refusal(name: str) -> str | None:
    """
    Why C{name} may not be called under label tenancy, or L{None} when it
    may.
    """
    if name in ALLOWED_FUNCTIONS:
        return None
    why = REFUSED_FUNCTIONS.get(
        name, "it has not been reviewed as reading only the series of the query's selectors"
    )
    return f"the function {name}() is not allowed on this gateway's label-tenancy reads: {why}"
