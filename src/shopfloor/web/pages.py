"""Dashboard pages and the login that turns an API token into an HttpOnly session cookie.

Each page is a small server-rendered shell (Jinja2) with the tenant's name and the user's role; its
script fetches everything else from the public API, exactly as any other client would. The browser's
EventSource cannot send an Authorization header, hence the cookie: ``api.deps`` accepts it as the
token. Static assets (our script and style, and the uPlot chart library with its licence) ship in
the package, so the dashboard works on a factory network without Internet access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from shopfloor import __version__
from shopfloor.domain.errors import ShopfloorError
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.services.auth import TokenAuthenticator

HERE = Path(__file__).parent
SESSION_COOKIE = "shopfloor_session"  # the same name api.deps reads
SESSION_MAX_AGE_S = 12 * 3600  # a control-room shift and then some
PAGES = {"overview": "Plant", "kpis": "KPIs", "alarms": "Alarms", "devices": "Devices"}


def install(app: FastAPI, auth: TokenAuthenticator) -> None:
    """Serve the dashboard from ``app`` under ``/`` (pages) and ``/static`` (assets)."""
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(_router(auth, Jinja2Templates(directory=HERE / "templates")))


def _router(auth: TokenAuthenticator, templates: Jinja2Templates) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def who(request: Request) -> TenantContext | None:
        try:
            ctx = auth.context_for(request.cookies.get(SESSION_COOKIE))
        except ShopfloorError:
            return None
        return ctx if ctx.tenant_id is not None else None

    def page(request: Request, name: str, **extra: object) -> Response:
        ctx = who(request)
        if ctx is None:
            return RedirectResponse("/login", status_code=303)
        return templates.TemplateResponse(request, f"{name}.html", {
            "page": name, "pages": PAGES, "tenant": ctx.tenant_slug, "role": ctx.role.value,
            "can_operate": ctx.role.allows(Role.OPERATOR), "version": __version__, **extra})

    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> Response:
        return page(request, "overview")

    @router.get("/machines/{asset_id}", response_class=HTMLResponse)
    def machine(request: Request, asset_id: int) -> Response:
        return page(request, "machine", asset_id=asset_id)

    @router.get("/kpis", response_class=HTMLResponse)
    def kpis(request: Request) -> Response:
        return page(request, "kpis")

    @router.get("/alarms", response_class=HTMLResponse)
    def alarms(request: Request) -> Response:
        return page(request, "alarms")

    @router.get("/devices", response_class=HTMLResponse)
    def devices(request: Request) -> Response:
        return page(request, "devices")

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        return templates.TemplateResponse(request, "login.html", {"error": None, "version": __version__})

    @router.post("/login", response_class=HTMLResponse)
    def login(request: Request, token: Annotated[str, Form()]) -> Response:
        error = None
        try:
            ctx = auth.context_for(token.strip())
            if ctx.tenant_id is None:
                error = "the dashboard shows one tenant's plant: sign in with a token of that tenant"
        except ShopfloorError as exc:
            error = str(exc)
        if error is not None:
            return templates.TemplateResponse(request, "login.html", {"error": error, "version": __version__},
                                              status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, token.strip(), max_age=SESSION_MAX_AGE_S, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        return response

    @router.post("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return router
