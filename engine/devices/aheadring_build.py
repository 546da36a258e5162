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
typedef struct {
    gs_ring *ring;
    void *outs[8];
    int32_t n_outs;
    int32_t pad_;
    void *midi_in;
    int64_t *server_xruns;
    int64_t seen_xruns;
    uint8_t midi[1024][4];
    int64_t midi_written;
    int64_t midi_read;
    int64_t midi_messages;
} gs_jack;
int gs_jack_bind(const char *libname);
int gs_jack_process(uint32_t frames, void *arg);
int gs_jack_xrun(void *arg);
int gs_jack_midi_pop(gs_jack *j, uint8_t *out);
int gs_jack_hook_threads(const char *path, int32_t load);
int32_t gs_jack_threads(int32_t *out, int32_t n);
""")
ffibuilder.set_source("engine.devices._aheadring", (Path(__file__).parent / "aheadring.c").read_text(),
                      extra_compile_args=["-O2"], libraries=["dl", "pthread"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
