"""``cache_tests.py`` is a script run by hand against a cache-tests checkout (node, npm and
the suite's own origin server): pytest never collects it."""

collect_ignore = ["cache_tests.py"]
