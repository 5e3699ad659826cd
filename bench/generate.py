"""Seeded, deterministic generator of realistic (and realistically dirty) CRM contacts.

Used for the bundled demo data (mappings/demo/contacts.csv, seed 20261101, 20,000 rows) and
for the benchmark. Every date is relative to a fixed reference date (2026-11-01), never the
wall clock, so the same (n, seed) always gives the same bytes.

Distributions: lifecycle stages with typical funnel shares, long-tailed revenue (log-normal
order values), power-law order counts, recency skewed towards the last few weeks, and about
1-2% of dirty values per column: "1,000" and "n/a" numbers, "yesterday" and "2026-02-30"
dates, case/whitespace variants ("  Customer "), empty strings, invalid emails, phones in
national / E.164 / spaced / dashed forms, and some competitor addresses.

    python bench/generate.py --n 20000 --seed 20261101 -o mappings/demo/contacts.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

REFERENCE = np.datetime64("2026-11-01T00:00:00", "s")
DEMO_SEED = 20261101
DEMO_ROWS = 20_000
GENERATED_WITH_NUMPY = "2.4"  # numpy does not promise identical streams across versions

COLUMNS = ["id", "email", "firstname", "lastname", "phone", "country", "lifecyclestage",
           "hs_email_optout", "ads_consent", "num_employees", "industry", "last_order_date",
           "order_count", "total_revenue", "last_login", "projects", "email_clicks_30d",
           "page_views_30d", "interests", "created_at"]

FIRST = ["James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David",
         "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
         "Sarah", "Charles", "Karen", "Daniel", "Lisa", "Matthew", "Nancy", "Anthony", "Sandra",
         "Mark", "Ashley", "Steven", "Emily", "Paul", "Donna", "Andrew", "Michelle", "Oliver",
         "Amelia", "Harry", "Isla", "Jack", "Ava", "Noah", "Mia", "Lukas", "Hannah", "Leon",
         "Lena", "Finn", "Emma", "Hugo", "Chloe", "Louis", "Camille", "Lucas", "Manon", "Liam",
         "Olivia", "Ethan", "Zoe", "Mateo", "Sofia", "Aarav", "Priya", "Wei", "Mei", "Yuki",
         "Kenji", "Omar", "Fatima", "Diego", "Lucia", "Sven", "Ingrid", "Pierre", "Juliette",
         "Marco", "Giulia"]
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
        "Rodriguez", "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor",
        "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis",
        "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Evans", "Hughes",
        "Roberts", "Patel", "Khan", "Murphy", "O'Brien", "Müller", "Schmidt", "Schneider",
        "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Dubois", "Durand", "Lefebvre", "Moreau",
        "Laurent", "Bernard", "Rossi", "Russo", "Tremblay", "Gagnon", "Nguyen", "Chen", "Wang",
        "Kim", "Singh", "Kumar", "Silva", "Santos", "Novak", "Jansen", "Andersson", "Nielsen",
        "Visser", "Bakker"]
FREE_DOMAINS = ["mail.example", "inbox.example", "post.example", "webmail.example"]
COMPANY_WORDS = ["acme", "northwind", "globex", "initech", "umbrella", "hooli", "vandelay",
                 "stark", "wayne", "tyrell", "cyberdyne", "soylent", "massive", "wonka",
                 "gringotts", "oscorp", "dunder", "contoso", "fabrikam", "tailspin", "litware",
                 "adventure", "fourth", "coho", "lucerne", "proseware", "wingtip"]
COMPETITORS = ["rival.example", "other.example"]
COUNTRIES = ["US", "GB", "DE", "FR", "CA", "AU", "NL", "ES", "IT", "IN", "BR", "SE", ""]
COUNTRY_P = [.46, .12, .09, .07, .07, .04, .03, .02, .02, .02, .02, .01, .03]
STAGES = ["subscriber", "lead", "mql", "sql", "opportunity", "customer", "trial"]
STAGE_P = [.28, .25, .12, .06, .04, .16, .09]
INDUSTRIES = ["Software", "Retail", "Financial Services", "Healthcare", "Manufacturing",
              "Education", "Media", "Professional Services", "Logistics", "Hospitality",
              "Real Estate", "Non-profit", ""]
INTERESTS = ["analytics", "automation", "email", "ads", "crm", "integrations", "reporting", "ai"]
BOOL_FORMS = {True: ["true", "TRUE", "yes", "Yes", "1", "true"],
              False: ["false", "FALSE", "no", "No", "0", "false"]}
BAD_NUMBERS = ["1,000", "n/a", "N/A", "12k", "-", "unknown", "1 200"]
BAD_DATES = ["yesterday", "2026-02-30", "31/12/2025", "n/a", "last week", "2026-13-01", "0000-00-00"]
BAD_EMAILS = ["{f}.{l}@", "{f} {l}@{d}", "{f}.{l}.{d}", "n/a", "{f}@@{d}", "{f}.{l}@{d}."]
PHONE_CC = {"US": "1", "CA": "1", "GB": "44", "DE": "49", "FR": "33", "AU": "61", "NL": "31",
            "ES": "34", "IT": "39", "IN": "91", "BR": "55", "SE": "46"}
DAY = np.timedelta64(86400, "s")


def _pick(rng: np.random.Generator, items: list[str], p: list[float] | None, n: int) -> np.ndarray:
    return np.asarray(items, dtype=object)[rng.choice(len(items), size=n, p=p)]


def _dirty(rng: np.random.Generator, col: list[str], share: float, forms: list[str]) -> None:
    """Replace about `share` of the non-empty values with unparseable ones, in place."""
    hit = np.flatnonzero(rng.random(len(col)) < share)
    bad = rng.integers(0, len(forms), size=len(hit))
    for i, b in zip(hit.tolist(), bad.tolist(), strict=True):
        if col[i] != "":
            col[i] = forms[b]


def _blank(rng: np.random.Generator, col: list[str], share: float) -> None:
    for i in np.flatnonzero(rng.random(len(col)) < share).tolist():
        col[i] = ""


def _iso_dates(ts: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(ts.astype("datetime64[D]"), unit="D")


def _epoch_ms(ts: np.ndarray) -> np.ndarray:
    return (ts.astype("datetime64[D]").astype("datetime64[ms]").astype(np.int64)).astype(str)


def _stamp(rng: np.random.Generator, ts: np.ndarray) -> list[str]:
    """Datetimes in the forms CRMs export: Z, an offset, or none (UTC)."""
    base = np.datetime_as_string(ts, unit="s")
    form = rng.choice(3, size=len(ts), p=[.8, .1, .1])
    out = []
    for s, f in zip(base.tolist(), form.tolist(), strict=True):
        out.append(s + "Z" if f == 0 else s + "+00:00" if f == 1 else s)
    return out


def _names(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return _pick(rng, FIRST, None, n), _pick(rng, LAST, None, n)


def _emails(rng: np.random.Generator, first: np.ndarray, last: np.ndarray) -> list[str]:
    n = len(first)
    company = rng.random(n) < 0.55
    domain = np.where(company, _pick(rng, COMPANY_WORDS, None, n) + ".example",
                      _pick(rng, FREE_DOMAINS, None, n))
    comp = rng.random(n) < 0.006
    domain = np.where(comp, _pick(rng, COMPETITORS, None, n), domain)
    style = rng.choice(4, size=n, p=[.5, .2, .2, .1])
    suffix = rng.integers(1, 999, size=n)
    kind = rng.random(n)
    out = []
    for i in range(n):
        f = first[i].lower().replace("'", "")
        lname = last[i].lower().replace("'", "").replace(" ", "").replace("ü", "ue")
        local = (f"{f}.{lname}", f"{f[0]}{lname}", f"{f}{suffix[i]}", f"{f}_{lname}{suffix[i]}")[style[i]]
        k = kind[i]
        if k < 0.04:
            out.append("")
        elif k < 0.05:
            out.append(BAD_EMAILS[i % len(BAD_EMAILS)].format(f=f, l=lname, d=domain[i]))
        elif k < 0.08:
            out.append(f"  {local.title()}@{domain[i].upper()} ")
        else:
            out.append(f"{local}@{domain[i]}")
    return out


def _phones(rng: np.random.Generator, country: np.ndarray) -> list[str]:
    n = len(country)
    digits = rng.integers(200, 999, size=(n, 3))
    line = rng.integers(0, 10000, size=n)
    form = rng.choice(5, size=n, p=[.3, .25, .2, .15, .1])
    kind = rng.random(n)
    out = []
    for i in range(n):
        if kind[i] < 0.25:
            out.append("")
            continue
        if kind[i] < 0.262:
            out.append(("n/a", "12", "000", "call me", "+")[i % 5])
            continue
        cc = PHONE_CC.get(country[i], "1")
        a, b, c, d = int(digits[i, 0]), int(digits[i, 1]), int(digits[i, 2]), int(line[i])
        if cc == "1":
            nat = (f"({a}) {b}-{d:04d}", f"{a}-{b}-{d:04d}", f"{a}{b}{d:04d}",
                   f"{a}.{b}.{d:04d}", f"{a} {b} {d:04d}")[form[i]]
            e164 = f"+1{a}{b}{d:04d}"
        else:
            nat = (f"0{a} {b} {d:04d}", f"0{a}-{b}{d:04d}", f"0{a}{b}{d:04d}",
                   f"(0{a}) {b} {d:04d}", f"0{a} {b}{c}")[form[i]]
            e164 = f"+{cc}{a}{b}{d:04d}"
        style = kind[i] % 0.1
        out.append(e164 if style < 0.03 else f"+{cc} {nat.lstrip('0(').replace(')', '')}"
                   if style < 0.05 else nat)
    return out


def _bools(rng: np.random.Generator, truth: np.ndarray, empty: float) -> list[str]:
    form = rng.integers(0, 6, size=len(truth))
    out = [BOOL_FORMS[bool(t)][f] for t, f in zip(truth.tolist(), form.tolist(), strict=True)]
    _blank(rng, out, empty)
    return out


def _numbers(values: np.ndarray, known: np.ndarray, fmt: str = "{:d}") -> list[str]:
    return [fmt.format(v) if k else "" for v, k in zip(values.tolist(), known.tolist(), strict=True)]


def _variants(rng: np.random.Generator, col: np.ndarray, share: float) -> list[str]:
    """Case and whitespace variants of enumeration values ("  Customer ", "LEAD")."""
    out = col.tolist()
    hit = np.flatnonzero(rng.random(len(out)) < share)
    for i, v in zip(hit.tolist(), rng.integers(0, 3, size=len(hit)).tolist(),
                    strict=True):
        if out[i]:
            out[i] = (f"  {out[i].title()} ", out[i].upper(), f"{out[i]} ")[v]
    return out


def _interests(rng: np.random.Generator, n: int) -> list[str]:
    count = rng.choice(5, size=n, p=[.35, .3, .2, .1, .05])
    picks = rng.permuted(np.tile(np.arange(len(INTERESTS)), (n, 1)), axis=1)
    spaced = rng.random(n) < 0.03
    out = []
    for i in range(n):
        vals = [INTERESTS[j] for j in picks[i, :count[i]]]
        out.append(("; " if spaced[i] else ";").join(v.title() if spaced[i] else v for v in vals))
    return out


def rows(n: int, seed: int) -> dict[str, list[str]]:
    """The contacts as columns of strings (CSV cells), deterministic in (n, seed)."""
    rng = np.random.default_rng(seed)
    first, last = _names(rng, n)
    country = _pick(rng, COUNTRIES, COUNTRY_P, n)
    stage = _pick(rng, STAGES, STAGE_P, n)
    is_customer = stage == "customer"
    is_trial = stage == "trial"

    age_days = np.minimum(rng.exponential(700, n), 2900) + 1  # contact age, skewed recent
    created = REFERENCE - (age_days * DAY).astype("timedelta64[s]")

    # orders: customers always, a few opportunities / churned leads too (power-law counts)
    buyer = is_customer | (rng.random(n) < np.where(stage == "opportunity", .25, .04))
    orders = np.where(buyer, np.minimum(rng.zipf(1.9, n), 400), 0)
    revenue = np.where(buyer, np.round(orders * rng.lognormal(4.6, 0.9, n) *
                                       rng.lognormal(0, .35, n), 2), 0.0)
    recency = np.minimum(rng.exponential(90, n) / np.sqrt(np.maximum(orders, 1)) ** .5, age_days)
    last_order = REFERENCE - (recency * DAY).astype("timedelta64[s]")

    order_date = _iso_dates(last_order).tolist()
    epoch = _epoch_ms(last_order).tolist()
    use_epoch = rng.random(n) < 0.1
    order_date = [e if u else d for d, e, u in zip(order_date, epoch, use_epoch.tolist(),
                                                                 strict=True)]
    order_date = [d if b else "" for d, b in zip(order_date, buyer.tolist(), strict=True)]
    _dirty(rng, order_date, 0.015, BAD_DATES)

    order_count = _numbers(orders, buyer | (rng.random(n) < 0.3))
    _dirty(rng, order_count, 0.01, BAD_NUMBERS)
    total_revenue = _numbers(revenue, buyer | (rng.random(n) < 0.3), "{:.2f}")
    _dirty(rng, total_revenue, 0.015, BAD_NUMBERS + ["$1,250.00", "1.200,50"])

    product_user = is_customer | is_trial | (rng.random(n) < .1)
    login_days = rng.exponential(np.where(is_trial, 6, 35), n)
    last_login = REFERENCE - (login_days * 86400).astype("timedelta64[s]")
    login = _stamp(rng, last_login)
    login = [v if p else "" for v, p in zip(login, product_user.tolist(), strict=True)]
    _dirty(rng, login, 0.01, BAD_DATES)
    projects = np.where(is_trial, rng.poisson(2.2, n), rng.poisson(4, n))
    projects_col = _numbers(projects, product_user)
    _dirty(rng, projects_col, 0.01, BAD_NUMBERS)

    engaged = rng.gamma(0.6, 1.0, n)  # latent engagement drives clicks and views
    clicks = rng.poisson(engaged * 2.5)
    views = rng.poisson(engaged * 9 + rng.exponential(1.5, n))
    clicks_col = _numbers(clicks, rng.random(n) > .05)
    views_col = _numbers(views, rng.random(n) > .05)
    _dirty(rng, clicks_col, 0.01, BAD_NUMBERS)
    _dirty(rng, views_col, 0.01, BAD_NUMBERS)

    employees = np.round(rng.lognormal(3.6, 1.9, n)).astype(np.int64) + 1
    employees_col = _numbers(np.minimum(employees, 250_000), rng.random(n) > .12)
    _dirty(rng, employees_col, 0.02, ["1,000", "n/a", "250+", "10-50", "5,000", "unknown"])

    optout = rng.random(n) < 0.07
    consent = rng.random(n) < np.where(optout, .05, .62)

    return {
        "id": [f"c{i:06d}" for i in range(1, n + 1)],
        "email": _emails(rng, first, last),
        "firstname": _variants(rng, first, 0.01),
        "lastname": _variants(rng, last, 0.01),
        "phone": _phones(rng, country),
        "country": _variants(rng, country, 0.03),
        "lifecyclestage": _blank_some(rng, _variants(rng, stage, 0.04), 0.02),
        "hs_email_optout": _bools(rng, optout, 0.25),
        "ads_consent": _bools(rng, consent, 0.1),
        "num_employees": employees_col,
        "industry": _variants(rng, _pick(rng, INDUSTRIES, None, n), 0.02),
        "last_order_date": order_date,
        "order_count": order_count,
        "total_revenue": total_revenue,
        "last_login": login,
        "projects": projects_col,
        "email_clicks_30d": clicks_col,
        "page_views_30d": views_col,
        "interests": _interests(rng, n),
        "created_at": _stamp(rng, created),
    }


def _blank_some(rng: np.random.Generator, col: list[str], share: float) -> list[str]:
    _blank(rng, col, share)
    return col


def generate(n: int, seed: int, path: str | Path) -> Path:
    """Write n contacts (header row first) to `path` as CSV; deterministic in (n, seed)."""
    cols = rows(n, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(zip(*(cols[c] for c in COLUMNS), strict=True))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=DEMO_ROWS, help="number of contacts")
    ap.add_argument("--seed", type=int, default=DEMO_SEED)
    ap.add_argument("-o", "--output", default="contacts.csv")
    args = ap.parse_args(argv)
    print(generate(args.n, args.seed, args.output))


if __name__ == "__main__":
    main()
