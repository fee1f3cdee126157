/* Real-DFT analysis and synthesis of overlapping blocks, for BlockDFTConv1d (koel/model/fast.py).
 *
 * Built on first use with the system C compiler (koel/model/native.py) and called through ctypes;
 * without a compiler the same arithmetic runs as two matrix products in PyTorch.
 *
 * A convolution in blocks of n = 2m samples (overlap-save, polyphase for dilation d) needs, per
 * channel and block, the n-point DFT of the block and, after the channel mixing, the inverse DFT of
 * the mixed spectrum. As matrix products these are small-K GEMMs that run far below the CPU's peak
 * and need the overlapping blocks copied out first. Here each is an m-point complex FFT of the real
 * block packed as z[t] = x[2t] + i x[2t+1], run on 16 blocks at once (one SIMD lane each), reading
 * the blocks straight from the signal and writing the spectrum in the layout the mixing products
 * read (and back).
 *
 * Spectrum layout, n rows per channel: Re X_0, Re X_m (both real), then Re X_f, Im X_f for
 * f = 1 .. m - 1; tensor [n][channels][columns], columns ordered (batch item, phase, block).
 * Block j of phase r of a signal holds input samples r + d (j step + i), i < n, counted from `left`
 * samples before the signal's start (zeros outside it); its first `step` inverse-DFT samples are the
 * output samples r + d (j step + i), i < step.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 16
#define MAX_HALF 64 /* blocks of up to 128 samples */

typedef uint16_t bf16;
typedef float vf __attribute__((vector_size(4 * LANES))); /* one value of LANES blocks */
typedef uint32_t vu __attribute__((vector_size(4 * LANES)));
typedef uint16_t vh __attribute__((vector_size(2 * LANES)));

static inline vf load_bf16(const bf16 *src) { /* LANES values */
    vh h;
    memcpy(&h, src, sizeof h);
    return (vf)(__builtin_convertvector(h, vu) << 16);
}

static inline void store_bf16(bf16 *dst, vf v, int lanes) { /* round to nearest even */
    vu u = (vu)v;
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const vh h = __builtin_convertvector(u, vh);
    if (lanes == LANES) memcpy(dst, &h, sizeof h);
    else for (int l = 0; l < lanes; l++) dst[l] = h[l];
}

static inline float from_bf16(bf16 v) {
    union { uint32_t u; float f; } c;
    c.u = (uint32_t)v << 16;
    return c.f;
}

static inline bf16 to_bf16(float f) { /* round to nearest even (inputs are finite) */
    union { float f; uint32_t u; } c;
    c.f = f;
    return (bf16)((c.u + 0x7FFFu + ((c.u >> 16) & 1u)) >> 16);
}

#if defined(__AVX512F__)
#include <immintrin.h>

/* r[0..15] rows -> r[0..15] columns of the 16 x 16 matrix they form. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) { /* u[4k + c], quad q: column 4q + c of rows 4k .. 4k + 3 */
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
#define KOEL_TRANSPOSE 1
#endif

typedef struct {
    int m;                                      /* complex FFT length: half the block */
    int rev[MAX_HALF];                          /* bit reversal of 0 .. m - 1 */
    float wr[MAX_HALF / 2], wi[MAX_HALF / 2];   /* exp(-2 pi i k / m), k < m / 2 */
    float cr[MAX_HALF], ci[MAX_HALF];           /* exp(-2 pi i f / n), f < m */
} plan_t;

static int make_plan(plan_t *p, int n) {
    int m = n / 2, bits = 0;
    if (n < 4 || m > MAX_HALF || (n & (n - 1)) != 0) return -1;
    while ((1 << bits) < m) bits++;
    p->m = m;
    for (int t = 0; t < m; t++) {
        int r = 0;
        for (int b = 0; b < bits; b++) r |= ((t >> b) & 1) << (bits - 1 - b);
        p->rev[t] = r;
    }
    for (int k = 0; k < m / 2; k++) {
        double a = -2.0 * M_PI * k / m;
        p->wr[k] = (float)cos(a);
        p->wi[k] = (float)sin(a);
    }
    for (int f = 0; f < m; f++) {
        double a = -2.0 * M_PI * f / n;
        p->cr[f] = (float)cos(a);
        p->ci[f] = (float)sin(a);
    }
    return 0;
}

/* In-place forward FFT of m points on LANES independent lanes; input in bit-reversed order. */
static inline void fft(const plan_t *p, vf *restrict re, vf *restrict im) {
    const int m = p->m;
    for (int half = 1; half < m; half <<= 1) {
        const int stride = m / (2 * half);
        for (int k = 0; k < m; k += 2 * half) {
            for (int j = 0; j < half; j++) {
                const float wr = p->wr[j * stride], wi = p->wi[j * stride];
                const vf br = re[k + j + half], bi = im[k + j + half], ar = re[k + j], ai = im[k + j];
                const vf tr = br * wr - bi * wi, ti = br * wi + bi * wr;
                re[k + j + half] = ar - tr;
                im[k + j + half] = ai - ti;
                re[k + j] = ar + tr;
                im[k + j] = ai + ti;
            }
        }
    }
}

/* x: [batch][channels][length], float32 (x_bf16 = 0) or bfloat16; out: [n][channels][columns] bf16. */
int koel_dft_analysis(const void *x, int x_bf16, int batch, int channels, int length, int dilation,
                      int step, int n, int blocks, int left, bf16 *out) {
    plan_t plan;
    if (make_plan(&plan, n) != 0 || step < 1 || step > n || dilation < 1) return -1;
    const int m = plan.m;
    const int64_t columns = (int64_t)batch * dilation * blocks;
    const int64_t plane = (int64_t)channels * columns; /* one spectrum row over all channels */
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < batch * channels; bc++) {
        const int b = bc / channels, c = bc % channels;
        const int64_t base = (int64_t)bc * length;
        vf re[MAX_HALF], im[MAX_HALF];
        for (int r = 0; r < dilation; r++) {
            bf16 *dst = out + (int64_t)c * columns + ((int64_t)b * dilation + r) * blocks;
            for (int j0 = 0; j0 < blocks; j0 += LANES) {
                const int lanes = blocks - j0 < LANES ? blocks - j0 : LANES;
                const int64_t first0 = (int64_t)r + (int64_t)dilation * ((int64_t)j0 * step) - left;
                const int64_t last = first0 + (int64_t)dilation * ((int64_t)(LANES - 1) * step + n - 1);
                if (first0 >= 0 && last < length && dilation == 1 && n >= LANES) {
#ifdef KOEL_TRANSPOSE
                    /* 16 rows (blocks) of 16 contiguous samples at a time, transposed to lanes */
                    for (int i0 = 0; i0 < n; i0 += LANES) {
                        __m512 v[LANES];
                        for (int l = 0; l < LANES; l++) {
                            const int64_t at = base + first0 + (int64_t)l * step + i0;
                            if (x_bf16) {
                                const __m256i h = _mm256_loadu_si256((const __m256i *)((const bf16 *)x + at));
                                v[l] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
                            } else {
                                v[l] = _mm512_loadu_ps((const float *)x + at);
                            }
                        }
                        transpose16(v);
                        for (int ii = 0; ii < LANES; ii += 2) {
                            re[plan.rev[(i0 + ii) / 2]] = (vf)v[ii];
                            im[plan.rev[(i0 + ii) / 2]] = (vf)v[ii + 1];
                        }
                    }
#else
                    goto gather;
#endif
                } else if (first0 >= 0 && last < length) {
#ifndef KOEL_TRANSPOSE
                gather:;
#endif
                    int idx[LANES];
                    for (int l = 0; l < LANES; l++) idx[l] = l * step * dilation;
                    if (x_bf16) {
                        const uint16_t *src = (const uint16_t *)x + base + first0;
                        for (int t = 0; t < m; t++) {
                            const uint16_t *s0 = src + (int64_t)dilation * (2 * t), *s1 = s0 + dilation;
                            float *dr = (float *)&re[plan.rev[t]], *di = (float *)&im[plan.rev[t]];
                            for (int l = 0; l < LANES; l++) {
                                dr[l] = from_bf16(s0[idx[l]]);
                                di[l] = from_bf16(s1[idx[l]]);
                            }
                        }
                    } else {
                        const float *src = (const float *)x + base + first0;
                        for (int t = 0; t < m; t++) {
                            const float *s0 = src + (int64_t)dilation * (2 * t), *s1 = s0 + dilation;
                            float *dr = (float *)&re[plan.rev[t]], *di = (float *)&im[plan.rev[t]];
                            for (int l = 0; l < LANES; l++) {
                                dr[l] = s0[idx[l]];
                                di[l] = s1[idx[l]];
                            }
                        }
                    }
                } else {
                for (int l = 0; l < LANES; l++) {
                    const int64_t first = (int64_t)r + (int64_t)dilation * ((int64_t)(j0 + (l < lanes ? l : 0)) * step) - left;
                        for (int i = 0; i < n; i++) {
                            const int64_t pos = first + (int64_t)dilation * i;
                            float v = 0.0f;
                            if (pos >= 0 && pos < length)
                                v = x_bf16 ? from_bf16(((const bf16 *)x)[base + pos]) : ((const float *)x)[base + pos];
                            if (i & 1) im[plan.rev[i / 2]][l] = v;
                            else re[plan.rev[i / 2]][l] = v;
                        }
                }
                }
                fft(&plan, re, im);
                /* spectrum of the real block from the packed one: X_f = E_f + exp(-2 pi i f / n) O_f */
                bf16 *row = dst + j0;
                store_bf16(row, re[0] + im[0], lanes);
                store_bf16(row + plane, re[0] - im[0], lanes);
                for (int f = 1; f < m; f++) {
                    const float cr = plan.cr[f], ci = plan.ci[f];
                    const vf a = re[f], bb = im[f], cc = re[m - f], e = im[m - f];
                    const vf er = 0.5f * (a + cc), ei = 0.5f * (bb - e);
                    const vf or_ = 0.5f * (bb + e), oi = 0.5f * (cc - a);
                    store_bf16(row + (int64_t)(2 * f) * plane, er + cr * or_ - ci * oi, lanes);
                    store_bf16(row + (int64_t)(2 * f + 1) * plane, ei + cr * oi + ci * or_, lanes);
                }
            }
        }
    }
    return 0;
}

/* y: [n][channels][columns] bf16 (mixed spectra); out: [batch][channels][length], float32
 * (out_bf16 = 0) or bfloat16; bias: [channels] float32 or NULL. */
int koel_dft_synthesis(const bf16 *y, int batch, int channels, int length, int dilation, int step, int n,
                       int blocks, const float *bias, void *out, int out_bf16) {
    plan_t plan;
    if (make_plan(&plan, n) != 0 || step < 1 || step > n || dilation < 1) return -1;
    const int m = plan.m;
    const int64_t columns = (int64_t)batch * dilation * blocks;
    const int64_t plane = (int64_t)channels * columns;
    const float scale = 1.0f / (float)m;
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < batch * channels; bc++) {
        const int b = bc / channels, c = bc % channels;
        const int64_t base = (int64_t)bc * length;
        const float shift = bias ? bias[c] : 0.0f;
        vf re[MAX_HALF], im[MAX_HALF];
        for (int r = 0; r < dilation; r++) {
            const bf16 *src = y + (int64_t)c * columns + ((int64_t)b * dilation + r) * blocks;
            for (int j0 = 0; j0 < blocks; j0 += LANES) {
                const int lanes = blocks - j0 < LANES ? blocks - j0 : LANES;
                const bf16 *row = src + j0;
                vf ar[MAX_HALF], ai[MAX_HALF]; /* Y_f, f < m (Im Y_0 = 0) */
                vf nyq;
                if (lanes == LANES) {
                    ar[0] = load_bf16(row);
                    nyq = load_bf16(row + plane);
                    for (int f = 1; f < m; f++) {
                        ar[f] = load_bf16(row + (int64_t)(2 * f) * plane);
                        ai[f] = load_bf16(row + (int64_t)(2 * f + 1) * plane);
                    }
                } else { /* the last blocks of a row: fill the spare lanes with block 0 */
                    for (int l = 0; l < LANES; l++) {
                        const int k = l < lanes ? l : 0;
                        ar[0][l] = from_bf16(row[k]);
                        nyq[l] = from_bf16(row[plane + k]);
                        for (int f = 1; f < m; f++) {
                            ar[f][l] = from_bf16(row[(int64_t)(2 * f) * plane + k]);
                            ai[f][l] = from_bf16(row[(int64_t)(2 * f + 1) * plane + k]);
                        }
                    }
                }
                /* Z_f = E_f + i O_f: the spectra of the even and odd samples, packed; conjugated
                 * into bit-reversed order so that a forward FFT computes the inverse */
                re[plan.rev[0]] = 0.5f * (ar[0] + nyq);
                im[plan.rev[0]] = -0.5f * (ar[0] - nyq);
                for (int f = 1; f < m; f++) {
                    const float cr = plan.cr[f], ci = -plan.ci[f]; /* exp(+2 pi i f / n) */
                    const vf a = ar[f], bb = ai[f], cc = ar[m - f], e = ai[m - f];
                    const vf er = 0.5f * (a + cc), ei = 0.5f * (bb - e);
                    const vf dr = 0.5f * (a - cc), di = 0.5f * (bb + e);
                    re[plan.rev[f]] = er - (dr * ci + di * cr);
                    im[plan.rev[f]] = -(ei + (dr * cr - di * ci));
                }
                fft(&plan, re, im);
                const int64_t first0 = (int64_t)r + (int64_t)dilation * ((int64_t)j0 * step);
                if (lanes == LANES && first0 + (int64_t)dilation * ((int64_t)LANES * step - 1) < length) {
                    int idx[LANES];
                    for (int l = 0; l < LANES; l++) idx[l] = l * step * dilation;
                    if (dilation == 1 && !out_bf16 && n >= LANES) {
                        float *dst = (float *)out + base + first0;
#ifdef KOEL_TRANSPOSE
                        const __m512 sc = _mm512_set1_ps(scale), nsc = _mm512_set1_ps(-scale), sh = _mm512_set1_ps(shift);
                        for (int i0 = 0; i0 < step; i0 += LANES) {
                            __m512 v[LANES];
                            for (int ii = 0; ii < LANES; ii += 2) {
                                v[ii] = _mm512_fmadd_ps((__m512)re[(i0 + ii) / 2], sc, sh);
                                v[ii + 1] = _mm512_fmadd_ps((__m512)im[(i0 + ii) / 2], nsc, sh);
                            }
                            transpose16(v);
                            const int count = step - i0 < LANES ? step - i0 : LANES;
                            const __mmask16 keep = (__mmask16)((1u << count) - 1u);
                            for (int l = 0; l < LANES; l++) _mm512_mask_storeu_ps(dst + (int64_t)l * step + i0, keep, v[l]);
                        }
#else
                        for (int t = 0; t < m && 2 * t < step; t++) {
                            for (int l = 0; l < LANES; l++) dst[l * step + 2 * t] = re[t][l] * scale + shift;
                            if (2 * t + 1 < step)
                                for (int l = 0; l < LANES; l++) dst[l * step + 2 * t + 1] = -im[t][l] * scale + shift;
                        }
#endif
                    } else
                    for (int i = 0; i < step; i++) {
                        const float *v = (const float *)(i & 1 ? &im[i / 2] : &re[i / 2]);
                        const float sign = i & 1 ? -scale : scale;
                        if (out_bf16) {
                            uint16_t *dst = (uint16_t *)out + base + first0 + (int64_t)dilation * i;
                            for (int l = 0; l < LANES; l++) dst[idx[l]] = to_bf16(v[l] * sign + shift);
                        } else {
                            float *dst = (float *)out + base + first0 + (int64_t)dilation * i;
                            for (int l = 0; l < LANES; l++) dst[idx[l]] = v[l] * sign + shift;
                        }
                    }
                } else {
                for (int l = 0; l < lanes; l++) {
                    const int64_t first = (int64_t)r + (int64_t)dilation * ((int64_t)(j0 + l) * step);
                    for (int i = 0; i < step; i++) {
                        const int64_t pos = first + (int64_t)dilation * i;
                        if (pos >= length) break;
                        const float v = (i & 1 ? -im[i / 2][l] : re[i / 2][l]) * scale + shift;
                        if (out_bf16) ((bf16 *)out)[base + pos] = to_bf16(v);
                        else ((float *)out)[base + pos] = v;
                    }
                }
                }
            }
        }
    }
    return 0;
}
