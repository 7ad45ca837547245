"""The classifier's model for versions deployed by gpuserve 0.1.0, which import it from the
project on the replica's PYTHONPATH. The code now lives in examples/classifier."""

import sys

from runtime.constants import PROJECT_DIR

_CODE = str(PROJECT_DIR / "examples" / "classifier")
if _CODE not in sys.path:
    sys.path.append(_CODE)

from tiny_model import TinyModel  # noqa: E402

__all__ = ["TinyModel"]
