"""A streaming text generator: tokens as server-sent events, one event per word, each sent
as soon as the model produces it.

    POST /generate {"prompt": "the rollout", "max_tokens": 20}
         -> text/event-stream: data: {"token": "moves", "index": 0} ... data: [DONE]
    GET  /healthz -> ok
    GET  /        -> what this replica serves

The model is a word-level Markov chain trained at build time on corpus.txt (train.py) and
shipped with the code (models/<version>.json): nothing downloads at run time.
`user_config: {token_delay_s: 0.05}` sets the pause between tokens, as a real model's
decode step would take.
"""

from __future__ import annotations

import asyncio
import json
import os
import random

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from markov import MarkovModel

MAX_TOKENS = 512


@serve.deployment(name="TextGen")
class TextGen:
    def __init__(self):
        self.version = os.environ.get("GPUSERVE_VERSION", "dev")
        self.model = MarkovModel.load(os.environ.get("GPUSERVE_ARTIFACT") or f"models/{self.version}.json")
        self.token_delay_s = 0.05

    def reconfigure(self, user_config: dict) -> None:
        # Refused first by the stack's user_config_schema, before anything moves.
        delay = user_config.get("token_delay_s", self.token_delay_s)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 10:
            raise ValueError(f"user_config.token_delay_s must be a number of seconds in [0, 10]; got {delay!r}")
        self.token_delay_s = float(delay)

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.removeprefix(request.scope.get("root_path", "")) or "/"
        if request.method == "GET" and path == "/healthz":
            return PlainTextResponse("ok")
        if request.method == "GET" and path == "/":
            return JSONResponse({"version": self.version, "order": self.model.order, "contexts": len(self.model.table)})
        if request.method != "POST" or path != "/generate":
            return JSONResponse({"error": "not found: POST /generate, GET /healthz"}, status_code=404)
        try:
            body = await request.json()
            prompt = str(body.get("prompt", ""))
            max_tokens = int(body.get("max_tokens", 20))
            if not 1 <= max_tokens <= MAX_TOKENS:
                raise ValueError(f"max_tokens must be 1..{MAX_TOKENS}")
        except (ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": str(exc).splitlines()[0][:200] or "bad body"}, status_code=400)
        rng = random.Random(f"{prompt}|{max_tokens}")  # the same prompt gives the same text
        return StreamingResponse(self._events(prompt, max_tokens, rng), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})

    async def _events(self, prompt: str, max_tokens: int, rng: random.Random):
        for index, token in enumerate(self.model.generate(prompt, max_tokens, rng)):
            yield f"data: {json.dumps({'token': token, 'index': index, 'version': self.version})}\n\n"
            await asyncio.sleep(self.token_delay_s)
        yield "data: [DONE]\n\n"


app = TextGen.bind()
