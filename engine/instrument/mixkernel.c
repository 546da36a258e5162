/* The voice mixer's block kernel (engine/instrument/mixer.py), built at install as
 * engine.instrument._mixkernel (cffi, API mode; cffi releases the GIL around the call).
 *
 * gs_mix_readers: out[k] = sum over readers i < h of (w0[i] + dw[i] * k / n) * read_i(k),
 * k < n, where read_i(k) linearly interpolates the flattened note pool at the absolute
 * position base[i] + pos[i] + eff[i] * k, moved back by loop_len[i] from the first k at which
 * pos[i] + eff[i] * k reaches loop_end (the renderer baked a seamless loop there). Indices
 * are clipped into the pool. The weights ramp linearly inside the block (envelope and
 * crossfade), so one pass over the readers gives both sums.
 *
 * Why C: as numpy this was ~25 calls a block (two of them BLAS products), each entering the
 * interpreter, with scratch arrays of rows x block. After an idle spell the first chord's
 * block ran code and touched scratch pages nothing had touched for seconds (the BLAS gemv
 * path with more than one row among them), which is slow on a VM: that block was the one xrun
 * of ours left. Here there is no scratch and one small function, which the idle mixer runs
 * every block (over its silent row) and so keeps warm.
 *
 * The arithmetic is the numpy version's: positions in double, the interpolation and the
 * sums in float, the ramp as float(k) * float(1 / n). `acc` is scratch of n floats.
 */
#include <math.h>
#include <stdint.h>

static inline int64_t clip(int64_t i, int64_t len) {
    return i < 0 ? 0 : (i >= len ? len - 1 : i);
}

void gs_mix_readers(const float *flat, int64_t flat_len, const double *eff, const double *pos,
                    const double *base, const double *loop_len, double loop_end,
                    const float *w0, const float *dw, int64_t h, int64_t n, float *out, float *acc) {
    for (int64_t k = 0; k < n; k++) {
        out[k] = 0.0f;
        acc[k] = 0.0f;
    }
    for (int64_t i = 0; i < h; i++) {
        const double e = eff[i], p = pos[i], start = p + base[i];
        int64_t wrap = n;   /* first k read from one loop length back */
        if (e * (double)n + p >= loop_end) {
            if (e > 0.0) {
                double k0 = ceil((loop_end - p) / e);
                wrap = k0 < 0.0 ? 0 : (k0 < (double)n ? (int64_t)k0 : n);
            }
        }
        const float a = w0[i], b = dw[i];
        int64_t k = 0;
        if (e == 1.0 && p == floor(p)) {   /* rate 1 on whole samples: plain reads up to the wrap */
            const int64_t j0 = (int64_t)start;
            if (j0 >= 0 && j0 + wrap < flat_len) {
                const float *src = flat + j0;
                for (; k < wrap; k++) {
                    out[k] += a * src[k];
                    acc[k] += b * src[k];
                }
            }
        }
        for (; k < n; k++) {
            double off = e * (double)k + start;
            if (k >= wrap)
                off -= loop_len[i];
            const double fl = floor(off);
            const float fr = (float)(off - fl);
            const int64_t j = (int64_t)fl;
            const float x0 = flat[clip(j, flat_len)];
            const float x = x0 + (flat[clip(j + 1, flat_len)] - x0) * fr;
            out[k] += a * x;
            acc[k] += b * x;
        }
    }
    const float step = (float)(1.0 / (double)n);
    for (int64_t k = 0; k < n; k++)
        out[k] += acc[k] * ((float)k * step);
}
