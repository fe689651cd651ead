"""Body cap and security headers as ASGI middleware, exercised through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
from fastapi import FastAPI, Request

from appliance.web.security import BodyLimit, SecurityHeaders


def make_app(tls: bool = False) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    app.add_middleware(BodyLimit, limit=1000)
    app.add_middleware(SecurityHeaders, tls=tls)
    return app


def test_body_cap_declared_and_streamed() -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b"x" * 400

    async def main() -> None:
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ok = await client.post("/echo", content=b"x" * 1000)
            assert ok.status_code == 200 and ok.json() == {"bytes": 1000}
            declared = await client.post("/echo", content=b"x" * 1001)
            assert declared.status_code == 413
            assert declared.headers["x-frame-options"] == "DENY"
            streamed = await client.post("/echo", content=chunks())
            assert streamed.status_code in {400, 413}

    anyio.run(main)


def test_hsts_only_with_tls() -> None:
    async def main() -> None:
        for tls in (False, True):
            transport = httpx.ASGITransport(app=make_app(tls))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                answer = await client.post("/echo", content=b"")
                assert ("strict-transport-security" in answer.headers) is tls
                assert answer.headers["cache-control"] == "no-store"

    anyio.run(main)
