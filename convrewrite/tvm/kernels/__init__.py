"""Our own TIR kernels, where they beat TVM's defaults: the CPU conv as implicit GEMM
(``conv_gemm``), a shift fused into the following 1x1 conv (``shift_conv``), and the sparse conv's
gather-GEMM-scatter (``sparse_conv``)."""
