/* mm_avxvnni.c: the AVX-VNNI matmul kernels (mm_x86.h with vpdpbusd on ymm). */
#include "kernels/cpu/mm.h"

#if FY_MM_X86
#define MMX_TARGET __attribute__((target("avx2,fma,f16c,avxvnni")))
#define MMX_VNNI   1
#define MMX_R      4
#include "kernels/cpu/mm_x86.h"

const fy__mm_kern fy__mm_avxvnni = MMX_KERN_YMM(FY_ISA_AVXVNNI);
#endif
