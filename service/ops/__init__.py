"""Cross-cutting operations: metrics, logs and random tokens, used by every stage and using none."""
