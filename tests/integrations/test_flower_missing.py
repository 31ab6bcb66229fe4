"""Without Flower, fedpoison imports and the integration says how to install it.

Runs whether or not ``flwr`` is installed: a subprocess hides it from the import system.
"""

from __future__ import annotations

import subprocess
import sys

HIDE_FLWR = """
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] == "flwr" else real(name, *a, **k)
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "flwr":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import fedpoison, fedpoison.integrations
assert not any(m.split(".")[0] == "flwr" for m in sys.modules)
try:
    import fedpoison.integrations.flower
except ImportError as exc:
    print(exc)
else:
    print("imported")
"""


def test_missing_flower_gives_an_install_hint() -> None:
    out = subprocess.run([sys.executable, "-c", HIDE_FLWR], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "install fedpoison[flower]" in out.stdout
    assert "flwr" in out.stdout
