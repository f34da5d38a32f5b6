"""Fault tests: server restarts, a real cluster, a chaos proxy (see docs/reliability.md)."""
