"""Builds engine.devices._aheadring (cffi, API mode) from aheadring.c; setup.py runs it at install."""
from pathlib import Path

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("""
typedef struct {
    float *data;
    int64_t capacity;
    int64_t written;
    int64_t read;
    int32_t channels;
    int32_t wake_fd;
    int32_t primed;
    int32_t silent;
    int32_t callback_tid;
    int32_t pad_;
    int64_t callbacks;
    int64_t last_frames;
    int64_t short_blocks;
    int64_t device_underflows;
    int64_t xruns;
    int64_t underflow_run;
} gs_ring;
int gs_pa_callback(const void *input, void *output, unsigned long frames, const void *time_info,
                   unsigned long status, void *user);
int64_t gs_ring_filled(gs_ring *r);
void gs_ring_commit(gs_ring *r, int64_t n);
void gs_ring_set_flag(int32_t *flag, int32_t value);
void gs_ring_play(gs_ring *r, float *out, int64_t frames, unsigned long status);
""")
ffibuilder.set_source("engine.devices._aheadring", (Path(__file__).parent / "aheadring.c").read_text(),
                      extra_compile_args=["-O2"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
