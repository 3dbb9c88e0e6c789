"""One module per rewrite. Each pass declares the target rules it fixes; the pipeline asks it to
rewrite one violating node and gets back a Record, or a reason string when the pass declines."""

from .base import Pass, RewriteContext
from .channel_split import ChannelSplit
from .kernel_split import KernelSplit
from .padding import ExplicitPadding
from .stride import StrideSubsample

# Order matters where one conv breaks several rules: channels first (the pieces stay smaller),
# then stride (so later pieces run at stride 1), kernel, and padding last (it may need stride 1).
DEFAULT_PASSES: tuple[Pass, ...] = (ChannelSplit(), StrideSubsample(), KernelSplit(),
                                    ExplicitPadding())

__all__ = ["DEFAULT_PASSES", "ChannelSplit", "ExplicitPadding", "KernelSplit", "Pass",
           "RewriteContext", "StrideSubsample"]
