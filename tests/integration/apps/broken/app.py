"""A user's app whose constructor raises, as one whose weights are missing would."""

from ray import serve


class WeightsMissing(RuntimeError):
    pass


@serve.deployment(name="Broken")
class Broken:
    def __init__(self):
        raise WeightsMissing("BYO-V3-BOOM: no weights at /models/v3")

    async def __call__(self, request):
        return "never"


app = Broken.bind()
