/* Real-DFT analysis and synthesis of overlapping blocks for BlockDFTConv1d (koel/model/fast.py), and the
 * row statistics, Snake pass and bf16 residual add of the AdaIN resblocks around them and around the
 * direct convolutions.
 *
 * Built on first use with the system C compiler (koel/model/native.py) and called through ctypes;
 * without a compiler the same arithmetic runs as two matrix products in PyTorch.
 *
 * A convolution in blocks of n = 2m samples (overlap-save, polyphase for dilation d) needs, per
 * channel and block, the n-point DFT of the block and, after the channel mixing, the inverse DFT of
 * the mixed spectrum. As matrix products these are small-K GEMMs that run far below the CPU's peak
 * and need the overlapping blocks copied out first. Here each is an m-point complex FFT of the real
 * block packed as z[t] = x[2t] + i x[2t+1], run on LANES blocks at once (one SIMD lane each), reading
 * the blocks straight from the signal and writing the spectrum in the layout the mixing products
 * read, and back.
 *
 * The analysis can apply the resblocks' activation on the way in, Snake(x * scale + shift) per
 * channel, so the activated signal is never written out; the synthesis can add its output into the
 * residual stream instead of writing a new tensor.
 *
 * Spectrum layout, n rows per channel: Re X_0, Re X_m (both real for real input), then Re X_f,
 * Im X_f for f = 1 .. m - 1; tensor [n][channels][columns], columns ordered (batch item, phase,
 * block). Block j of phase r holds input samples r + d (j step + i) - left, i < n (zero outside the
 * signal); the first `step` samples of its inverse DFT are output samples r + d (j step + i).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One vector holds one value of LANES blocks: the CPU's widest float vector, 16 floats with AVX-512
 * and 8 otherwise (a 16-float vector split in two AVX2 registers spilled to the stack on every
 * partial write: the analysis ran 8x slower). */
#if defined(__AVX512F__)
#define LANES 16
#else
#define LANES 8
#endif
#define MAX_HALF 64 /* blocks of up to 128 samples */

typedef uint16_t bf16;
typedef float vf __attribute__((vector_size(4 * LANES))); /* one value of LANES blocks */
typedef uint32_t vu __attribute__((vector_size(4 * LANES)));
typedef uint16_t vh __attribute__((vector_size(2 * LANES)));

static inline float from_bf16(bf16 v) {
    union { uint32_t u; float f; } c;
    c.u = (uint32_t)v << 16;
    return c.f;
}

/* Row i of a [rows][length] tensor, float32 (x_bf16 = 0) or bfloat16, and its value t as a float. */
static inline const void *row_of(const void *x, int x_bf16, int64_t i, int length) {
    return x_bf16 ? (const void *)((const bf16 *)x + i * length) : (const void *)((const float *)x + i * length);
}

static inline float value_at(const void *row, int x_bf16, int64_t t) {
    return x_bf16 ? from_bf16(((const bf16 *)row)[t]) : ((const float *)row)[t];
}

static inline vf load_bf16(const bf16 *src) { /* LANES values */
    vh h;
    memcpy(&h, src, sizeof h);
    return (vf)(__builtin_convertvector(h, vu) << 16);
}

static inline void store_bf16(bf16 *dst, vf v, int lanes) { /* round to nearest even; finite input */
    vu u = (vu)v;
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const vh h = __builtin_convertvector(u, vh);
    if (lanes == LANES) memcpy(dst, &h, sizeof h);
    else for (int l = 0; l < lanes; l++) dst[l] = h[l];
}

/* cos on every lane (|x| < 2^21): x = k pi + r, |r| <= pi / 2, cos x = (-1)^k cos r; error ~1e-7. */
static inline vf vcos(vf x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer, parity in bit 0 */
    vf k = x * (float)M_1_PI + magic;
    const vu odd = (vu)k << 31;
    k -= magic;
    const vf r = x - k * 3.14159274101257324f + k * 8.742278e-8f; /* float(pi) - pi = 8.742278e-8 */
    const vf z = r * r;
    vf c = z * (1.0f / 479001600.0f) - 1.0f / 3628800.0f;
    c = c * z + 1.0f / 40320.0f;
    c = c * z - 1.0f / 720.0f;
    c = c * z + 1.0f / 24.0f;
    c = c * z - 0.5f;
    c = c * z + 1.0f;
    return (vf)((vu)c ^ odd);
}

/* Snake((x - center) * scale + shift) = y + (1 - cos(2 alpha y)) / (2 alpha), or the identity. */
typedef struct {
    int on;
    float center, scale, shift, twice_alpha, half_inv_alpha;
} act_t;

static inline vf activate(const act_t *a, vf x) {
    if (!a->on) return x;
    const vf y = (x - a->center) * a->scale + a->shift;
    return y + a->half_inv_alpha - a->half_inv_alpha * vcos(y * a->twice_alpha);
}

#if defined(__AVX512F__)
#include <immintrin.h>
#define KOEL_TRANSPOSE 1
typedef __m512 vreg;
#define vreg_loadu _mm512_loadu_ps
#define transpose_lanes transpose16

/* r[0..15] rows -> r[0..15] columns of the 16 x 16 matrix they form. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) { /* u[4k + c], 128-bit quad q: column 4q + c of rows 4k .. 4k + 3 */
        const __m512d a = _mm512_castps_pd(t[4 * k]), b = _mm512_castps_pd(t[4 * k + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * k + 2]), d = _mm512_castps_pd(t[4 * k + 3]);
        u[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int c = 0; c < 4; c++) {
        const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        const __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44), v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

/* The first `count` floats of v to dst. */
static inline void store_first(float *dst, __m512 v, int count) {
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << count) - 1u), v);
}

static inline __m512 load_first(const float *src, int count) {
    return _mm512_maskz_loadu_ps((__mmask16)((1u << count) - 1u), src);
}
#elif defined(__AVX2__)
#include <immintrin.h>
#define KOEL_TRANSPOSE 1
typedef __m256 vreg;
#define vreg_loadu _mm256_loadu_ps
#define transpose_lanes transpose8

/* r[0..7] rows -> r[0..7] columns of the 8 x 8 matrix they form. */
static inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) { /* u[4k + c]: column c (and c + 4) of rows 4k .. 4k + 3, per 128-bit half */
        u[4 * k] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        u[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        u[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        u[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

static inline __m256i first_mask(int count) {
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), index);
}

static inline void store_first(float *dst, __m256 v, int count) {
    _mm256_maskstore_ps(dst, first_mask(count), v);
}

static inline __m256 load_first(const float *src, int count) {
    return _mm256_maskload_ps(src, first_mask(count));
}
#endif

/* LANES values (the first `lanes` of v) into element i of a float32 (f32 = 1) or bfloat16 array. A
 * partial float32 store is masked where the CPU has masks (memcpy of a variable size compiled to
 * `rep movs`, 15% of a dilated analysis). */
static inline void store_at(void *dst, int f32, int64_t i, vf v, int lanes) {
    if (!f32) store_bf16((bf16 *)dst + i, v, lanes);
    else if (lanes == LANES) memcpy((float *)dst + i, &v, sizeof v);
#ifdef KOEL_TRANSPOSE
    else store_first((float *)dst + i, (vreg)v, lanes);
#else
    else memcpy((float *)dst + i, &v, (size_t)lanes * sizeof(float));
#endif
}

/* LANES values from element i of a float32 (f32 = 1) or bfloat16 array. */
static inline vf load_at(const void *src, int f32, int64_t i) {
    if (!f32) return load_bf16((const bf16 *)src + i);
    vf v;
    memcpy(&v, (const float *)src + i, sizeof v);
    return v;
}

/* The first `lanes` values from element i of a float32 or bfloat16 array, zeros in the other lanes. */
static inline vf load_first_at(const void *src, int f32, int64_t i, int lanes) {
    if (lanes == LANES) return load_at(src, f32, i);
#ifdef KOEL_TRANSPOSE
    if (f32) return (vf)load_first((const float *)src + i, lanes);
#endif
    vf v = {0};
    for (int l = 0; l < lanes; l++) v[l] = value_at(src, !f32, i + l);
    return v;
}

typedef struct {
    int n, m;                                   /* block length, complex FFT length m = n / 2 */
    int rev[MAX_HALF];                          /* bit reversal of 0 .. m - 1 */
    float wr[MAX_HALF / 2], wi[MAX_HALF / 2];   /* exp(-2 pi i k / m), k < m / 2 */
    float cr[MAX_HALF], ci[MAX_HALF];           /* exp(-2 pi i f / n), f < m */
} plan_t;

static int make_plan(plan_t *p, int n) {
    int m = n / 2, bits = 0;
    if (n < 4 || m > MAX_HALF || (n & (n - 1)) != 0) return -1;
    while ((1 << bits) < m) bits++;
    p->n = n;
    p->m = m;
    for (int t = 0; t < m; t++) {
        int r = 0;
        for (int b = 0; b < bits; b++) r |= ((t >> b) & 1) << (bits - 1 - b);
        p->rev[t] = r;
    }
    for (int k = 0; k < m / 2; k++) {
        const double a = -2.0 * M_PI * k / m;
        p->wr[k] = (float)cos(a);
        p->wi[k] = (float)sin(a);
    }
    for (int f = 0; f < m; f++) {
        const double a = -2.0 * M_PI * f / n;
        p->cr[f] = (float)cos(a);
        p->ci[f] = (float)sin(a);
    }
    return 0;
}

/* One radix-2 butterfly on (a, b) with twiddle w: a + w b, a - w b. */
static inline void butterfly(vf *ar, vf *ai, vf *br, vf *bi, float wr, float wi) {
    const vf tr = *br * wr - *bi * wi, ti = *br * wi + *bi * wr;
    *br = *ar - tr;
    *bi = *ai - ti;
    *ar = *ar + tr;
    *ai = *ai + ti;
}

/* In-place forward FFT of m points on LANES independent lanes; input in bit-reversed order.
 *
 * Radix-2 decimation in time, two stages per pass over the arrays where it can: the four points a
 * butterfly of stage `half` and one of stage `2 half` share are loaded once, put through both and
 * stored once. The arithmetic is that of one stage at a time, bit for bit, but the 2 m vectors (more
 * than the CPU's registers) go through memory half as often: the analysis and synthesis of 128-sample
 * blocks took 0.9x the time (AVX2 and AVX-512 builds). */
static inline void fft(const plan_t *p, vf *restrict re, vf *restrict im) {
    const int m = p->m;
    int half = 1;
    int stages = 0;
    while ((1 << stages) < m) stages++;
    if (stages & 1) { /* an odd count: the first stage alone (its twiddles are all 1) */
        for (int k = 0; k < m; k += 2) butterfly(&re[k], &im[k], &re[k + 1], &im[k + 1], p->wr[0], p->wi[0]);
        half = 2;
    }
    for (; 2 * half < m; half <<= 2) {
        const int s1 = m / (2 * half), s2 = m / (4 * half);
        for (int k = 0; k < m; k += 4 * half) {
            for (int j = 0; j < half; j++) {
                const int a = k + j, b = a + half, c = b + half, d = c + half;
                vf r0 = re[a], i0 = im[a], r1 = re[b], i1 = im[b], r2 = re[c], i2 = im[c], r3 = re[d], i3 = im[d];
                butterfly(&r0, &i0, &r1, &i1, p->wr[j * s1], p->wi[j * s1]);
                butterfly(&r2, &i2, &r3, &i3, p->wr[j * s1], p->wi[j * s1]);
                butterfly(&r0, &i0, &r2, &i2, p->wr[j * s2], p->wi[j * s2]);
                butterfly(&r1, &i1, &r3, &i3, p->wr[(j + half) * s2], p->wi[(j + half) * s2]);
                re[a] = r0;
                im[a] = i0;
                re[b] = r1;
                im[b] = i1;
                re[c] = r2;
                im[c] = i2;
                re[d] = r3;
                im[d] = i3;
            }
        }
    }
}

/* act(row[t]) for t < length into dst, float32, LANES at a time and the last few as one partial vector,
 * so that every sample takes the same arithmetic: an undilated phase as it is filled, or a dilated
 * convolution's whole row, once, before its phases are copied from it. (Activating as the phases
 * gathered, the gathers' latency and the activation's chain of dependent products did not overlap: a
 * 3- or 5-phase analysis of 128 channels took 3x the time of an undilated one, against 1.35-1.5x with
 * the activation moved out.) Inlined into both callers: as a call, the undilated analysis took 3-7%
 * longer. */
static inline __attribute__((always_inline)) void activate_row(const void *row, int x_bf16, int length, const act_t *act, float *dst) {
    int64_t t = 0;
    for (; t + LANES <= length; t += LANES) {
        vf v;
        if (x_bf16) v = load_bf16((const bf16 *)row + t);
        else memcpy(&v, (const float *)row + t, sizeof v);
        v = activate(act, v);
        memcpy(dst + t, &v, sizeof v);
    }
    if (t < length) {
        vf v = {0};
        for (int64_t i = t; i < length; i++) v[i - t] = value_at(row, x_bf16, i);
        v = activate(act, v);
        for (int64_t i = t; i < length; i++) dst[i] = v[i - t];
    }
}

/* One polyphase phase of one signal row, activated and zero-padded: phase[t] = a(row[r + d t - left])
 * for t < count, 0 outside the signal, so that block j is phase[j step .. j step + n - 1]. A dilated
 * row (d > 1) comes float32 and already activated (activate_row): its phases are strided copies, which
 * ran faster than vector gathers. */
static void fill_phase(const void *row, int x_bf16, int length, int dilation, int64_t start, int64_t count,
                       const act_t *act, float *phase) {
    /* t in [lo, hi) reads inside the row: 0 <= start + d t < length */
    int64_t lo = start >= 0 ? 0 : (-start + dilation - 1) / dilation;
    int64_t hi = start >= length ? 0 : (length - start + dilation - 1) / dilation;
    if (lo > count) lo = count;
    if (hi > count) hi = count;
    if (hi < lo) hi = lo;
    memset(phase, 0, (size_t)lo * sizeof(float));
    memset(phase + hi, 0, (size_t)(count - hi) * sizeof(float));
    int64_t t = lo;
    if (dilation > 1) {
        const float *src = (const float *)row + start;
        for (; t < hi; t++) phase[t] = src[(int64_t)dilation * t];
        return;
    }
    const int64_t first = start + t; /* the row's first sample inside the phase */
    activate_row(x_bf16 ? (const void *)((const bf16 *)row + first) : (const void *)((const float *)row + first),
                 x_bf16, (int)(hi - t), act, phase + t);
}

/* Blocks j0 .. j0 + LANES - 1 of a filled phase (block j at phase + j step) into lanes as the packed
 * z[t] = x[2t] + i x[2t+1] in bit-reversed order. */
static void load_blocks(const plan_t *p, const float *phase, int step, vf *re, vf *im) {
    const int m = p->m;
#ifdef KOEL_TRANSPOSE
    if (p->n >= LANES) { /* LANES blocks x LANES contiguous samples at a time, transposed to lanes */
        for (int i0 = 0; i0 < p->n; i0 += LANES) {
            vreg v[LANES];
            for (int l = 0; l < LANES; l++) v[l] = vreg_loadu(phase + (int64_t)l * step + i0);
            transpose_lanes(v);
            for (int ii = 0; ii < LANES; ii += 2) {
                re[p->rev[(i0 + ii) / 2]] = (vf)v[ii];
                im[p->rev[(i0 + ii) / 2]] = (vf)v[ii + 1];
            }
        }
        return;
    }
#endif
    for (int t = 0; t < m; t++) {
        vf a = {0}, b = {0};
        for (int l = 0; l < LANES; l++) {
            a[l] = phase[(int64_t)l * step + 2 * t];
            b[l] = phase[(int64_t)l * step + 2 * t + 1];
        }
        re[p->rev[t]] = a;
        im[p->rev[t]] = b;
    }
}

/* x: [batch][channels][length], float32 (x_bf16 = 0) or bfloat16; out: [n][channels][columns], bf16
 * or float32 (out_f32 = 1). center, scale, shift: [batch][channels] and alpha: [channels], all float32,
 * or all NULL for no activation. */
int koel_dft_analysis(const void *x, int x_bf16, int batch, int channels, int length, int dilation, int step,
                      int n, int blocks, int left, const float *center, const float *scale, const float *shift,
                      const float *alpha, void *out, int out_f32, int threads) {
    plan_t plan;
    if (make_plan(&plan, n) != 0 || step < 1 || step > n || dilation < 1 || blocks < 1 || threads < 1) return -1;
    if ((scale == NULL) != (shift == NULL) || (scale == NULL) != (alpha == NULL) || (scale == NULL) != (center == NULL))
        return -1;
    const int m = plan.m;
    const int64_t columns = (int64_t)batch * dilation * blocks;
    const int64_t plane = (int64_t)channels * columns; /* one spectrum row over all channels */
    /* a phase buffer holds every block of the row's groups, spare lanes of the last group included */
    const int64_t groups = (blocks + LANES - 1) / LANES;
    const int64_t count = groups * LANES * (int64_t)step + n;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *phase = malloc((size_t)count * sizeof(float));
        /* a dilated convolution's activated (or widened bf16) row, which its phases are copied from */
        const int staged = dilation > 1 && (scale != NULL || x_bf16);
        float *staging = staged ? malloc((size_t)(length > 0 ? length : 1) * sizeof(float)) : NULL;
        if (phase == NULL || (staged && staging == NULL)) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int bc = 0; bc < batch * channels; bc++) {
            if (phase == NULL || (staged && staging == NULL)) continue;
            const int b = bc / channels, c = bc % channels;
            const void *row = row_of(x, x_bf16, bc, length);
            act_t act = {0, 0.0f, 1.0f, 0.0f, 0.0f, 0.0f};
            if (scale) {
                act.on = 1;
                act.center = center[bc];
                act.scale = scale[bc];
                act.shift = shift[bc];
                act.twice_alpha = 2.0f * alpha[c];
                act.half_inv_alpha = 1.0f / act.twice_alpha;
            }
            vf re[MAX_HALF], im[MAX_HALF];
            const void *source = row;
            int source_bf16 = x_bf16;
            if (staged) {
                activate_row(row, x_bf16, length, &act, staging);
                source = staging;
                source_bf16 = 0;
                act.on = 0;
            }
            for (int r = 0; r < dilation; r++) {
                fill_phase(source, source_bf16, length, dilation, (int64_t)r - left, count, &act, phase);
                const int64_t dst = (int64_t)c * columns + ((int64_t)b * dilation + r) * blocks;
                for (int j0 = 0; j0 < blocks; j0 += LANES) {
                    const int lanes = blocks - j0 < LANES ? blocks - j0 : LANES;
                    load_blocks(&plan, phase + (int64_t)j0 * step, step, re, im);
                    fft(&plan, re, im);
                    /* the real block's spectrum from the packed one: X_f = E_f + exp(-2 pi i f / n) O_f */
                    const int64_t at = dst + j0;
                    store_at(out, out_f32, at, re[0] + im[0], lanes);
                    store_at(out, out_f32, at + plane, re[0] - im[0], lanes);
                    for (int f = 1; f < m; f++) {
                        const float cr = plan.cr[f], ci = plan.ci[f];
                        const vf a = re[f], bb = im[f], cc = re[m - f], e = im[m - f];
                        const vf er = 0.5f * (a + cc), ei = 0.5f * (bb - e);
                        const vf or_ = 0.5f * (bb + e), oi = 0.5f * (cc - a);
                        store_at(out, out_f32, at + (int64_t)(2 * f) * plane, er + cr * or_ - ci * oi, lanes);
                        store_at(out, out_f32, at + (int64_t)(2 * f + 1) * plane, ei + cr * oi + ci * or_, lanes);
                    }
                }
            }
        }
        free(phase);
        free(staging);
    }
    return failed ? -2 : 0;
}

/* Output sample i of every lane's block (after the inverse FFT, unscaled): x[2t] = re[t], x[2t+1] = -im[t]. */
static inline vf sample(const vf *re, const vf *im, int i) { return i & 1 ? -im[i / 2] : re[i / 2]; }

/* The first `step` samples of LANES blocks, times `scale` plus `bias`, written (or added) to a row. */
static void store_blocks(const plan_t *p, const vf *re, const vf *im, float *row, int length, int dilation,
                         int step, int64_t first, int lanes, float scale, float bias, int accumulate) {
    const int64_t stride = (int64_t)dilation * step;
    const int inside = lanes == LANES && first + stride * LANES - dilation < length;
    (void)p; /* its block length picks the transposed path where there is one */
#ifdef KOEL_TRANSPOSE
    if (inside && dilation == 1 && p->n >= LANES) { /* d = 1: the blocks' outputs are contiguous */
        for (int i0 = 0; i0 < step; i0 += LANES) {
            vreg v[LANES];
            for (int ii = 0; ii < LANES; ii++) v[ii] = (vreg)(sample(re, im, i0 + ii) * scale + bias);
            transpose_lanes(v);
            const int count = step - i0 < LANES ? step - i0 : LANES;
            for (int l = 0; l < LANES; l++) {
                float *at = row + first + l * stride + i0;
                if (count == LANES) {
                    vreg w = v[l];
                    if (accumulate) w += vreg_loadu(at);
                    memcpy(at, &w, sizeof w);
                } else {
                    vreg w = v[l];
                    if (accumulate) w += load_first(at, count);
                    store_first(at, w, count);
                }
            }
        }
        return;
    }
#endif
    if (inside) {
        for (int i = 0; i < step; i++) {
            const vf v = sample(re, im, i) * scale + bias;
            float *at = row + first + (int64_t)dilation * i;
            for (int l = 0; l < LANES; l++) at[l * stride] = accumulate ? at[l * stride] + v[l] : v[l];
        }
        return;
    }
    for (int l = 0; l < lanes; l++) {
        for (int i = 0; i < step; i++) {
            const int64_t pos = first + l * stride + (int64_t)dilation * i;
            if (pos >= length) break;
            const float v = sample(re, im, i)[l] * scale + bias;
            row[pos] = accumulate ? row[pos] + v : v;
        }
    }
}

/* y: [n][channels][columns] mixed spectra, bf16 or float32 (y_f32 = 1) -> out: [batch][channels][length]
 * float32, written (accumulate = 0) or added to; bias: [channels] float32 or NULL. */
int koel_dft_synthesis(const void *y, int y_f32, int batch, int channels, int length, int dilation, int step,
                       int n, int blocks, const float *bias, float *out, int accumulate, int threads) {
    plan_t plan;
    if (make_plan(&plan, n) != 0 || step < 1 || step > n || dilation < 1 || threads < 1) return -1;
    const int m = plan.m;
    const int64_t columns = (int64_t)batch * dilation * blocks;
    const int64_t plane = (int64_t)channels * columns;
    const float scale = 1.0f / (float)m; /* the inverse FFT's 1 / m */
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int bc = 0; bc < batch * channels; bc++) {
        const int b = bc / channels, c = bc % channels;
        float *row = out + (int64_t)bc * length;
        const float shift = bias ? bias[c] : 0.0f;
        vf re[MAX_HALF], im[MAX_HALF], ar[MAX_HALF], ai[MAX_HALF]; /* ar, ai: Y_f, f < m */
        for (int r = 0; r < dilation; r++) {
            const int64_t src = (int64_t)c * columns + ((int64_t)b * dilation + r) * blocks;
            for (int j0 = 0; j0 < blocks; j0 += LANES) {
                const int lanes = blocks - j0 < LANES ? blocks - j0 : LANES;
                const int64_t at = src + j0;
                /* the last blocks of a row leave spare lanes, zero here and never stored */
                ar[0] = load_first_at(y, y_f32, at, lanes);
                const vf nyquist = load_first_at(y, y_f32, at + plane, lanes);
                for (int f = 1; f < m; f++) {
                    ar[f] = load_first_at(y, y_f32, at + (int64_t)(2 * f) * plane, lanes);
                    ai[f] = load_first_at(y, y_f32, at + (int64_t)(2 * f + 1) * plane, lanes);
                }
                /* Z_f = E_f + i O_f: the spectra of the even and odd samples, packed; conjugated into
                 * bit-reversed order so that a forward FFT computes the inverse */
                re[plan.rev[0]] = 0.5f * (ar[0] + nyquist);
                im[plan.rev[0]] = -0.5f * (ar[0] - nyquist);
                for (int f = 1; f < m; f++) {
                    const float cr = plan.cr[f], ci = -plan.ci[f]; /* exp(+2 pi i f / n) */
                    const vf a = ar[f], bb = ai[f], cc = ar[m - f], e = ai[m - f];
                    const vf er = 0.5f * (a + cc), ei = 0.5f * (bb - e);
                    const vf dr = 0.5f * (a - cc), di = 0.5f * (bb + e);
                    re[plan.rev[f]] = er - (dr * ci + di * cr);
                    im[plan.rev[f]] = -(ei + (dr * cr - di * ci));
                }
                fft(&plan, re, im);
                const int64_t first = r + (int64_t)dilation * ((int64_t)j0 * step);
                store_blocks(&plan, re, im, row, length, dilation, step, first, lanes, scale, shift, accumulate);
            }
        }
    }
    return 0;
}

/* LANES values of a row from t, float32 (x_bf16 = 0) or bfloat16; fewer (zero-filled) at its end. */
static inline vf load_row(const void *row, int x_bf16, int64_t t, int64_t length) {
    vf v = {0};
    if (t + LANES <= length) {
        if (x_bf16) return load_bf16((const bf16 *)row + t);
        memcpy(&v, (const float *)row + t, sizeof v);
        return v;
    }
    for (int l = 0; t + l < length; l++)
        v[l] = value_at(row, x_bf16, t + l);
    return v;
}

/* Mean and (biased) variance of one row of x, float32 (x_bf16 = 0) or bfloat16: a sum, then a
 * centred pass over the row (exact whatever the ratio of mean to spread). */
static inline void row_moments(const void *row, int x_bf16, int length, float *mean, float *var) {
    vf acc = {0};
    for (int64_t t = 0; t < length; t += LANES) acc += load_row(row, x_bf16, t, length);
    double sum = 0.0;
    for (int l = 0; l < LANES; l++) sum += acc[l];
    const float m = (float)(sum / length);
    vf sq = {0};
    int64_t t = 0;
    for (; t + LANES <= length; t += LANES) {
        const vf v = load_row(row, x_bf16, t, length) - m;
        sq += v * v;
    }
    double squares = 0.0;
    for (int l = 0; l < LANES; l++) squares += sq[l];
    for (; t < length; t++) {
        const float v = value_at(row, x_bf16, t) - m;
        squares += (double)v * v;
    }
    *mean = m;
    *var = (float)(squares / length);
}

/* Mean and (biased) variance of each row of x [rows][length] (row_moments). */
int koel_row_stats(const void *x, int x_bf16, int rows, int length, float *mean, float *var, int threads) {
    if (rows < 0 || length < 1 || threads < 1) return -1;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int i = 0; i < rows; i++) row_moments(row_of(x, x_bf16, i, length), x_bf16, length, mean + i, var + i);
    return 0;
}

/* The merge of running_affine rounds every product and sum on its own, as PyTorch's tensor operations
 * do (no fused multiply-adds), so its results equal those of the same formulas in PyTorch bit for bit. */
#if defined(__clang__)
#define STRICT_ROUNDING __attribute__((noinline))
#define STRICT_ROUNDING_BODY _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define STRICT_ROUNDING __attribute__((noinline, optimize("fp-contract=off")))
#define STRICT_ROUNDING_BODY
#else
#define STRICT_ROUNDING
#define STRICT_ROUNDING_BODY
#endif

typedef struct {
    const double *prev_mean, *prev_m2;  /* NULL: no earlier tiles */
    double total, share, weight;        /* counts: all, length / all, prev * length / all */
    const float *gamma, *beta;
    float eps;
    double *mean_out, *m2_out;
    float *center, *scale, *shift;
} running_t;

STRICT_ROUNDING static void running_merge(const running_t *r, int i, float m, float var, int length) {
    STRICT_ROUNDING_BODY
    const double local = (double)m;
    double mean = local;
    double m2 = (double)var * (double)length;
    if (r->prev_mean != NULL) {
        const double delta = local - r->prev_mean[i];
        const double step = delta * r->share;
        mean = r->prev_mean[i] + step;
        const double both = r->prev_m2[i] + m2;
        const double spread = (delta * delta) * r->weight;
        m2 = both + spread;
    }
    r->mean_out[i] = mean;
    r->m2_out[i] = m2;
    const float variance = (float)(m2 / r->total);
    const float level = variance + r->eps;
    const float inverse = 1.0f / sqrtf(level);
    const float gain = 1.0f + r->gamma[i];
    const float s = gain * inverse;
    const float offset = (float)(mean - local);
    const float moved = offset * s;
    r->center[i] = m;
    r->scale[i] = s;
    r->shift[i] = r->beta[i] - moved;
}

/* AdaIN's affine for one time tile of a stream, over the statistics of this tile and every earlier
 * one: for each row i of x [rows][length] its own mean m (the kernel's centre: center[i]) and
 * centred sum of squares (row_moments, as koel_row_stats), merged in double (Chan et al.) with the
 * earlier tiles' mean prev_mean[i], centred sum of squares prev_m2[i] and count prev_count (none
 * when prev_mean is NULL; a prior's count may be scaled, so it is a double) into mean_out[i],
 * m2_out[i]; then scale = (1 + gamma) / sqrt(float(m2 / count) + eps) and
 * shift = beta - float(mean - m) * scale, so AdaIN(x) = (x - center) * scale + shift. */
int koel_running_affine(const void *x, int x_bf16, int rows, int length, const double *prev_mean,
                        const double *prev_m2, double prev_count, const float *gamma, const float *beta,
                        float eps, double *mean_out, double *m2_out, float *center, float *scale,
                        float *shift, int threads) {
    const int merge = prev_mean != NULL;
    if (rows < 0 || length < 1 || threads < 1 || (merge && (prev_m2 == NULL || !(prev_count >= 0)))) return -1;
    running_t r = {prev_mean, prev_m2, 0, 0, 0, gamma, beta, eps, mean_out, m2_out, center, scale, shift};
    r.total = merge ? prev_count + (double)length : (double)length;
    r.share = (double)length / r.total;
    r.weight = (merge ? prev_count * (double)length : 0.0) / r.total;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int i = 0; i < rows; i++) {
        float m, var;
        row_moments(row_of(x, x_bf16, i, length), x_bf16, length, &m, &var);
        running_merge(&r, i, m, var, length);
    }
    return 0;
}

/* out = x + t for float32 x and out (out may be x) and a bfloat16 t, all [count]: the residual add
 * after a direct bf16 convolution, in one pass (PyTorch converts t first, or takes a slow
 * mixed-dtype path). */
int koel_add_bf16(const float *x, const bf16 *t, float *out, int64_t count, int threads) {
    if (count < 0 || threads < 1) return -1;
    const int64_t chunks = (count + 4095) / 4096;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t end = (c + 1) * 4096 < count ? (c + 1) * 4096 : count;
        int64_t i = c * 4096;
        for (; i + LANES <= end; i += LANES) {
            vf v;
            memcpy(&v, x + i, sizeof v);
            v += load_bf16(t + i);
            memcpy(out + i, &v, sizeof v);
        }
        for (; i < end; i++) out[i] = x[i] + from_bf16(t[i]);
    }
    return 0;
}

/* out = Snake((x - center) * scale + shift) in bf16, or float32 where out_f32, for the convolutions
 * that stay direct; x (float32, or bfloat16 where x_bf16) and out [batch][channels][length], center,
 * scale, shift [batch][channels], alpha [channels]. */
int koel_snake(const void *x, int x_bf16, int batch, int channels, int length, const float *center,
               const float *scale, const float *shift, const float *alpha, void *out, int out_f32, int threads) {
    if (batch < 0 || channels < 0 || length < 0 || threads < 1) return -1;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int bc = 0; bc < batch * channels; bc++) {
        const void *row = row_of(x, x_bf16, bc, length);
        const int64_t dst = (int64_t)bc * length;
        act_t act = {1, center[bc], scale[bc], shift[bc], 2.0f * alpha[bc % channels], 0.0f};
        act.half_inv_alpha = 1.0f / act.twice_alpha;
        int64_t t = 0;
        /* whole vectors in two loops, one per input type: one loop through load_row ran 5x slower */
        if (x_bf16)
            for (; t + LANES <= length; t += LANES)
                store_at(out, out_f32, dst + t, activate(&act, load_bf16((const bf16 *)row + t)), LANES);
        else
            for (; t + LANES <= length; t += LANES) {
                vf v;
                memcpy(&v, (const float *)row + t, sizeof v);
                store_at(out, out_f32, dst + t, activate(&act, v), LANES);
            }
        if (t < length) /* the tail, through one zero-padded vector */
            store_at(out, out_f32, dst + t, activate(&act, load_row(row, x_bf16, t, length)), (int)(length - t));
    }
    return 0;
}

/* ---- Winograd F(4, 3) transforms for the 3-tap convolutions ------------------------------------
 * A 3-tap 'same' convolution (padding = dilation) computes 4 outputs of a tile of 6 inputs as
 * Y = A^T [(G g) . (B^T d)]: 6 products per channel pair instead of 12, so the channel mixing, done
 * by koel_mix as one product per transform point ([6][C_out][C_in] weights G g, packed once), costs
 * half the direct convolution's. Dilation d runs polyphase as in the DFT transforms: phase r is the
 * undilated signal p[t] = x[r + d t]. Tile j of a phase reads p[4j - 1 .. 4j + 4] (zero outside) and
 * gives outputs p-positions 4j .. 4j + 3; columns are ordered (batch item, phase, tile) like the
 * spectra's. The transforms run on 8 tiles at a time, one per lane. */
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
#define WINO_TILES 8

/* Lanes of two 8-float vectors by index (0-7 the first, 8-15 the second): clang's builtin, which GCC
 * has since 12; older GCC has its own. */
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#endif
#endif
#ifndef SHUFFLE8
#define SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, (v8i){__VA_ARGS__})
#endif

/* The 4-way deinterleave of 32 consecutive samples s[0..31] (four vectors): d[q][l] = s[4 l + q].
 * (The transforms' data movement: vector shuffles where the first version copied lane by lane,
 * which took longer than the transforms' arithmetic; the arithmetic is unchanged, bit for bit.) */
static inline void deinterleave4(const float *s, v8 d[4]) {
    v8 a0, a1, a2, a3;
    memcpy(&a0, s, sizeof a0);
    memcpy(&a1, s + 8, sizeof a1);
    memcpy(&a2, s + 16, sizeof a2);
    memcpy(&a3, s + 24, sizeof a3);
    const v8 p0 = SHUFFLE8(a0, a1, 0, 4, 8, 12, 1, 5, 9, 13), p1 = SHUFFLE8(a0, a1, 2, 6, 10, 14, 3, 7, 11, 15);
    const v8 p2 = SHUFFLE8(a2, a3, 0, 4, 8, 12, 1, 5, 9, 13), p3 = SHUFFLE8(a2, a3, 2, 6, 10, 14, 3, 7, 11, 15);
    d[0] = SHUFFLE8(p0, p2, 0, 1, 2, 3, 8, 9, 10, 11);
    d[1] = SHUFFLE8(p0, p2, 4, 5, 6, 7, 12, 13, 14, 15);
    d[2] = SHUFFLE8(p1, p3, 0, 1, 2, 3, 8, 9, 10, 11);
    d[3] = SHUFFLE8(p1, p3, 4, 5, 6, 7, 12, 13, 14, 15);
}

/* Its inverse: o[4 l + k] = y[k][l], 32 samples in order. */
static inline void interleave4(const v8 y[4], float *o) {
    const v8 q0 = SHUFFLE8(y[0], y[1], 0, 8, 1, 9, 2, 10, 3, 11), q1 = SHUFFLE8(y[0], y[1], 4, 12, 5, 13, 6, 14, 7, 15);
    const v8 r0 = SHUFFLE8(y[2], y[3], 0, 8, 1, 9, 2, 10, 3, 11), r1 = SHUFFLE8(y[2], y[3], 4, 12, 5, 13, 6, 14, 7, 15);
    const v8 o0 = SHUFFLE8(q0, r0, 0, 1, 8, 9, 2, 3, 10, 11), o1 = SHUFFLE8(q0, r0, 4, 5, 12, 13, 6, 7, 14, 15);
    const v8 o2 = SHUFFLE8(q1, r1, 0, 1, 8, 9, 2, 3, 10, 11), o3 = SHUFFLE8(q1, r1, 4, 5, 12, 13, 6, 7, 14, 15);
    memcpy(o, &o0, sizeof o0);
    memcpy(o + 8, &o1, sizeof o1);
    memcpy(o + 16, &o2, sizeof o2);
    memcpy(o + 24, &o3, sizeof o3);
}

/* x [batch][channels][length] -> v [6][channels][batch * dilation * tiles] (B^T d per tile). Each phase
 * is first copied out, zero-padded, into a buffer, from which every group of 8 tiles is read with
 * plain vector loads. (Applying the resblocks' Snake as the phase is copied, as the block-DFT
 * analysis does, instead of in a pass of its own, measured no faster over the whole engine.) */
int koel_wino_in(const float *x, int batch, int channels, int length, int dilation, int tiles, float *v,
                 int threads) {
    if (batch < 1 || channels < 1 || length < 1 || dilation < 1 || tiles < 1 || threads < 1) return 1;
    const int64_t cols = (int64_t)batch * dilation * tiles, plane = (int64_t)channels * cols;
    const int64_t groups = (tiles + WINO_TILES - 1) / WINO_TILES;
    const int64_t padded = 4 * groups * WINO_TILES + 8; /* phase[k] = p[k - 1]: every group's 36 reads */
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *phase = malloc((size_t)padded * sizeof(float));
        if (phase == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int bc = 0; bc < batch * channels; bc++) {
            if (phase == NULL) continue;
            const int b = bc / channels, c = bc % channels;
            const float *row = x + (int64_t)bc * length;
            for (int r = 0; r < dilation; r++) {
                const int64_t count = r < length ? (length - r + dilation - 1) / dilation : 0; /* p's length */
                phase[0] = 0.0f;
                if (dilation == 1)
                    memcpy(phase + 1, row, (size_t)length * sizeof(float));
                else
                    for (int64_t t = 0; t < count; t++) phase[1 + t] = row[r + (int64_t)dilation * t];
                memset(phase + 1 + count, 0, (size_t)(padded - 1 - count) * sizeof(float));
                float *dst = v + (int64_t)c * cols + ((int64_t)b * dilation + r) * tiles;
                for (int j0 = 0; j0 < tiles; j0 += WINO_TILES) {
                    const int n = tiles - j0 < WINO_TILES ? tiles - j0 : WINO_TILES;
                    v8 d[6], e[4]; /* d[q][l] = p[4 (j0 + l) - 1 + q] */
                    deinterleave4(phase + 4 * (int64_t)j0, d);
                    deinterleave4(phase + 4 * (int64_t)j0 + 4, e);
                    d[4] = e[0];
                    d[5] = e[1];
                    v8 w[6];
                    w[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
                    w[1] = d[3] + d[4] - 4.0f * (d[1] + d[2]);
                    w[2] = d[4] - d[3] + 4.0f * (d[1] - d[2]);
                    w[3] = d[4] - d[2] + 2.0f * (d[3] - d[1]);
                    w[4] = d[4] - d[2] + 2.0f * (d[1] - d[3]);
                    w[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
                    for (int i = 0; i < 6; i++) {
                        if (n == WINO_TILES)
                            memcpy(dst + i * plane + j0, &w[i], sizeof w[i]);
                        else
                            memcpy(dst + i * plane + j0, &w[i], (size_t)n * sizeof(float));
                    }
                }
            }
        }
        free(phase);
    }
    return failed;
}

/* m [6][channels][batch * dilation * tiles] (the mixed transforms) -> out [batch][channels][length]
 * float32, A^T m per tile plus bias [channels] (or NULL), written (accumulate = 0) or added to. */
int koel_wino_out(const float *m, int batch, int channels, int length, int dilation, int tiles, const float *bias,
                  float *out, int accumulate, int threads) {
    if (batch < 1 || channels < 1 || length < 1 || dilation < 1 || tiles < 1 || threads < 1) return 1;
    const int64_t cols = (int64_t)batch * dilation * tiles, plane = (int64_t)channels * cols;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int bc = 0; bc < batch * channels; bc++) {
        const int b = bc / channels, c = bc % channels;
        float *row = out + (int64_t)bc * length;
        const float shift = bias ? bias[c] : 0.0f;
        for (int r = 0; r < dilation; r++) {
            const float *src = m + (int64_t)c * cols + ((int64_t)b * dilation + r) * tiles;
            for (int j0 = 0; j0 < tiles; j0 += WINO_TILES) {
                const int n = tiles - j0 < WINO_TILES ? tiles - j0 : WINO_TILES;
                v8 a[6] = {{0}};
                for (int i = 0; i < 6; i++) {
                    if (n == WINO_TILES)
                        memcpy(&a[i], src + i * plane + j0, sizeof a[i]);
                    else
                        memcpy(&a[i], src + i * plane + j0, (size_t)n * sizeof(float));
                }
                const v8 p = a[1] + a[2], q = a[1] - a[2], u = a[3] + a[4], w = a[3] - a[4];
                v8 y[4];
                y[0] = a[0] + p + u + shift;
                y[1] = q + 2.0f * w + shift;
                y[2] = p + 4.0f * u + shift;
                y[3] = q + 8.0f * w + a[5] + shift;
                float o[4 * WINO_TILES]; /* outputs p-positions 4 j0 .. in order */
                interleave4(y, o);
                const int64_t t0 = 4 * (int64_t)j0;
                if (dilation == 1 && n == WINO_TILES && t0 + 4 * WINO_TILES <= length) {
                    float *at = row + t0;
                    if (accumulate)
                        for (int k = 0; k < 4 * WINO_TILES; k++) at[k] += o[k];
                    else
                        memcpy(at, o, sizeof o);
                } else {
                    for (int k = 0; k < 4 * n; k++) {
                        const int64_t at = r + (int64_t)dilation * (t0 + k);
                        if (at >= length) break;
                        row[at] = accumulate ? row[at] + o[k] : o[k];
                    }
                }
            }
        }
    }
    return 0;
}

/* ---- Channel mixing and direct convolutions, float32 ------------------------------------------
 * The per-bin products of BlockDFTConv1d: y[g] = W[g] x[g] for each of `groups` bins (or bin pairs),
 * W [M][K], x [K][N], y [M][N]. N (blocks) is small for short utterances and for the first tiles of a
 * stream (30-300 columns), where a general GEMM spends much of its time packing W again on every
 * call: 8-16 MB of mixing weights per convolution, read from memory 36 times per generator pass.
 * Here W is packed once, when the model is loaded, in the order the micro-kernel reads it: MIX_MR
 * rows at a time, [groups][ceil(M / MIX_MR)][K][MIX_MR] (rows past M zero). Each call copies a
 * panel of x (that fits in L2) into strips of MIX_NR columns and streams W through it once, MIX_KC
 * rows of K at a time (longer K accumulates into y).
 * On the 2-core Zen 3 of bench/speed.py the 36 mixings of a 3 s utterance took 251 ms against
 * 320 ms for torch.bmm (0.72 s: 69 against 111 ms).
 *
 * The same product runs the direct (short-kernel) convolutions, with x read through the kernel's
 * taps as it is packed: row t * C_in + c of the virtual x is input channel c shifted by
 * t * dilation - padding, so no unfolded copy is ever made. */
#ifdef _OPENMP
#include <omp.h>
static inline int omp_threads(void) { return omp_get_num_threads(); }
static inline int omp_me(void) { return omp_get_thread_num(); }
#else
static inline int omp_threads(void) { return 1; }
static inline int omp_me(void) { return 0; }
#endif
#define MIX_MR 6
#define MIX_NR 16
#define MIX_KC 256
#define MIX_PANEL_BYTES (192 << 10)

int koel_mix_rows(void) { return MIX_MR; }

#if defined(__AVX2__) && defined(__FMA__)
int koel_mix_available(void) { return 1; }

/* Columns [c0, c0 + cols) of x[K][N] as strips of MIX_NR: b[strip][K][MIX_NR], zero-padded. */
static void mix_pack(const float *x, int K, int N, int c0, int cols, float *b) {
    for (int s = 0; s * MIX_NR < cols; s++) {
        float *dst = b + (int64_t)s * K * MIX_NR;
        const float *src = x + c0 + s * MIX_NR;
        int n = cols - s * MIX_NR < MIX_NR ? cols - s * MIX_NR : MIX_NR;
        if (n == MIX_NR) {
            for (int k = 0; k < K; k++) {
                _mm256_store_ps(dst + k * MIX_NR, _mm256_loadu_ps(src + (int64_t)k * N));
                _mm256_store_ps(dst + k * MIX_NR + 8, _mm256_loadu_ps(src + (int64_t)k * N + 8));
            }
        } else {
            for (int k = 0; k < K; k++)
                for (int c = 0; c < MIX_NR; c++) dst[k * MIX_NR + c] = c < n ? src[(int64_t)k * N + c] : 0.0f;
        }
    }
}

/* The same strips for a convolution: output columns [c0, c0 + cols) of one item x[C_in][length];
 * strip row t * C_in + c holds x[c][j + t * dilation - pad] (zero outside the signal). */
static void conv_pack(const float *x, int c_in, int length, int taps, int dilation, int pad, int c0, int cols,
                      float *b) {
    const int K = taps * c_in;
    for (int s = 0; s * MIX_NR < cols; s++) {
        float *dst = b + (int64_t)s * K * MIX_NR;
        const int j0 = c0 + s * MIX_NR;
        const int n = cols - s * MIX_NR < MIX_NR ? cols - s * MIX_NR : MIX_NR;
        for (int t = 0; t < taps; t++) {
            const int start = j0 + t * dilation - pad; /* input sample of the strip's first column */
            float *d = dst + (int64_t)t * c_in * MIX_NR;
            if (n == MIX_NR && start >= 0 && start + MIX_NR <= length) {
                for (int c = 0; c < c_in; c++) {
                    const float *src = x + (int64_t)c * length + start;
                    _mm256_store_ps(d + c * MIX_NR, _mm256_loadu_ps(src));
                    _mm256_store_ps(d + c * MIX_NR + 8, _mm256_loadu_ps(src + 8));
                }
            } else {
                for (int c = 0; c < c_in; c++) {
                    const float *src = x + (int64_t)c * length;
                    for (int i = 0; i < MIX_NR; i++) {
                        const int at = start + i;
                        d[c * MIX_NR + i] = i < n && at >= 0 && at < length ? src[at] : 0.0f;
                    }
                }
            }
        }
    }
}

/* rows x cols (at most MIX_MR x MIX_NR) outputs of one packed W tile and one strip over K rows,
 * stored (add = 0; plus bias[r] or bias_col[i] when given) or added into y, output (r, i) at
 * y[r * ld + i * step].
 * The 12 accumulators are named variables: as an array, GCC stored them to the stack on every step. */
#define MIX_ROW(r, c0, c1)                                  \
    do {                                                    \
        const __m256 w = _mm256_broadcast_ss(ak + (r));     \
        c0 = _mm256_fmadd_ps(w, b0, c0);                    \
        c1 = _mm256_fmadd_ps(w, b1, c1);                    \
    } while (0)

static inline void mix_tile(const float *a, const float *b, int K, int rows, int cols, float *y, int64_t ld,
                            int64_t step, int add, const float *bias, const float *bias_col) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < K; k++) {
        const __m256 b0 = _mm256_load_ps(b + k * MIX_NR), b1 = _mm256_load_ps(b + k * MIX_NR + 8);
        const float *ak = a + k * MIX_MR;
        MIX_ROW(0, c00, c01);
        MIX_ROW(1, c10, c11);
        MIX_ROW(2, c20, c21);
        MIX_ROW(3, c30, c31);
        MIX_ROW(4, c40, c41);
        MIX_ROW(5, c50, c51);
    }
    const __m256 c[MIX_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < rows; r++) {
        float *dst = y + (int64_t)r * ld;
        float tmp[MIX_NR];
        const __m256 offset = bias ? _mm256_set1_ps(bias[r]) : _mm256_setzero_ps();
        __m256 v0 = _mm256_add_ps(c[r][0], offset), v1 = _mm256_add_ps(c[r][1], offset);
        if (bias_col) { /* a bias per column (zero-padded to MIX_NR) */
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias_col));
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias_col + 8));
        }
        if (cols == MIX_NR && step == 1) {
            if (add) {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(dst));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(dst + 8));
            }
            _mm256_storeu_ps(dst, v0);
            _mm256_storeu_ps(dst + 8, v1);
        } else {
            _mm256_storeu_ps(tmp, v0);
            _mm256_storeu_ps(tmp + 8, v1);
            for (int i = 0; i < cols; i++) dst[i * step] = add ? dst[i * step] + tmp[i] : tmp[i];
        }
    }
}

/* mix_tile for a last strip of at most 8 columns (the strip's other 8 are its zero padding): half
 * the multiply-adds of a full tile, which a few dozen columns (a stream's first tile) would waste. */
static inline void mix_tile8(const float *a, const float *b, int K, int rows, int cols, float *y, int64_t ld,
                             int64_t step, int add, const float *bias) {
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
    for (int k = 0; k < K; k++) {
        const __m256 v = _mm256_load_ps(b + k * MIX_NR);
        const float *ak = a + k * MIX_MR;
        c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak), v, c0);
        c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 1), v, c1);
        c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 2), v, c2);
        c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 3), v, c3);
        c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 4), v, c4);
        c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 5), v, c5);
    }
    const __m256 c[MIX_MR] = {c0, c1, c2, c3, c4, c5};
    for (int r = 0; r < rows; r++) {
        float *dst = y + (int64_t)r * ld, tmp[8];
        _mm256_storeu_ps(tmp, bias ? _mm256_add_ps(c[r], _mm256_set1_ps(bias[r])) : c[r]);
        for (int i = 0; i < cols; i++) dst[i * step] = add ? dst[i * step] + tmp[i] : tmp[i];
    }
}

/* Packed weights, float32 or float16 (f16 = 1: half the bytes to read, which a product on a few dozen
 * columns waits for, and half the memory; each W tile is widened to float32 in L1, once for all the
 * strips it meets, so the products are the float32 ones of the rounded weights). */
typedef struct {
    const void *p;
    int f16;
} wref_t;

static inline wref_t w_at(wref_t w, int64_t elements) {
    w.p = (const char *)w.p + elements * (w.f16 ? 2 : 4);
    return w;
}

/* One IEEE float16 value as a float32 (exact: every float16 is a float32). */
static inline float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    uint32_t bits;
    if (exponent == 0x1f) /* infinity, NaN */
        bits = sign | 0x7f800000u | mantissa << 13;
    else if (exponent) /* normal: rebias 15 -> 127 */
        bits = sign | (exponent + 112) << 23 | mantissa << 13;
    else { /* zero or subnormal: mantissa x 2^-24 */
        const float v = (float)mantissa * 5.9604644775390625e-8f;
        memcpy(&bits, &v, sizeof bits);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* count float16 values -> float32 in dst (32-byte aligned): F16C's conversion, 8 at a time. */
static void widen(const uint16_t *src, int count, float *dst) {
    int i = 0;
#if defined(__F16C__)
    for (; i + 8 <= count; i += 8)
        _mm256_store_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < count; i++) dst[i] = half_to_float(src[i]);
}

/* Rows [t0, t1) tiles of y[:, c0 : c0 + cols] (+)= W b for one packed panel b [strips][K][MIX_NR];
 * y's rows ld apart, its columns step apart (1, or the row length of a transposed y). */
static void mix_panel(wref_t w, const float *b, int M, int K, int t0, int t1, int cols, float *y, int64_t ld,
                      int64_t step, int add, const float *bias) {
    float wide[MIX_KC * MIX_MR] __attribute__((aligned(32)));
    for (int k0 = 0; k0 < K; k0 += MIX_KC) { /* a kc x cols slice of the panel stays in L2 */
        const int kc = K - k0 < MIX_KC ? K - k0 : MIX_KC;
        for (int t = t0; t < t1; t++) { /* one W tile (kc x 6 floats) against every strip */
            const int rows = M - t * MIX_MR < MIX_MR ? M - t * MIX_MR : MIX_MR;
            const wref_t tile = w_at(w, ((int64_t)t * K + k0) * MIX_MR);
            /* The next W tile into L2 while this one works: its first touch otherwise waits on memory
             * (the hardware prefetcher stops at page boundaries). With cold weights the products of
             * a few dozen columns took 0.8-0.9x the time, of 80-150 columns 0.9-0.97x; the whole
             * fp32 engine 0.93x. Prefetching across k slices and products as well bought nothing. */
            if (t + 1 < t1) {
                const char *next = w_at(w, ((int64_t)(t + 1) * K + k0) * MIX_MR).p;
                const int64_t bytes = (int64_t)kc * MIX_MR * (w.f16 ? 2 : 4);
                for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(next + o, _MM_HINT_T1);
            }
            const float *a = tile.p;
            if (tile.f16) {
                widen(tile.p, kc * MIX_MR, wide);
                a = wide;
            }
            for (int s = 0; s * MIX_NR < cols; s++) {
                const int n = cols - s * MIX_NR < MIX_NR ? cols - s * MIX_NR : MIX_NR;
                const float *strip = b + ((int64_t)s * K + k0) * MIX_NR;
                const float *offset = k0 == 0 && bias ? bias + t * MIX_MR : NULL;
                float *out = y + (int64_t)t * MIX_MR * ld + (int64_t)s * MIX_NR * step;
                if (n <= 8)
                    mix_tile8(a, strip, kc, rows, n, out, ld, step, add || k0 > 0, offset);
                else
                    mix_tile(a, strip, kc, rows, n, out, ld, step, add || k0 > 0, offset, NULL);
            }
        }
    }
}

/* How one call is cut into work items: `units` (bins or batch items) x panels of columns x parts of
 * W's rows. Rows are split only when there are too few panels to keep every thread busy; each part
 * then packs the same panel (cheap next to its share of the products) and reads only its rows of W,
 * so W is read from memory once per panel. */
typedef struct {
    int tiles, panel, panels, parts, items;
} mix_plan_t;

static mix_plan_t mix_plan(int units, int M, int N, int threads) {
    mix_plan_t p;
    p.tiles = (M + MIX_MR - 1) / MIX_MR;
    p.panel = MIX_PANEL_BYTES / (MIX_KC * (int)sizeof(float)) / MIX_NR * MIX_NR;
    if (p.panel > N) p.panel = (N + MIX_NR - 1) / MIX_NR * MIX_NR;
    p.panels = (N + p.panel - 1) / p.panel;
    p.parts = units * p.panels >= 2 * threads ? 1 : threads;
    if (p.parts > p.tiles) p.parts = p.tiles;
    p.items = units * p.panels * p.parts;
    return p;
}

/* One call's products, y[u] (+)= W[u] x[u] (+ bias) for `units` items u: x[u] a plain [K][N] matrix
 * (taps = 0) or a convolution's input [c_in][length] read through its taps (K = taps * c_in). The
 * strides step each pointer from one unit to the next (0: shared by all). */
typedef struct {
    const float *x;
    wref_t w;
    const float *bias;
    float *y;
    int64_t x_unit, w_unit, y_unit;
    int units, M, K, N, accumulate;
    int c_in, length, taps, dilation, pad;
    int complex; /* x, y, w hold a complex product's parts (koel_cmix) */
} mix_job_t;

/* Complex channel products in three real ones (the 3M method). For each bin g, X = Xr + i Xi and
 * W = A + i B: Re Y = A Xr - B Xi and Im Y = B Xr + A Xi, computed as T = A (Xr + Xi),
 * Re Y = T - (A + B) Xi, Im Y = T + (B - A) Xr: 3 M K N multiply-adds instead of the 4 M K N of the
 * real form [[A, -B], [B, A]]. x [groups][2][K][N] (real, imaginary), y [groups][2][M][N],
 * w [groups][3][ceil(M / MIX_MR)][K][MIX_MR]: A, -(A + B), B - A packed as koel_mix's.
 * (Running the three products of each output tile back to back, T kept in registers rather than
 * stored, copied and read back, was 3% slower on a stream's first-tile shapes: three W tiles and
 * three strips no longer fit in L1.) */
static void mix_pack_sum(const float *xr, const float *xi, int K, int N, int c0, int cols, float *b) {
    for (int s = 0; s * MIX_NR < cols; s++) {
        float *dst = b + (int64_t)s * K * MIX_NR;
        const int64_t at = c0 + s * MIX_NR;
        const int n = cols - s * MIX_NR < MIX_NR ? cols - s * MIX_NR : MIX_NR;
        if (n == MIX_NR) {
            for (int k = 0; k < K; k++) {
                const int64_t i = at + (int64_t)k * N;
                _mm256_store_ps(dst + k * MIX_NR, _mm256_add_ps(_mm256_loadu_ps(xr + i), _mm256_loadu_ps(xi + i)));
                _mm256_store_ps(dst + k * MIX_NR + 8,
                                _mm256_add_ps(_mm256_loadu_ps(xr + i + 8), _mm256_loadu_ps(xi + i + 8)));
            }
        } else {
            for (int k = 0; k < K; k++)
                for (int c = 0; c < MIX_NR; c++) {
                    const int64_t i = at + (int64_t)k * N + c;
                    dst[k * MIX_NR + c] = c < n ? xr[i] + xi[i] : 0.0f;
                }
        }
    }
}

/* One work item of a complex product: rows [t0, t1) tiles of columns [c0, c0 + cols) of unit u. */
static void cmix_item(const mix_job_t *j, int u, int c0, int cols, int t0, int t1, float *b) {
    const int64_t x_part = (int64_t)j->K * j->N, y_part = (int64_t)j->M * j->N, w_part = j->w_unit / 3;
    const float *xr = j->x + u * j->x_unit, *xi = xr + x_part;
    const wref_t w = w_at(j->w, u * j->w_unit);
    float *re = j->y + u * j->y_unit + c0, *im = re + y_part;
    mix_pack_sum(xr, xi, j->K, j->N, c0, cols, b);
    mix_panel(w, b, j->M, j->K, t0, t1, cols, re, j->N, 1, 0, NULL); /* T */
    const int r1 = t1 * MIX_MR < j->M ? t1 * MIX_MR : j->M;
    for (int r = t0 * MIX_MR; r < r1; r++)
        memcpy(im + (int64_t)r * j->N, re + (int64_t)r * j->N, (size_t)cols * sizeof(float));
    mix_pack(xi, j->K, j->N, c0, cols, b);
    mix_panel(w_at(w, w_part), b, j->M, j->K, t0, t1, cols, re, j->N, 1, 1, NULL); /* - (A + B) Xi */
    mix_pack(xr, j->K, j->N, c0, cols, b);
    mix_panel(w_at(w, 2 * w_part), b, j->M, j->K, t0, t1, cols, im, j->N, 1, 1, NULL); /* + (B - A) Xr */
}

static int mix_run(const mix_job_t *j, int threads) {
    const mix_plan_t p = mix_plan(j->units, j->M, j->N, threads);
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *b = aligned_alloc(64, (size_t)j->K * (size_t)p.panel * sizeof(float));
        if (!b) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < p.items; item++) {
            if (!b) continue;
            const int part = item % p.parts, u = item / p.parts / p.panels;
            const int c0 = item / p.parts % p.panels * p.panel, cols = j->N - c0 < p.panel ? j->N - c0 : p.panel;
            const int t0 = p.tiles * part / p.parts, t1 = p.tiles * (part + 1) / p.parts;
            if (j->complex) {
                cmix_item(j, u, c0, cols, t0, t1, b);
                continue;
            }
            const float *x = j->x + u * j->x_unit;
            if (j->taps)
                conv_pack(x, j->c_in, j->length, j->taps, j->dilation, j->pad, c0, cols, b);
            else
                mix_pack(x, j->K, j->N, c0, cols, b);
            mix_panel(w_at(j->w, u * j->w_unit), b, j->M, j->K, t0, t1, cols, j->y + u * j->y_unit + c0, j->N,
                      1, j->accumulate, j->bias);
        }
        free(b);
    }
    return failed;
}

int koel_mix(const float *x, float *y, const void *w, int w_f16, int groups, int M, int K, int N, int threads) {
    if (groups < 1 || M < 1 || K < 1 || N < 1) return 1;
    const int64_t tiles = (M + MIX_MR - 1) / MIX_MR;
    const mix_job_t job = {x, {w, w_f16}, NULL, y, (int64_t)K * N, tiles * K * MIX_MR, (int64_t)M * N,
                           groups, M, K, N, 0, 0, 0, 0, 0, 0, 0};
    return mix_run(&job, threads);
}

int koel_cmix(const float *x, float *y, const void *w, int w_f16, int groups, int M, int K, int N, int threads) {
    if (groups < 1 || M < 1 || K < 1 || N < 1) return 1;
    const int64_t tiles = (M + MIX_MR - 1) / MIX_MR;
    const mix_job_t job = {x, {w, w_f16}, NULL, y, 2 * (int64_t)K * N, 3 * tiles * K * MIX_MR,
                           2 * (int64_t)M * N, groups, M, K, N, 0, 0, 0, 0, 0, 0, 1};
    return mix_run(&job, threads);
}

/* y [batch][M][out_length] (+)= conv(x [batch][c_in][length]) + bias for W [M][c_in][taps] packed as
 * [1][ceil(M / MIX_MR)][taps * c_in][MIX_MR] (row t * c_in + c = tap t of channel c). */
int koel_conv(const float *x, float *y, const void *w, int w_f16, const float *bias, int batch, int c_in, int length,
              int M, int taps, int dilation, int pad, int out_length, int accumulate, int threads) {
    if (batch < 1 || c_in < 1 || length < 1 || M < 1 || taps < 1 || dilation < 1 || pad < 0 || out_length < 1)
        return 1;
    const mix_job_t job = {x, {w, w_f16}, bias, y, (int64_t)c_in * length, 0, (int64_t)M * out_length, batch, M,
                           taps * c_in, out_length, accumulate, c_in, length, taps, dilation, pad, 0};
    return mix_run(&job, threads);
}

/* x [N][K] as the A side of the product: [ceil(N / MIX_MR)][K][MIX_MR], rows past N zero. */
static void linear_pack(const float *x, int N, int K, float *a) {
    for (int t = 0; t * MIX_MR < N; t++) {
        float *dst = a + (int64_t)t * K * MIX_MR;
        for (int r = 0; r < MIX_MR; r++) {
            const int n = t * MIX_MR + r;
            const float *row = x + (int64_t)n * K;
            for (int k = 0; k < K; k++) dst[k * MIX_MR + r] = n < N ? row[k] : 0.0f;
        }
    }
}

/* y [N][M] = x [N][K] W^T + bias (nn.Linear over N rows). Here the tokens are the rows of the
 * micro-tiles and the features their columns, so every tile is stored as whole rows of y: W is
 * packed once as the strips of W^T, [ceil(M / MIX_NR)][K][MIX_NR] (features past M zero), and the
 * threads share out the strips, so W is read once per call; x (a few dozen tokens) is packed by each
 * thread and stays in L2. bias, when given, is zero-padded to a multiple of MIX_NR. */
int koel_linear(const float *x, float *y, const float *w, const float *bias, int N, int M, int K, int threads) {
    if (N < 1 || M < 1 || K < 1) return 1;
    const int strips = (M + MIX_NR - 1) / MIX_NR, tiles = (N + MIX_MR - 1) / MIX_MR;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *a = aligned_alloc(64, (size_t)tiles * MIX_MR * (size_t)K * sizeof(float));
        if (!a) {
#pragma omp atomic write
            failed = 1;
        } else {
            linear_pack(x, N, K, a);
        }
        const int count = omp_threads(), me = omp_me();
        const int s0 = strips * me / count, s1 = strips * (me + 1) / count;
        for (int k0 = 0; a && k0 < K; k0 += MIX_KC) {
            const int kc = K - k0 < MIX_KC ? K - k0 : MIX_KC;
            for (int s = s0; s < s1; s++) { /* one strip of W (kc x 16) against every token tile */
                const int cols = M - s * MIX_NR < MIX_NR ? M - s * MIX_NR : MIX_NR;
                const float *b = w + ((int64_t)s * K + k0) * MIX_NR;
                for (int t = 0; t < tiles; t++) {
                    const int rows = N - t * MIX_MR < MIX_MR ? N - t * MIX_MR : MIX_MR;
                    mix_tile(a + ((int64_t)t * K + k0) * MIX_MR, b, kc, rows, cols,
                             y + (int64_t)t * MIX_MR * M + s * MIX_NR, M, 1, k0 > 0, NULL,
                             k0 == 0 && bias ? bias + s * MIX_NR : NULL);
                }
            }
        }
        free(a);
    }
    return failed;
}

/* ---- Bidirectional LSTM recurrence, float32 ----------------------------------------------------
 * PyTorch's CPU LSTM runs the two directions one after the other, each step a small GEMM split
 * between the threads (about 40 us a step for Kokoro's 256 hidden units, 6 LSTMs per utterance).
 * Here the input projections x W_ih^T + b come precomputed for every step (one product for the
 * whole sequence, by the caller) and each thread runs one direction: per step the 4H x H product
 * W_hh h, gates and cell update, W_hh^T packed in LSTM_UNITS hidden units at a time with their four
 * gates side by side, [H / LSTM_UNITS][H][4 * LSTM_UNITS] per direction, so each packed block's
 * outputs are complete gates for its units and are used while still in registers. The projections
 * [T][2][4H] come in the same order: row 4 LSTM_UNITS b + LSTM_UNITS g + u is gate g (i, f, g, o)
 * of unit LSTM_UNITS b + u. */
#define LSTM_UNITS 16

/* e^x on every lane: x = n ln2 + r, |r| <= ln2 / 2, e^r by its Taylor polynomial to r^7; ~1 ulp. */
static inline __m256 vexp(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x); /* ln 2 in two parts */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}

static inline __m256 vsigmoid(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, vexp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

static inline __m256 vtanh(__m256 x) { /* 2 sigmoid(2x) - 1 */
    const __m256 s = vsigmoid(_mm256_add_ps(x, x));
    return _mm256_sub_ps(_mm256_add_ps(s, s), _mm256_set1_ps(1.0f));
}

/* One direction over the sequence: forward (reverse = 0) or backward; h, c [H] start from h0, c0
 * (or zeros) and end as the final state. */
static int lstm_direction(const float *proj, const float *w, int T, int H, int reverse, float *out, float *h,
                          float *c) {
    const int blocks = H / LSTM_UNITS, G = 4 * H, width = 4 * LSTM_UNITS;
    float *next = malloc((size_t)H * sizeof(float));
    if (!next) return 1;
    for (int step = 0; step < T; step++) {
        const int t = reverse ? T - 1 - step : step;
        const float *in = proj + (int64_t)t * 2 * G;
        for (int b = 0; b < blocks; b++) {
            const float *wb = w + (int64_t)b * H * width;
            const float *gb = in + b * width;
            __m256 a[8];
            for (int j = 0; j < 8; j++) a[j] = _mm256_loadu_ps(gb + 8 * j);
            for (int k = 0; k < H; k++) {
                const __m256 hk = _mm256_broadcast_ss(h + k);
                const float *row = wb + (int64_t)k * width;
                a[0] = _mm256_fmadd_ps(hk, _mm256_loadu_ps(row), a[0]);
                a[1] = _mm256_fmadd_ps(hk, _mm256_loadu_ps(row + 8), a[1]);
                a[2] = _mm256_fmadd_ps(hk, _mm256_loadu_ps(row + 16), a[2]);
                a[3] = _mm256_fmadd_ps(hk, _mm256_loadu_ps(row + 24), a[3]);
                a[4] = _mm256_fmadd_ps(hk, _mm256_loadu_ps(row + 32), a[4]);
                a[5] = _mm256_fmadd_ps(hk, _mm256_loadu_ps(row + 40), a[5]);
                a[6] = _mm256_fmadd_ps(hk, _mm256_loadu_ps(row + 48), a[6]);
                a[7] = _mm256_fmadd_ps(hk, _mm256_loadu_ps(row + 56), a[7]);
            }
            for (int half = 0; half < 2; half++) { /* units u0 .. u0 + 8: gates i, f, g, o */
                const int u0 = b * LSTM_UNITS + 8 * half;
                const __m256 i = vsigmoid(a[half]), f = vsigmoid(a[2 + half]);
                const __m256 g = vtanh(a[4 + half]), o = vsigmoid(a[6 + half]);
                const __m256 cell = _mm256_fmadd_ps(f, _mm256_loadu_ps(c + u0), _mm256_mul_ps(i, g));
                const __m256 hidden = _mm256_mul_ps(o, vtanh(cell));
                _mm256_storeu_ps(c + u0, cell);
                _mm256_storeu_ps(next + u0, hidden);
                _mm256_storeu_ps(out + (int64_t)t * 2 * H + (reverse ? H : 0) + u0, hidden);
            }
        }
        memcpy(h, next, (size_t)H * sizeof(float));
    }
    free(next);
    return 0;
}

/* proj [T][2][4H] (see above), w [2][H / LSTM_UNITS][H][4 LSTM_UNITS] -> out [T][2H] (forward then
 * backward halves); state [2 directions][2][H]: h then c, the initial state in and the final out. */
int koel_lstm(const float *proj, const float *w, int T, int H, float *out, float *state, int threads) {
    if (T < 1 || H < LSTM_UNITS || H % LSTM_UNITS) return 1;
    const int64_t per_direction = (int64_t)4 * H * H;
    int failed = 0;
#pragma omp parallel for schedule(static, 1) num_threads(threads < 2 ? 1 : 2) reduction(| : failed)
    for (int d = 0; d < 2; d++)
        failed |= lstm_direction(proj + (int64_t)d * 4 * H, w + d * per_direction, T, H, d, out,
                                 state + (int64_t)d * 2 * H, state + (int64_t)d * 2 * H + H);
    return failed;
}
#else
int koel_mix_available(void) { return 0; }

int koel_mix(const float *x, float *y, const void *w, int w_f16, int groups, int M, int K, int N, int threads) {
    (void)x, (void)y, (void)w, (void)w_f16, (void)groups, (void)M, (void)K, (void)N, (void)threads;
    return 2;
}

int koel_conv(const float *x, float *y, const void *w, int w_f16, const float *bias, int batch, int c_in, int length,
              int M, int taps, int dilation, int pad, int out_length, int accumulate, int threads) {
    (void)x, (void)y, (void)w, (void)w_f16, (void)bias, (void)batch, (void)c_in, (void)length, (void)M, (void)taps;
    (void)dilation, (void)pad, (void)out_length, (void)accumulate, (void)threads;
    return 2;
}
int koel_linear(const float *x, float *y, const float *w, const float *bias, int N, int M, int K, int threads) {
    (void)x, (void)y, (void)w, (void)bias, (void)N, (void)M, (void)K, (void)threads;
    return 2;
}
int koel_lstm(const float *proj, const float *w, int T, int H, float *out, float *state, int threads) {
    (void)proj, (void)w, (void)T, (void)H, (void)out, (void)state, (void)threads;
    return 2;
}
int koel_cmix(const float *x, float *y, const void *w, int w_f16, int groups, int M, int K, int N, int threads) {
    (void)x, (void)y, (void)w, (void)w_f16, (void)groups, (void)M, (void)K, (void)N, (void)threads;
    return 2;
}
#endif
