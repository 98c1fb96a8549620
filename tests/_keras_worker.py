"""Real Keras 3 for the tests that compare graphc against it (imported as ``_keras_worker``:
pytest puts tests/ on the path; conftest.py's session fixture ``keras_run`` holds the worker).

Keras runs in a worker subprocess with KERAS_BACKEND=numpy set before Keras is imported there,
whatever backend this process would pick; importing Keras takes seconds, so one worker serves
the whole session. A test sends it code; arrays travel as JSON values or as .npy files in the
directory the code runs in."""
import json
import os
import subprocess
import sys

_WORKER = r"""
import json, os, sys, traceback
os.environ["KERAS_BACKEND"] = "numpy"
reply = sys.stdout
sys.stdout = sys.stderr  # Keras' prints must not mix with the replies
import numpy as np
import keras
ns = {"np": np, "keras": keras, "L": keras.layers}
reply.write(json.dumps({"ok": True, "result": keras.__version__}) + "\n"); reply.flush()
for line in sys.stdin:
    msg = json.loads(line)
    if msg["dir"] is not None:
        os.chdir(msg["dir"])
    try:
        exec(msg["code"], ns)
        out = {"ok": True, "result": ns.pop("result", None)}
    except Exception:
        out = {"ok": False, "error": traceback.format_exc()}
    reply.write(json.dumps(out) + "\n"); reply.flush()
"""


class KerasWorker:
    """``worker(code, where=None, **values)`` runs ``code`` in Keras' process (in directory
    ``where`` if given, with the JSON-able ``values`` bound as names) and returns the value
    it left in ``result``; an exception there raises AssertionError with Keras' traceback."""

    def __init__(self, log):
        env = dict(os.environ, KERAS_BACKEND="numpy")
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log, text=True, env=env)
        self.version = self._reply()

    def _reply(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the Keras worker died (see its stderr log)")
        out = json.loads(line)
        if not out["ok"]:
            raise AssertionError("Keras raised:\n" + out["error"])
        return out["result"]

    def __call__(self, code: str, where=None, **values):
        pre = "".join(f"{k} = json.loads({json.dumps(json.dumps(v))})\n" for k, v in values.items())
        msg = {"code": "import json\n" + pre + code, "dir": None if where is None else str(where)}
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
