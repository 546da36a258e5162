/* The generator's fused leaky ReLU + pixel norm for CPU inference (engine.gansynth._kernels, cffi).
 *
 * x holds `pixels` rows of `c` channels, channels innermost (a channels-last NCHW tensor). Each
 * row becomes a / sqrt(mean(a^2) + eps) with a = leaky_relu(x, slope), in place, in one pass
 * over memory: PyTorch spends three passes and, with channels innermost, runs the broadcast
 * multiply in loops only c long (8 and 16 channels in the narrow models' last blocks: the
 * memory-bound part of a note). Arithmetic is fp32; bf16 rows are widened and rounded back to
 * nearest-even once. Blocks of 16 lanes hold 16 / c rows (c = 1, 2, 4, 8, 16), summed by a
 * butterfly of lane shuffles, or one row in c / 16 blocks (c a multiple of 16); other widths
 * are refused (-1), untouched, and the caller runs PyTorch's ops. Compiled for AVX-512, AVX2
 * and baseline x86-64, chosen at load (target_clones) on x86-64 Linux with GCC; GCC's vector
 * extensions elsewhere (GCC, clang). Holds no Python state: cffi releases the GIL around the
 * call. */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

/* ifunc needs ELF and glibc; clang 14 refuses 64-byte vectors across the clones' targets even
   inlined, so a clang build is baseline x86-64 (the same results, slower) */
#if defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* always inlined: a 64-byte vector passed between functions built for different targets
   would change the ABI */
#define INLINE inline __attribute__((always_inline))

/* lane k of the result is lane k ^ step of s (clang and GCC 12+: __builtin_shufflevector) */
#if defined(__clang__) || __GNUC__ >= 12
#define SWAP(s, a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p) \
    __builtin_shufflevector(s, s, a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p)
#else
#define SWAP(s, ...) __builtin_shuffle(s, (v16i){__VA_ARGS__})
#endif

/* every lane ends up holding the sum of its aligned group of `width` lanes (width | 16) */
static INLINE v16f group_sum(v16f s, int32_t width) {
    if (width > 1) s += SWAP(s, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    if (width > 2) s += SWAP(s, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    if (width > 4) s += SWAP(s, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    if (width > 8) s += SWAP(s, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    return s;
}

static INLINE v16f inv_sqrt(v16f s) {
    v16f r;
    for (int k = 0; k < 16; k++) r[k] = 1.0f / sqrtf(s[k]);
    return r;
}

/* leaky ReLU as max(a, slope * a), exact for 0 <= slope < 1 */
static INLINE v16f leaky(v16f a, float slope) {
    v16f b = a * slope;
    v16i keep = a > b, ai, bi, ri;
    memcpy(&ai, &a, 64);
    memcpy(&bi, &b, 64);
    ri = (ai & keep) | (bi & ~keep);
    memcpy(&a, &ri, 64);
    return a;
}

static INLINE v16f load_f32(const float *p) { v16f f; memcpy(&f, p, 64); return f; }
static INLINE void store_f32(float *p, v16f f) { memcpy(p, &f, 64); }

static INLINE v16f load_bf16(const uint16_t *p) {
    v16h h;
    memcpy(&h, p, 32);
    v16u u = __builtin_convertvector(h, v16u) << 16;
    v16f f;
    memcpy(&f, &u, 64);
    return f;
}

static INLINE void store_bf16(uint16_t *p, v16f f) {  /* round to nearest even (no NaNs here) */
    v16u u;
    memcpy(&u, &f, 64);
    u += 0x7fffu + ((u >> 16) & 1u);
    v16h h = __builtin_convertvector(u >> 16, v16h);
    memcpy(p, &h, 32);
}

/* a tail of fewer than 16 lanes (whole rows), through a zero-padded block */
#define TAIL(T, LOAD, STORE, x, n, c, slope, eps, inv_c) do { \
        T pad[16] = {0}; \
        memcpy(pad, (x), (size_t)(n) * sizeof(T)); \
        v16f a = leaky(LOAD(pad), slope); \
        STORE(pad, a * inv_sqrt(group_sum(a * a, c) * (inv_c) + (eps))); \
        memcpy((x), pad, (size_t)(n) * sizeof(T)); \
    } while (0)

#define ACT_NORM(NAME, T, LOAD, STORE) \
CLONES int NAME(T *x, int64_t pixels, int32_t c, float slope, float eps) { \
    if (c < 1 || (c > 16 && c % 16) || (c < 16 && 16 % c) || pixels < 0) return -1; \
    const float inv_c = 1.0f / (float)c; \
    if (c <= 16) { \
        int64_t n = pixels * c, i = 0; \
        for (; i + 16 <= n; i += 16) { \
            v16f a = leaky(LOAD(x + i), slope); \
            STORE(x + i, a * inv_sqrt(group_sum(a * a, c) * inv_c + eps)); \
        } \
        if (i < n) TAIL(T, LOAD, STORE, x + i, n - i, c, slope, eps, inv_c); \
        return 0; \
    } \
    for (int64_t p = 0; p < pixels; p++) { \
        T *row = x + p * c; \
        v16f acc = {0}; \
        for (int32_t k = 0; k < c; k += 16) { \
            v16f a = leaky(LOAD(row + k), slope); \
            acc += a * a; \
        } \
        float r = 1.0f / sqrtf(group_sum(acc, 16)[0] * inv_c + eps); \
        for (int32_t k = 0; k < c; k += 16) STORE(row + k, leaky(LOAD(row + k), slope) * r); \
    } \
    return 0; \
}

ACT_NORM(gs_act_norm_f32, float, load_f32, store_f32)
ACT_NORM(gs_act_norm_bf16, uint16_t, load_bf16, store_bf16)
