"""Results stores for sweeps: one row per finished point (SQLite by default; see :mod:`.sqlite`)."""

from .sqlite import COLUMNS, SCHEMA_VERSION, STATUSES, ResultsStore, decode_metrics, encode_metrics

__all__ = ["COLUMNS", "SCHEMA_VERSION", "STATUSES", "ResultsStore", "decode_metrics", "encode_metrics"]
