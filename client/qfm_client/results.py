"""Results files: the JSON-lines journal every job appends to, and the Parquet file a job with a
.parquet --out writes from it when it completes (Parquet cannot be appended line by line, and
the journal is what makes a crashed job resumable)."""
from __future__ import annotations

import json
from pathlib import Path

from qfm_core.files import atomic_path


def journal_path(out: Path) -> Path:
    """Where results are appended: --out itself, or <out>.journal.jsonl beside a .parquet --out."""
    return out.with_name(out.name + ".journal.jsonl") if out.suffix.lower() == ".parquet" else out


def _schema(pa):
    neighbor = pa.struct([("id", pa.int64()), ("score", pa.float64()), ("distance", pa.float64())])
    return pa.schema([("item", pa.string()), ("score", pa.float64()), ("error_code", pa.string()),
                      ("error", pa.string()), ("endpoint", pa.string()), ("neighbors", pa.list_(neighbor))])


def write_parquet(journal: Path, out: Path) -> int:
    """Every record of the journal, in its order, as one Parquet file (written whole or not at
    all); returns the number of rows."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("Parquet results need pyarrow: pip install 'qfm-client[parquet]'") from e
    schema = _schema(pa)
    rows = []
    for line in journal.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            rows.append({name: rec.get(name) for name in schema.names})
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return len(rows)
