"""A user's app that answers with the names of the environment variables its replica sees."""

import os

from ray import serve


@serve.deployment(name="EnvProbe")
class EnvProbe:
    async def __call__(self, request):
        return {"names": sorted(os.environ)}


app = EnvProbe.bind()
