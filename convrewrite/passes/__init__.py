"""The rewrite passes and their contracts (``protocol``). Conv lowerings are registered in
``lowerings`` and run here through ``lower_conv.OnnxLowering``; the ones still written as passes of
their own (``Pass``) take their place in ``rules.LOWERING_ORDER`` by name. Pattern passes
(``GraphPass``) run once, before the conv fixpoint."""

from ..lowerings import LOWERINGS
from ..rules import FIXED_BY, LOWERING_ORDER
from .channelwise import ChannelwiseLowering
from .dense_to_sparse import DenseToSparse
from .dilation import DilationLowering
from .kernel_split import KernelSplit
from .broadcast_views import BroadcastViews
from .chunk_fusion import ChunkFusion
from .lower_conv import LowerConvs, OnnxLowering, conv_pass
from .pad_fusion import PadFusion
from .piecewise import PiecewiseOps
from .protocol import GraphPass, Pass, RewriteContext
from .rank import RankLowering
from .rank_reduction import RankReduction
from .shift import ShiftLowering
from .shuffle import ShuffleRemoval
from .stack_reduction import StackReduction
from .view_sinking import ViewSinking
from .sparse_conv import SparseConvLowering
from .stride import StrideSubsample
from .sum_fusion import SumFusion
from .tiling import SpatialTiling
from .transposed_shape import TransposedShape

CONV_PASSES = {p.name: p for p in (RankLowering,
                                   TransposedShape, StrideSubsample,
                                   DilationLowering, KernelSplit, SpatialTiling)}
for _cls in CONV_PASSES.values():
    for _rule in _cls.fixes:
        FIXED_BY[_rule].append(_cls.name)


def default_conv_passes() -> tuple[Pass, ...]:
    """Every conv lowering, in ``rules.LOWERING_ORDER``."""
    return tuple(OnnxLowering(LOWERINGS[name]()) if name in LOWERINGS else CONV_PASSES[name]()
                 for name in LOWERING_ORDER)


DEFAULT_PASSES: tuple[Pass, ...] = default_conv_passes()

# Pattern rewrites run once before the conv passes: our ops become standard ONNX, shuffles lose
# their 5-D tensors (then any other data movement through them: patch unfolds, pixel shuffles),
# and shifts take their cheapest form (the convs these emit then get legalised).
# Convs over --sparse-input tensors become SparseConvs first, and SparseConvs standard ONNX next.
GRAPH_PASSES: tuple[GraphPass, ...] = (DenseToSparse(), SparseConvLowering(), ChannelwiseLowering(),
                                       ShuffleRemoval(), StackReduction(), RankReduction(),
                                       BroadcastViews(),
                                       ShiftLowering())
# Tidying passes run after local verification: they undo what the lowerings cost at run time and
# move the boundary between a rewrite and what came before it.
TIDY_PASSES: tuple[GraphPass, ...] = (ViewSinking(), ChunkFusion(), SumFusion(), PadFusion())
FIXED_BY["ops"] += ["channelwise", "shift", "sparse_conv"]
FIXED_BY["max_tensor_rank"] += ["shuffle", "stack_reduction", "rank_reduction",
                                "broadcast_views"]
FIXED_BY["max_tensor_dim"] += ["piecewise"]
FIXED_BY["max_tensor_batch"] += ["piecewise"]

__all__ = ["CONV_PASSES", "DEFAULT_PASSES", "GRAPH_PASSES", "TIDY_PASSES", "BroadcastViews",
           "ChannelwiseLowering",
           "ChunkFusion", "LowerConvs", "PadFusion", "SumFusion",
           "DenseToSparse", "DilationLowering",
           "GraphPass", "KernelSplit", "OnnxLowering", "Pass", "PiecewiseOps", "RankLowering",
           "RankReduction",
           "RewriteContext",
           "ShiftLowering", "ShuffleRemoval", "SparseConvLowering", "SpatialTiling", "StackReduction",
           "StrideSubsample", "TransposedShape", "ViewSinking", "conv_pass",
           "default_conv_passes"]
