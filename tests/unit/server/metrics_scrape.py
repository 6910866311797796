"""Parse exposition text into ``{(sample name, labels): value}`` with prometheus_client's parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, /, **labels: str) -> float:
    """The value of one sample; KeyError naming what exists when it is missing."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        near = sorted(str(dict(k[1])) for k in samples if k[0] == name)
        raise KeyError(f"no sample {name}{labels}; have {near}")
    return samples[key]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def histogram_quantile(samples: Samples, name: str, q: float, **labels: str) -> float:
    """PromQL's histogram_quantile over one series (linear inside the bucket)."""
    buckets = sorted(
        (float(dict(k[1])["le"]), v)
        for k, v in samples.items()
        if k[0] == f"{name}_bucket" and {**dict(k[1])} == {**labels, "le": dict(k[1])["le"]}
    )
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(
                count - lower_count, 1e-12
            )
        lower_bound, lower_count = bound, count
    return float("nan")
