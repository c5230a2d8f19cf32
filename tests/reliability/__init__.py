"""Reliability and security suite: real processes, real SQLite files, bounded waits."""
