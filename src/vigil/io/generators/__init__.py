"""Synthetic event streams with ground-truth labels, for demos, tests and benchmarks."""

from vigil.io.generators.transactions import (
    TransactionSpec,
    generate_transactions,
    summary,
    write_csv,
    write_jsonl,
)

__all__ = ["TransactionSpec", "generate_transactions", "summary", "write_csv", "write_jsonl"]
