"""Paths below `/qrs/` match case-insensitively, as on the platform (SPEC 9.4).

Clients write `/qrs/license/ProfessionalAccessType/full`; every route here is registered in
lower case. `CaseFoldedPaths` is a catch-all resource under `/qrs/`: the router reaches it only
after every registered route failed to match, and it resolves the lower-cased path instead, so
the routes, their handlers and the middlewares see the route the path names. A path without
upper-case letters costs nothing extra. The `/qrs/` prefix itself stays case-sensitive, so
the auth middleware's check of it cannot be bypassed by spelling it differently.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute, UrlMappingMatchInfo
from yarl import URL

PREFIX = "/qrs/"


class CaseFoldedPaths(AbstractResource):
    """Resolves a mixed-case path below `/qrs/` as its lower-case form."""

    def __init__(self, router: web.UrlDispatcher) -> None:
        super().__init__()
        self._router = router

    @property
    def canonical(self) -> str:
        """Return the path pattern this resource answers (everything below `/qrs/`)."""
        return PREFIX + "{path:.*}"

    def url_for(self, **kwargs: str) -> URL:
        """Refuse: this resource names no single URL."""
        raise NotImplementedError("CaseFoldedPaths has no URL of its own")

    def add_prefix(self, prefix: str) -> None:
        """Refuse: the resource is only used on the root application."""
        raise NotImplementedError("CaseFoldedPaths cannot be mounted in a sub-application")

    def get_info(self) -> dict[str, str]:  # type: ignore[override]
        """Describe the resource for introspection."""
        return {"prefix": PREFIX}

    def raw_match(self, path: str) -> bool:
        """Tell whether `path` is this resource's pattern."""
        return path == self.canonical

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        """Resolve the lower-cased path when the path as given matched no route."""
        path = request.rel_url.path
        if not path.startswith(PREFIX) or path == path.lower():
            return None, set()
        folded = request.clone(rel_url=request.rel_url.with_path(path.lower()))
        match = await self._router.resolve(folded)
        if match.http_exception is not None:
            allowed: set[str] = set(getattr(match.http_exception, "allowed_methods", ()))
            return None, set(allowed)
        return match, set()

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[AbstractRoute]:
        return iter(())


def install(app: web.Application) -> None:
    """Register the catch-all last, so that every route as written is tried first."""
    app.router.register_resource(CaseFoldedPaths(app.router))
