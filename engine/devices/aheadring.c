/* The device side of the audio path that renders ahead (engine/devices/ahead.py).

   A single-producer single-consumer ring of mono float32 samples. Python (the producer
   thread) renders blocks into it; PortAudio's callback (`gs_pa_callback`) copies them to
   every channel of the device's buffer without entering the interpreter, so nothing that
   holds the GIL (the window painting, the render worker, a collection) can make it late.
   After each period it writes the ring's eventfd, which wakes the producer to refill.

   Counters are written by the callback only and read by Python at any time; `written`
   only by the producer, `read` only by the callback (acquire/release atomics). */
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#define GS_OUTPUT_UNDERFLOW 0x00000004UL   /* paOutputUnderflow */

typedef struct {
    float *data;              /* capacity samples */
    int64_t capacity;         /* a power of two */
    int64_t written;          /* samples the producer has committed */
    int64_t read;             /* samples the callback has played */
    int32_t channels;         /* interleaved output channels, each the same signal */
    int32_t wake_fd;          /* eventfd written after every callback; -1: none */
    int32_t primed;           /* set by the producer once it has filled the ring: short blocks count from then */
    int32_t silent;           /* set before the stream closes: silence, nothing consumed */
    int32_t callback_tid;     /* the device's callback thread (0 until its first call) */
    int32_t pad_;
    int64_t callbacks;        /* callbacks so far */
    int64_t last_frames;      /* frames of the last callback (the device's period) */
    int64_t short_blocks;     /* callbacks the ring could not fill (once primed): part silence */
    int64_t device_underflows;/* callbacks PortAudio flagged as an output underflow */
    int64_t xruns;            /* callbacks that were short (once primed) or flagged: each counts once */
    int64_t underflow_run;    /* consecutive such callbacks */
} gs_ring;

static void wake(gs_ring *r) {
    if (r->wake_fd >= 0) {
        uint64_t one = 1;
        ssize_t ignored = write(r->wake_fd, &one, sizeof one);
        (void)ignored;
    }
}

/* Play up to `frames` samples from the ring into `out` (interleaved, r->channels each). */
static void play(gs_ring *r, float *out, int64_t frames, unsigned long status) {
    const int ch = r->channels;
#ifdef SYS_gettid
    if (r->callback_tid == 0)
        r->callback_tid = (int32_t)syscall(SYS_gettid);
#endif
    r->last_frames = frames;
    r->callbacks += 1;
    if (__atomic_load_n(&r->silent, __ATOMIC_ACQUIRE)) {
        memset(out, 0, (size_t)frames * ch * sizeof(float));
        return;
    }
    int64_t rd = r->read;
    int64_t avail = __atomic_load_n(&r->written, __ATOMIC_ACQUIRE) - rd;
    int64_t n = avail < frames ? avail : frames;
    const int64_t mask = r->capacity - 1;
    for (int64_t i = 0; i < n; i++) {
        float s = r->data[(rd + i) & mask];
        for (int c = 0; c < ch; c++)
            out[i * ch + c] = s;
    }
    if (n < frames)
        memset(out + n * ch, 0, (size_t)(frames - n) * ch * sizeof(float));
    __atomic_store_n(&r->read, rd + n, __ATOMIC_RELEASE);
    int bad = 0;
    if (status & GS_OUTPUT_UNDERFLOW) {
        r->device_underflows += 1;
        bad = 1;
    }
    if (n < frames && __atomic_load_n(&r->primed, __ATOMIC_ACQUIRE)) {
        r->short_blocks += 1;
        bad = 1;
    }
    r->xruns += bad;
    r->underflow_run = bad ? r->underflow_run + 1 : 0;
    wake(r);
}

/* PaStreamCallback: (input, output, frames, time info, status flags, user data). */
int gs_pa_callback(const void *input, void *output, unsigned long frames, const void *time_info,
                   unsigned long status, void *user) {
    (void)input;
    (void)time_info;
    play((gs_ring *)user, (float *)output, (int64_t)frames, status);
    return 0;   /* paContinue */
}

/* The producer's side. */
int64_t gs_ring_filled(gs_ring *r) {
    return r->written - __atomic_load_n(&r->read, __ATOMIC_ACQUIRE);
}

void gs_ring_commit(gs_ring *r, int64_t n) {
    __atomic_store_n(&r->written, r->written + n, __ATOMIC_RELEASE);
}

void gs_ring_set_flag(int32_t *flag, int32_t value) {
    __atomic_store_n(flag, value, __ATOMIC_RELEASE);
}

/* For tests and benchmarks: one callback as PortAudio would make it. */
void gs_ring_play(gs_ring *r, float *out, int64_t frames, unsigned long status) {
    play(r, out, frames, status);
}

/* ---- our JACK client (engine/devices/jackclient.py) ----
   `gs_jack_xrun` counts the server's xruns (JACK's xrun callback, on its notification
   thread: C, so it never waits for the GIL), whichever process callback runs.

   Rendering ahead: libjack's functions are looked up at run time in the library
   JACK-Client loaded, so nothing JACK is needed to build this. The process callback first
   copies the period's MIDI events (up to 3 bytes: notes, controllers, bends) into a ring
   the producer drains before it renders, then plays the audio ring into every out port,
   flagging the period as an underflow when the server counted an xrun since the last. */
#include <dlfcn.h>

typedef struct {
    uint32_t time;
    size_t size;
    unsigned char *buffer;
} gs_midi_event;

static void *(*jack_port_buffer)(void *port, uint32_t frames);
static uint32_t (*jack_midi_count)(void *buffer);
static int (*jack_midi_get)(gs_midi_event *event, void *buffer, uint32_t index);

#define GS_MIDI_EVENTS 1024   /* a power of two */
#define GS_MAX_OUTS 8

typedef struct {
    gs_ring *ring;            /* mono */
    void *outs[GS_MAX_OUTS];
    int32_t n_outs;
    int32_t pad_;
    void *midi_in;            /* NULL: no MIDI in */
    int64_t *server_xruns;    /* gs_jack_xrun's counter */
    int64_t seen_xruns;
    uint8_t midi[GS_MIDI_EVENTS][4];   /* [size, bytes...] */
    int64_t midi_written;     /* the process callback's */
    int64_t midi_read;        /* the producer's */
    int64_t midi_messages;    /* every event received, also those not kept */
} gs_jack;

/* 0 when every function was found in `libname` (already loaded by JACK-Client). */
int gs_jack_bind(const char *libname) {
    void *lib = dlopen(libname, RTLD_NOW);
    if (lib == NULL)
        return -1;
    jack_port_buffer = (void *(*)(void *, uint32_t))dlsym(lib, "jack_port_get_buffer");
    jack_midi_count = (uint32_t (*)(void *))dlsym(lib, "jack_midi_get_event_count");
    jack_midi_get = (int (*)(gs_midi_event *, void *, uint32_t))dlsym(lib, "jack_midi_event_get");
    return jack_port_buffer && jack_midi_count && jack_midi_get ? 0 : -2;
}

/* JackXRunCallback: `arg` is an int64_t counter. */
int gs_jack_xrun(void *arg) {
    __atomic_add_fetch((int64_t *)arg, 1, __ATOMIC_RELAXED);
    return 0;
}

/* JackProcessCallback. */
int gs_jack_process(uint32_t frames, void *arg) {
    gs_jack *j = (gs_jack *)arg;
    if (j->midi_in != NULL) {
        void *buffer = jack_port_buffer(j->midi_in, frames);
        uint32_t count = jack_midi_count(buffer);
        int64_t w = j->midi_written;
        for (uint32_t i = 0; i < count; i++) {
            gs_midi_event event;
            if (jack_midi_get(&event, buffer, i) != 0)
                continue;
            j->midi_messages += 1;
            if (event.size < 1 || event.size > 3)
                continue;     /* sysex and the like: not ours */
            if (w - __atomic_load_n(&j->midi_read, __ATOMIC_ACQUIRE) >= GS_MIDI_EVENTS)
                continue;     /* the producer is a ring behind: it will have missed more than notes */
            uint8_t *slot = j->midi[w & (GS_MIDI_EVENTS - 1)];
            slot[0] = (uint8_t)event.size;
            memcpy(slot + 1, event.buffer, event.size);
            w += 1;
        }
        __atomic_store_n(&j->midi_written, w, __ATOMIC_RELEASE);
    }
    int64_t xruns = __atomic_load_n(j->server_xruns, __ATOMIC_RELAXED);
    int missed = xruns != j->seen_xruns;
    j->seen_xruns = xruns;
    float *first = (float *)jack_port_buffer(j->outs[0], frames);
    play(j->ring, first, frames, missed ? GS_OUTPUT_UNDERFLOW : 0);
    for (int k = 1; k < j->n_outs; k++)
        memcpy(jack_port_buffer(j->outs[k], frames), first, (size_t)frames * sizeof(float));
    return 0;
}

/* The producer: the next MIDI event into out[4] ([size, bytes]); 0 when there is none. */
int gs_jack_midi_pop(gs_jack *j, uint8_t *out) {
    int64_t r = j->midi_read;
    if (r == __atomic_load_n(&j->midi_written, __ATOMIC_ACQUIRE))
        return 0;
    memcpy(out, j->midi[r & (GS_MIDI_EVENTS - 1)], 4);
    __atomic_store_n(&j->midi_read, r + 1, __ATOMIC_RELEASE);
    return 1;
}

/* Threads libjack makes (every JACK client's process and notification threads), seen through
   libjack's thread-creator hook (jack_set_thread_creator, one per loaded libjack: the system's,
   which PortAudio and JACK-Client share, and python-rtmidi's bundled copy). On a JACK server
   that is not realtime every client's process thread is an ordinary thread, and a late one is
   an xrun for the whole graph; engine/devices/jackthreads.py raises them as it raises our own
   callback thread. Only their ids are kept here: nothing else changes how libjack runs. */
#include <pthread.h>
#include <stdlib.h>

#define GS_JACK_THREADS 256

static int32_t gs_jack_tids[GS_JACK_THREADS];
static int32_t gs_jack_ntids;

typedef struct {
    void *(*start)(void *);
    void *arg;
} gs_thread_start;

static void *gs_thread_trampoline(void *p) {
    gs_thread_start s = *(gs_thread_start *)p;
    free(p);
    int32_t i = __atomic_fetch_add(&gs_jack_ntids, 1, __ATOMIC_ACQ_REL);
    if (i < GS_JACK_THREADS)
        __atomic_store_n(&gs_jack_tids[i], (int32_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
    return s.start(s.arg);
}

static int gs_thread_creator(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *), void *arg) {
    gs_thread_start *s = malloc(sizeof *s);
    if (s == NULL)
        return pthread_create(thread, attr, start, arg);
    s->start = start;
    s->arg = arg;
    int rc = pthread_create(thread, attr, gs_thread_trampoline, s);
    if (rc != 0)
        free(s);
    return rc;
}

/* Hook the libjack at `path` (already loaded, or the system's by soname): 0 done, -1 no such
   library, -2 it has no thread-creator hook. */
int gs_jack_hook_threads(const char *path, int32_t load) {
    void *lib = dlopen(path, RTLD_NOW | (load ? 0 : RTLD_NOLOAD));
    if (lib == NULL)
        return -1;
    void (*set_creator)(void *) = (void (*)(void *))dlsym(lib, "jack_set_thread_creator");
    if (set_creator == NULL)
        return -2;
    set_creator((void *)gs_thread_creator);
    return 0;
}

/* The ids of the threads libjack made since it was hooked (some may have ended), up to `n`. */
int32_t gs_jack_threads(int32_t *out, int32_t n) {
    int32_t count = __atomic_load_n(&gs_jack_ntids, __ATOMIC_ACQUIRE);
    if (count > GS_JACK_THREADS)
        count = GS_JACK_THREADS;
    int32_t k = 0;
    for (int32_t i = 0; i < count && k < n; i++) {
        int32_t tid = __atomic_load_n(&gs_jack_tids[i], __ATOMIC_ACQUIRE);
        if (tid != 0)
            out[k++] = tid;
    }
    return k;
}
