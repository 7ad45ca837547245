"""The classifier's model for versions deployed by gpuserve 0.1.0, which import it from the
project on the replica's PYTHONPATH. The code now lives in examples/classifier.

Its source is run here, as this module, rather than imported from examples/classifier by
adding that folder to sys.path: Serve pickles a deployment's class when it builds the app
and unpickles it in each replica, where a class whose module is `tiny_model` would need
that folder on the path too. Defined here, the class is `runtime.app.legacy.TinyModel`,
importable wherever `runtime` is.
"""

from runtime.constants import PROJECT_DIR

_SOURCE = PROJECT_DIR / "examples" / "classifier" / "tiny_model.py"
# Our own file, one source of truth; its classes take this module's name.
_namespace: dict = {"__name__": __name__, "__file__": str(_SOURCE)}
exec(compile(_SOURCE.read_text(), str(_SOURCE), "exec"), _namespace)
TinyModel = _namespace["TinyModel"]

__all__ = ["TinyModel"]
