"""One module per rewrite. Each pass declares the target rules it fixes; the pipeline asks it to
rewrite one violating node and gets back a Record, or a reason string when the pass declines."""

from .base import Pass, RewriteContext
from .channel_split import ChannelSplit

DEFAULT_PASSES: tuple[Pass, ...] = (ChannelSplit(),)

__all__ = ["DEFAULT_PASSES", "ChannelSplit", "Pass", "RewriteContext"]
