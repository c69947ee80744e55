"""One obvious import path for the main names: `from mpp import ...`, loaded on first use so that
`import mpp` (and `mpp --version`) stay light."""

from __future__ import annotations

import subprocess
import sys

import mpp


def test_every_exported_name_resolves() -> None:
    for name in mpp.__all__:
        assert getattr(mpp, name) is not None, name
    from mpp import PaymentAuth, PaymentMiddleware
    from mpp.http import PaymentAuth as Direct

    assert PaymentAuth is Direct and PaymentMiddleware.__name__ == "PaymentMiddleware"


def test_import_mpp_loads_no_other_layer() -> None:
    probe = (
        "import sys, mpp\n"
        "layers = {m.split('.')[1] for m in sys.modules if m.startswith('mpp.')}\n"
        "print(sorted(layers), 'web3' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['core'] False"
