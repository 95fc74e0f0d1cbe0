"""The train-trigger tests' independent computation of drift, with numpy and scipy, on the same
samples the service profiled.

  drift_check.py < samples.json

samples.json: {"numeric": {"<feature>": {"reference": [...], "current": [...]}},
               "categorical": {"<feature>": {"reference": [...], "current": [...]}}}

prints {"<feature>": {"psi": ..., "ks": ..., "wasserstein": ...}} for numeric features and
{"<feature>": {"js": ...}} for categorical ones:
- psi: ten bins cut at the reference's deciles (numpy.quantile, method "lower"), a value going
  to the bin of the number of edges below it, proportions floored at 1e-4,
  sum((c - r) * ln(c / r));
- ks: scipy.stats.ks_2samp(reference, current).statistic;
- wasserstein: scipy.stats.wasserstein_distance(reference, current);
- js: scipy.spatial.distance.jensenshannon of the category proportions, base 2.
"""

import json
import sys

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance


def psi(reference, current):
    edges = np.unique(np.quantile(reference, np.arange(1, 10) / 10.0, method="lower"))

    def proportions(x):
        bins = np.searchsorted(edges, x, side="left")
        counts = np.bincount(bins, minlength=len(edges) + 1)
        return np.maximum(counts / len(x), 1e-4)

    r, c = proportions(reference), proportions(current)
    return float(np.sum((c - r) * np.log(c / r)))


def main():
    spec = json.load(sys.stdin)
    out = {}
    for name, s in spec.get("numeric", {}).items():
        r, c = np.asarray(s["reference"], float), np.asarray(s["current"], float)
        out[name] = {
            "psi": psi(r, c),
            "ks": float(ks_2samp(r, c).statistic),
            "wasserstein": float(wasserstein_distance(r, c)),
        }
    for name, s in spec.get("categorical", {}).items():
        cats = sorted(set(s["reference"]) | set(s["current"]))
        p = np.array([s["reference"].count(k) for k in cats], float)
        q = np.array([s["current"].count(k) for k in cats], float)
        out[name] = {"js": float(jensenshannon(p / p.sum(), q / q.sum(), base=2))}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        print(f"drift_check.py: {exc}", file=sys.stderr)
        sys.exit(1)
