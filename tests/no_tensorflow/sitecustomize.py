"""Makes TensorFlow unimportable in a process that has this folder first on ``PYTHONPATH``, as it is on the GPU
machine lent through the device tool (JAX, no TensorFlow): tests/conftest.py's ``without_tensorflow``.
``BLOCKED_MODULES`` (comma-separated top-level names) blocks others instead, such as the ones the device
script carries as wheels."""

import os
import sys

#: Top-level modules this process cannot import.
BLOCKED = tuple(os.environ.get("BLOCKED_MODULES", "tensorflow,tf_keras,segmentation_models").split(","))


class Absent:
    """A meta path finder that refuses :data:`BLOCKED` with a message that says why."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}: blocked in this test, as it is absent on the GPU "
                                      "machine, and this code path must not need it", name=name)
        return None


sys.meta_path.insert(0, Absent())
