"""The demo's second source: the shop's order history (mappings/demo/orders.csv).

The CRM export's order fields (bench/generate.py) are drawn for segment rules, not from a
purchase process, so a BG/NBD fit finds no maximum on them. The shop's export is drawn from the
models' own story instead (Fader, Hardie & Lee 2005; Fader & Hardie 2013), seeded: per
customer a purchase rate λ ~ Gamma(r, α), a drop-out chance p ~ Beta(a, b) after each repeat
purchase, purchases as a Poisson process from the first order, and an average spend from
Gamma-Gamma. One row per customer of the demo's first 8,000 contacts who ordered, as of the
demo's date (2026-11-01):

    python bench/demo_orders.py            # writes mappings/demo/orders.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

REFERENCE = np.datetime64("2026-11-01", "D")
SEED = 20261101
TRUE = {"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.4, "p": 6.0, "q": 3.8, "gamma": 15.0}
OUT = Path(__file__).resolve().parent.parent / "mappings" / "demo" / "orders.csv"


def rows(n: int = 8000, seed: int = SEED) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    t = TRUE
    lam = rng.gamma(t["r"], 1 / t["alpha"], n)
    drop = rng.beta(t["a"], t["b"], n)
    age = rng.integers(7, 730, n)                 # days since the first order
    arrivals = rng.poisson(lam * age)
    x = np.minimum(arrivals, rng.geometric(drop))  # drops out right after its last repeat
    # the x-th of `arrivals` uniform arrival times in (0, age) is age * Beta(x, arrivals-x+1)
    t_x = np.where(x > 0, np.floor(age * rng.beta(np.maximum(x, 1), arrivals - x + 1)), 0)
    nu = rng.gamma(t["q"], 1 / t["gamma"], n)
    revenue = rng.gamma(t["p"] * (x + 1), 1 / nu)
    first = REFERENCE - age.astype("timedelta64[D]")
    last = first + t_x.astype("int64").astype("timedelta64[D]")
    return [[f"c{i + 1:06d}", str(f), str(la), str(int(k) + 1), f"{v:.2f}"]
            for i, (f, la, k, v) in enumerate(zip(first, last, x, revenue, strict=True))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=OUT)
    args = ap.parse_args()
    with args.out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "first_order_date", "last_order_date", "order_count", "total_spend"])
        w.writerows(rows())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
