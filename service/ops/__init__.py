"""Cross-cutting operations: metrics and logs, used by every stage and using none of them."""
