"""Builds engine.gansynth._kernels (cffi, API mode) from kernels.c; setup.py runs it at install."""
from pathlib import Path

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("""
int gs_act_norm_f32(float *x, int64_t pixels, int32_t c, float slope, float eps);
int gs_act_norm_bf16(uint16_t *x, int64_t pixels, int32_t c, float slope, float eps);
""")
ffibuilder.set_source("engine.gansynth._kernels", (Path(__file__).parent / "kernels.c").read_text(),
                      extra_compile_args=["-O3", "-fno-math-errno", "-Wno-psabi"], libraries=["m"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
