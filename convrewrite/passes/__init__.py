"""One module per rewrite. Each pass declares the target rules it fixes; the pipeline asks it to
rewrite one violating node and gets back a Record, or a reason string when the pass declines."""

from .protocol import Pass, RewriteContext
from .channel_split import ChannelSplit
from .channelwise import ChannelwiseLowering
from .dead_taps import DeadTaps
from .dense_to_sparse import DenseToSparse
from .sparse_conv import SparseConvLowering
from .depth_multiplier import DepthMultiplierLowering
from .dilation import DilationLowering
from .groups import GroupLowering
from .protocol import GraphPass
from .kernel_split import KernelSplit
from .padding import ExplicitPadding
from .rank import RankLowering
from .shift import ShiftLowering
from .shuffle import ShuffleRemoval
from .stride import StrideSubsample
from .tiling import SpatialTiling
from .transposed import TransposedToConv
from .transposed_shape import TransposedShape

# Order matters where one conv breaks several rules: ranks the engine lacks become 2-D first,
# then group forms (the dense convs they
# become may need a channel split), channels next (the pieces stay smaller),
# taps that only read padding are dropped (exact, and it shrinks what follows), a
# ConvTranspose becomes plain convs next,
# then stride (so later pieces run at stride 1), dilation (a dense kernel may then need splitting),
# kernel, padding (it may need stride 1 to crop), and tiling last (on the convs that remain).
DEFAULT_PASSES: tuple[Pass, ...] = (RankLowering(), GroupLowering(), DepthMultiplierLowering(),
                                    ChannelSplit(),
                                    DeadTaps(), TransposedShape(),
                                    TransposedToConv(), StrideSubsample(), DilationLowering(),
                                    KernelSplit(), ExplicitPadding(), SpatialTiling())

# Pattern rewrites run once before the conv passes: our ops become standard ONNX, shuffles lose
# their 5-D tensors, and shifts take their cheapest form (the convs these emit then get legalised).
# Convs over --sparse-input tensors become SparseConvs first, and SparseConvs standard ONNX next.
GRAPH_PASSES: tuple[GraphPass, ...] = (DenseToSparse(), SparseConvLowering(), ChannelwiseLowering(),
                                       ShuffleRemoval(), ShiftLowering())

__all__ = ["DEFAULT_PASSES", "GRAPH_PASSES", "ChannelSplit", "ChannelwiseLowering", "DeadTaps",
           "DenseToSparse", "SparseConvLowering",
           "DepthMultiplierLowering", "DilationLowering", "ExplicitPadding", "GraphPass",
           "GroupLowering", "KernelSplit", "Pass", "RankLowering", "RewriteContext", "ShiftLowering",
           "ShuffleRemoval", "SpatialTiling", "StrideSubsample", "TransposedShape", "TransposedToConv"]
