"""The rewrite passes and their contracts (``protocol``). Conv lowerings are registered in
``lowerings`` and run here through ``lower_conv.OnnxLowering``; every other pass registers itself
(``protocol.register_pass``) and takes its place by name in one of the rule table's orders:
``rules.PATTERN_ORDER`` (pattern passes, ``GraphPass``, run once before the conv fixpoint),
``rules.LOWERING_ORDER`` (conv passes not yet on the lowering contract, ``Pass``, inside it),
``rules.LOWERED_ORDER`` (graph passes right after it) and ``rules.TIDY_ORDER`` (after local
verification). Every module of this package is imported here,
so a new pass is in the pipeline once its file exists."""

import importlib
import pkgutil

from ..lowerings import LOWERINGS
from ..rules import LOWERED_ORDER, LOWERING_ORDER, PATTERN_ORDER, TIDY_ORDER
from .broadcast_views import BroadcastViews
from .channelwise import ChannelwiseLowering
from .chunk_fusion import ChunkFusion
from .dense_to_sparse import DenseToSparse
from .lower_conv import LowerConvs, OnnxLowering, conv_pass
from .pad_fusion import PadFusion
from .piecewise import PiecewiseOps
from .protocol import PASSES, GraphPass, Pass, RewriteContext, register_pass
from .rank_reduction import RankReduction
from .shift import ShiftLowering
from .shuffle import ShuffleRemoval
from .sparse_conv import SparseConvLowering
from .stack_reduction import StackReduction
from .sum_fusion import SumFusion
from .view_sinking import ViewSinking

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

CONV_PASSES = {name: cls for name, cls in PASSES.items() if issubclass(cls, Pass)}


def default_conv_passes() -> tuple[Pass, ...]:
    """Every conv lowering, in ``rules.LOWERING_ORDER``."""
    return tuple(OnnxLowering(LOWERINGS[name]()) if name in LOWERINGS else CONV_PASSES[name]()
                 for name in LOWERING_ORDER)


DEFAULT_PASSES: tuple[Pass, ...] = default_conv_passes()
GRAPH_PASSES: tuple[GraphPass, ...] = tuple(PASSES[name]() for name in PATTERN_ORDER)
LOWERED_PASSES: tuple[GraphPass, ...] = tuple(PASSES[name]() for name in LOWERED_ORDER)
TIDY_PASSES: tuple[GraphPass, ...] = tuple(PASSES[name]() for name in TIDY_ORDER)

__all__ = ["CONV_PASSES", "DEFAULT_PASSES", "GRAPH_PASSES", "LOWERED_PASSES", "PASSES",
           "TIDY_PASSES", "PiecewiseOps",
           "BroadcastViews", "ChannelwiseLowering", "ChunkFusion", "DenseToSparse",
           "GraphPass", "LowerConvs", "OnnxLowering",
           "PadFusion", "Pass", "RankReduction", "RewriteContext",
           "ShiftLowering", "ShuffleRemoval", "SparseConvLowering",
           "StackReduction", "SumFusion", "ViewSinking",
           "conv_pass", "default_conv_passes", "register_pass"]
