"""Builds engine.instrument._mixkernel (cffi, API mode) from mixkernel.c; setup.py runs it at install."""
from pathlib import Path

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("""
void gs_mix_readers(const float *flat, int64_t flat_len, const double *eff, const double *pos,
                    const double *base, const double *loop_len, double loop_end,
                    const float *w0, const float *dw, int64_t h, int64_t n, float *out, float *acc);
""")
ffibuilder.set_source("engine.instrument._mixkernel", (Path(__file__).parent / "mixkernel.c").read_text(),
                      extra_compile_args=["-O3", "-fno-math-errno", "-ffp-contract=off"], libraries=["m"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
