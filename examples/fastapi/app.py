"""A FastAPI app behind `@serve.ingress`, with several routes and its own /healthz: the
shape most teams' Serve apps have. gpuserve passes every path, method, query, header and
body through unchanged, and the app's own 4xx/5xx answers as they are.

    GET  /healthz              -> {"status": "ok", "version": ...}
    GET  /items/{item_id}?q=   -> an item (404 for unknown ids, the app's own error)
    POST /items                -> 201, the item created (422 for a bad body, FastAPI's own)
    POST /echo                 -> the request as the app saw it: method, path, query,
                                  headers and the body, byte for byte (a test aid)
    GET  /docs-redirect        -> 307 to /docs, a redirect built by the app
    GET  /greet/{name}         -> a call into a second deployment, `Greeter`: the app is a
                                  graph, and the stack config sets Greeter's options by name
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures'
# annotations at import time, and string annotations on a class-based ingress would turn
# the `item: NewItem` body into a query parameter.
import base64
import os
from typing import Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

api = FastAPI(title="items")
ITEMS = {1: {"id": 1, "name": "first"}, 2: {"id": 2, "name": "second"}}


class NewItem(BaseModel):
    name: str = Field(min_length=1, max_length=100)


@serve.deployment(name="Greeter")
class Greeter:
    def greet(self, name: str) -> str:
        return f"hello {name}"


@serve.deployment(name="Api")
@serve.ingress(api)
class Api:
    def __init__(self, greeter: DeploymentHandle):
        self.version = os.environ.get("GPUSERVE_VERSION", "dev")
        self.greeter = greeter
        self.greeting = "hello"

    def reconfigure(self, user_config: dict) -> None:
        greeting = user_config.get("greeting", self.greeting)
        if not isinstance(greeting, str) or not 0 < len(greeting) <= 200:
            raise ValueError(f"user_config.greeting must be text of 1 to 200 characters; got {greeting!r}")
        self.greeting = greeting

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "version": self.version}

    @api.get("/items/{item_id}")
    def item(self, item_id: int, q: Optional[str] = None) -> dict:
        if item_id not in ITEMS:
            raise HTTPException(status_code=404, detail=f"item {item_id} not found")
        return {**ITEMS[item_id], "q": q, "version": self.version, "greeting": self.greeting}

    @api.post("/items", status_code=201)
    def create(self, item: NewItem) -> dict:
        return {"id": len(ITEMS) + 1, "name": item.name, "version": self.version}

    @api.api_route("/echo/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(self, request: Request, rest: str) -> JSONResponse:
        body = await request.body()
        return JSONResponse({
            "method": request.method,
            "path": "/" + rest,
            "query": request.scope.get("query_string", b"").decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            "body": base64.b64encode(body).decode(),
            "version": self.version,
        })

    @api.get("/greet/{name}")
    async def greet(self, name: str) -> dict:
        return {"greeting": await self.greeter.greet.remote(name), "version": self.version}

    @api.get("/docs-redirect")
    def docs_redirect(self, request: Request) -> RedirectResponse:
        # url_for builds an absolute URL from where the app is mounted.
        return RedirectResponse(str(request.url_for("healthz")), status_code=307)


app = Api.bind(Greeter.bind())
