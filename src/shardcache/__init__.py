"""shardcache: an asyncio-native persistent cache on SQLite shards.

Example::

    from shardcache import AsyncCache, acached

    cache = AsyncCache("/tmp/cache")
    await cache.set("k", {"v": 1}, ttl=60)
    await cache.get("k")

    @acached(cache, ttl=60)
    async def slow(x: int) -> int: ...
"""

from ._cache import AsyncCache
from ._codec import Compressor, Serializer
from ._decorator import CachedFunction, acached
from ._errors import (
    CacheClosedError,
    CacheCorruptError,
    CacheError,
    CacheTimeoutError,
    ConfigurationError,
    SerializationError,
)
from ._types import CacheBackend, CacheStats, CheckReport, Entry, ShardStats

__version__ = "0.1.0"

__all__ = [
    "AsyncCache",
    "CacheBackend",
    "CacheClosedError",
    "CacheCorruptError",
    "CacheError",
    "CacheStats",
    "CacheTimeoutError",
    "CachedFunction",
    "CheckReport",
    "Compressor",
    "ConfigurationError",
    "Entry",
    "SerializationError",
    "Serializer",
    "ShardStats",
    "__version__",
    "acached",
]

# The public names read as defined here, not in the private module that holds them: in
# reprs, tracebacks, pickles and type checkers' messages (anyio does the same).
for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "").startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _name, _value
