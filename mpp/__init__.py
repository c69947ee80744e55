"""mpp-channels: the Python toolkit for MPP payment channels.

The public API of the protocol core is re-exported here: `from mpp import Challenge, ...`.
"""

from mpp.core import *  # noqa: F403
from mpp.core import __all__ as _core_all

__version__ = "0.1.0"

__all__ = [*_core_all, "__version__"]
