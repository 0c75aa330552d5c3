"""autointerp: explain the features of a neural network, score the explanations, test them."""

__version__ = "0.1.0"

from autointerp.config import RunConfig, load_config
from autointerp.errors import AutointerpError

__all__ = ["AutointerpError", "RunConfig", "__version__", "load_config"]
