"""The feature tests' independent computation: the expected feature rows of each window type,
by SQL in DuckDB over the same input records the feature service read.

  features_sql.py < input.json

input.json: {"events": [{"user", "at" (ms), "kind", "amount" (or null), "page"}, ...],
             "views": [{"name", "type": "tumbling"|"hopping"|"session", "size", "slide", "gap"} (ms)]}

prints {"<view>": [{"user", "window_start", "window_end", "n", "buys", "spent", "avg_amount",
"min_amount", "max_amount", "sd_amount", "pages", "last_kind", "amounts"}, ...], ...}, where
"amounts" is the window's non-null amounts sorted (the test checks the sketch's quantile against
them within its stated error). Aggregates follow SQL: count(*), count(*) FILTER, sum (0 when no
value), avg, min, max, stddev_samp (null below two values), count(DISTINCT), arg_max(kind, at).
"""

import json
import sys

import duckdb

AGGREGATES = """
    count(*) AS n,
    count(*) FILTER (WHERE kind = 'buy') AS buys,
    coalesce(sum(amount), 0) AS spent,
    avg(amount) AS avg_amount,
    min(amount) AS min_amount,
    max(amount) AS max_amount,
    stddev_samp(amount) AS sd_amount,
    count(DISTINCT page) AS pages,
    arg_max(kind, ts) FILTER (WHERE kind IS NOT NULL) AS last_kind,
    list_sort(list(amount) FILTER (WHERE amount IS NOT NULL)) AS amounts
"""


def windows_sql(view):
    kind = view["type"]
    if kind == "tumbling":
        size = int(view["size"])
        return f"""
            SELECT "user", (ts // {size}) * {size} AS window_start,
                   (ts // {size}) * {size} + {size} AS window_end, {AGGREGATES}
            FROM events GROUP BY ALL"""
    if kind == "hopping":
        size, slide = int(view["size"]), int(view["slide"])
        return f"""
            WITH w AS (
                SELECT e.*, (ts // {slide}) * {slide} - k * {slide} AS window_start
                FROM events e, range(0, {size // slide}) r(k)
            )
            SELECT "user", window_start, window_start + {size} AS window_end, {AGGREGATES}
            FROM w WHERE window_start + {size} > ts GROUP BY ALL"""
    if kind == "session":
        gap = int(view["gap"])
        return f"""
            WITH o AS (
                SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY "user" ORDER BY ts) < {gap}
                               THEN 0 ELSE 1 END AS starts
                FROM events
            ), s AS (
                SELECT *, sum(starts) OVER (PARTITION BY "user" ORDER BY ts
                                            ROWS UNBOUNDED PRECEDING) AS session
                FROM o
            )
            SELECT "user", min(ts) AS window_start, max(ts) + {gap} AS window_end, {AGGREGATES}
            FROM s GROUP BY "user", session"""
    raise ValueError(f"unknown window type {kind}")


def main():
    spec = json.load(sys.stdin)
    con = duckdb.connect()
    con.execute(
        'CREATE TABLE events ("user" VARCHAR, ts BIGINT, kind VARCHAR, amount DOUBLE, page VARCHAR)'
    )
    con.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
        [[e["user"], e["at"], e["kind"], e["amount"], e["page"]] for e in spec["events"]],
    )
    out = {}
    for view in spec["views"]:
        cur = con.execute(windows_sql(view))
        columns = [d[0] for d in cur.description]
        out[view["name"]] = [dict(zip(columns, row)) for row in cur.fetchall()]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        print(f"features_sql.py: {exc}", file=sys.stderr)
        sys.exit(1)
