"""Per-route freshness for FastAPI: the :func:`cache_for` dependency.

FastAPI users have Starlette; nothing else imports this module's dependency target, so the
middleware's core stays free of any framework.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ._errors import ConfigurationError

__all__ = ["cache_for"]


def cache_for(
    seconds: float,
    *,
    public: bool = False,
    stale_while_revalidate: float | None = None,
) -> Callable[..., None]:
    """A FastAPI dependency that makes a route's responses fresh for ``seconds``.

    It sets ``Cache-Control: max-age=<seconds>`` (plus ``stale-while-revalidate``) unless
    the route sets its own ``Cache-Control``. The explicit freshness is what
    :class:`CacheMiddleware` needs, whatever its ``ttl``::

        @app.get("/report", dependencies=[Depends(cache_for(300))])
        async def report() -> dict[str, str]: ...

    Requests with ``Authorization`` are then not answered from the cache nor stored.
    ``public=True`` adds ``public``, which lets a shared cache store and serve the
    response of an authorized request to every client (RFC 9111 §3.5): only for routes
    whose response is the same whoever asks, never behind an auth dependency.

    Without FastAPI, return the header yourself:
    ``Response(..., headers={"Cache-Control": "max-age=300"})``.
    """
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ConfigurationError(f"seconds={seconds!r}: expected seconds >= 0")
    directives = ["public"] if public else []
    directives.append(f"max-age={int(seconds)}")
    if stale_while_revalidate is not None:
        directives.append(f"stale-while-revalidate={int(stale_while_revalidate)}")
    value = ", ".join(directives)

    from starlette.responses import Response  # FastAPI users have it; others never call this

    def dependency(response: Response) -> None:
        if "cache-control" not in response.headers:
            response.headers["cache-control"] = value

    # FastAPI reads the annotation to inject the Response; with postponed annotations it
    # would find the string "Response" and could not resolve it from this module.
    dependency.__annotations__ = {"response": Response, "return": None}
    return dependency
