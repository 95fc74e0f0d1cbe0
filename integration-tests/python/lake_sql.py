"""DuckDB as an outside reader of the lake, for the archive tests: runs SQL statements in one
in-memory DuckDB session and prints their results as one JSON document.

  lake_sql.py "SQL" ["SQL" ...]

prints [{"columns": [...], "rows": [[...], ...]}, ...], one entry per statement (statements that
return nothing, such as SET, give empty columns and rows). Values JSON cannot carry (DECIMAL,
DATE, TIMESTAMP, UUID, ...) are printed as their string form. Errors go to stderr, exit code 1.
"""

import json
import sys

import duckdb


def main(statements):
    con = duckdb.connect()
    results = []
    for sql in statements:
        cur = con.execute(sql)
        if cur.description is None:
            results.append({"columns": [], "rows": []})
            continue
        columns = [d[0] for d in cur.description]
        rows = [list(row) for row in cur.fetchall()]
        results.append({"columns": columns, "rows": rows})
    json.dump(results, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        main(sys.argv[1:])
    except duckdb.Error as e:
        print(f"duckdb: {e}", file=sys.stderr)
        sys.exit(1)
