/* mm_avx2.c: the AVX2 + FMA + F16C matmul kernels (mm_x86.h, integer dots
 * through maddubs/madd). */
#include "kernels/cpu/mm.h"

#if FY_MM_X86
#define MMX_TARGET __attribute__((target("avx2,fma,f16c")))
#define MMX_VNNI   0
#define MMX_R      4
#include "kernels/cpu/mm_x86.h"

const fy__mm_kern fy__mm_avx2 = MMX_KERN_YMM(FY_ISA_AVX2);
#endif
