// What a hand-written AVX2 loop reaches for lowbit's W4 x f32 GEMV: the reference for "the W4 GEMV is
// compute-bound on this CPU" (README, AVX2 section). One row of 4096 x 4096, group 128, float16 scales, the
// codes in lowbit's CPU tile layout for a 64-column tile (each uint32 holds 2 K rows x 4 column vectors of 8:
// nibble p = 4 (k % 2) + (c % 4) for column vector c), 2 OpenMP threads over the tiles. Two decodes:
//   top:      ((w << (28 - 4p)) & 0xF0000000) converted, activations staged times 2^-28 (what lowbit emits);
//   in place: w & (15 << 4 (c % 4)) converted, after one 16-bit shift per word for odd K rows; needs codes
//             stored offset-binary (c + 8) and a correction -8 sum(x) per group, and the factor 2^-4 (c % 4)
//             on each group's partial sum (a pack format lowbit does not have).
// Both are checked against a float64 reference; times are medians, cold (12 rotating weight copies) and hot.
//
//   gcc -O3 -march=native -fopenmp benchmarks/avx2_w4_loop.c -o /tmp/w4loop -lm && OMP_NUM_THREADS=2 /tmp/w4loop 40
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 4096
#define K 4096
#define G 128
#define TILE 64
#define NG (K / G)
#define NT (N / TILE)
#define COPIES 12

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double d = *(const double *)a - *(const double *)b;
  return d < 0 ? -1 : d > 0;
}

// the word of (k, column) inside a tile's group of 1024 words, and the code's nibble in it
static int word_of(int k, int col) { return (k / 2) * 16 + (col / 8 / 4) * 8 + col % 8; }
static int nibble_of(int k, int col) { return (k % 2) * 4 + (col / 8) % 4; }

static void gemv_top(const float *x, const uint32_t *q, const uint16_t *s, float *out) {
#pragma omp parallel for schedule(static)
  for (int tile = 0; tile < NT; tile++) {
    __m256 acc[8];
    for (int c = 0; c < 8; c++) acc[c] = _mm256_setzero_ps();
    float xa[G] __attribute__((aligned(32)));
    const __m256i top = _mm256_set1_epi32((int)0xF0000000u);
    for (int g = 0; g < NG; g++) {
      for (int i = 0; i < G; i++) xa[i] = x[g * G + i] * 0x1p-28f;
      const uint32_t *w = q + ((size_t)tile * NG + g) * 1024;
      __m256 t[8];
      for (int c = 0; c < 8; c++) t[c] = _mm256_setzero_ps();
      for (int j = 0; j < G / 2; j++) {
        __m256i w0 = _mm256_load_si256((const __m256i *)(w + j * 16));
        __m256i w1 = _mm256_load_si256((const __m256i *)(w + j * 16 + 8));
        for (int kk = 0; kk < 2; kk++) {
          __m256 xb = _mm256_broadcast_ss(xa + 2 * j + kk);
#define TOP(c, W)                                                                                            \
  t[c] = _mm256_fmadd_ps(                                                                                    \
      xb, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_slli_epi32(W, 28 - 4 * (kk * 4 + (c) % 4)), top)), t[c]);
          TOP(0, w0) TOP(1, w0) TOP(2, w0) TOP(3, w0) TOP(4, w1) TOP(5, w1) TOP(6, w1) TOP(7, w1)
        }
      }
      for (int c = 0; c < 8; c++) {
        __m256 sc = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + (size_t)g * N + tile * TILE + c * 8)));
        acc[c] = _mm256_fmadd_ps(t[c], sc, acc[c]);
      }
    }
    for (int c = 0; c < 8; c++) _mm256_storeu_ps(out + tile * TILE + c * 8, acc[c]);
  }
}

static void gemv_in_place(const float *x, const uint32_t *q, const uint16_t *s, float *out) {
  float group_sum[NG];
  for (int g = 0; g < NG; g++) {        // once per row (shared by every tile)
    float sum = 0;
    for (int i = 0; i < G; i++) sum += x[g * G + i];
    group_sum[g] = sum;
  }
#pragma omp parallel for schedule(static)
  for (int tile = 0; tile < NT; tile++) {
    __m256 acc[8];
    for (int c = 0; c < 8; c++) acc[c] = _mm256_setzero_ps();
    const __m256i m0 = _mm256_set1_epi32(15), m1 = _mm256_set1_epi32(15 << 4), m2 = _mm256_set1_epi32(15 << 8),
                  m3 = _mm256_set1_epi32(15 << 12);
    for (int g = 0; g < NG; g++) {
      const float *xg = x + g * G;
      const uint32_t *w = q + ((size_t)tile * NG + g) * 1024;
      __m256 t0 = _mm256_setzero_ps(), t1 = t0, t2 = t0, t3 = t0, t4 = t0, t5 = t0, t6 = t0, t7 = t0;
      for (int j = 0; j < G / 2; j++) {
        __m256i w0 = _mm256_load_si256((const __m256i *)(w + j * 16));
        __m256i w1 = _mm256_load_si256((const __m256i *)(w + j * 16 + 8));
        __m256 xb = _mm256_broadcast_ss(xg + 2 * j);
#define IN_PLACE(t, W, M) t = _mm256_fmadd_ps(xb, _mm256_cvtepi32_ps(_mm256_and_si256(W, M)), t);
        IN_PLACE(t0, w0, m0) IN_PLACE(t1, w0, m1) IN_PLACE(t2, w0, m2) IN_PLACE(t3, w0, m3)
        IN_PLACE(t4, w1, m0) IN_PLACE(t5, w1, m1) IN_PLACE(t6, w1, m2) IN_PLACE(t7, w1, m3)
        w0 = _mm256_srli_epi32(w0, 16);
        w1 = _mm256_srli_epi32(w1, 16);
        xb = _mm256_broadcast_ss(xg + 2 * j + 1);
        IN_PLACE(t0, w0, m0) IN_PLACE(t1, w0, m1) IN_PLACE(t2, w0, m2) IN_PLACE(t3, w0, m3)
        IN_PLACE(t4, w1, m0) IN_PLACE(t5, w1, m1) IN_PLACE(t6, w1, m2) IN_PLACE(t7, w1, m3)
      }
      __m256 t[8] = {t0, t1, t2, t3, t4, t5, t6, t7};
      __m256 correction = _mm256_set1_ps(-8.f * group_sum[g]);
      for (int c = 0; c < 8; c++) {
        __m256 sc = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + (size_t)g * N + tile * TILE + c * 8)));
        __m256 v = _mm256_fmadd_ps(t[c], _mm256_set1_ps(ldexpf(1.f, -4 * (c % 4))), correction);
        acc[c] = _mm256_fmadd_ps(v, sc, acc[c]);
      }
    }
    for (int c = 0; c < 8; c++) _mm256_storeu_ps(out + tile * TILE + c * 8, acc[c]);
  }
}

typedef void (*gemv_fn)(const float *, const uint32_t *, const uint16_t *, float *);

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 20;
  if (rounds < 1 || rounds > 1000) rounds = 20;
  size_t words = (size_t)N * K / 8;
  int8_t *codes = malloc((size_t)N * K);
  float *x = malloc(K * sizeof(float)), *scale = malloc((size_t)NG * N * sizeof(float));
  uint16_t *s = malloc((size_t)NG * N * sizeof(uint16_t));
  srand(1);
  for (size_t i = 0; i < (size_t)N * K; i++) codes[i] = (int8_t)(rand() % 16 - 8);  // codes[k * N + n], int4
  for (int i = 0; i < K; i++) x[i] = (rand() / (float)RAND_MAX - 0.5f) * 4;
  for (size_t i = 0; i < (size_t)NG * N; i++) {
    __m128i h = _mm_cvtps_ph(_mm_set1_ps(0.01f + (rand() % 100) * 0.001f), 0);
    s[i] = (uint16_t)_mm_extract_epi16(h, 0);
    scale[i] = _mm_cvtss_f32(_mm_cvtph_ps(h));
  }
  uint32_t *q_top[COPIES], *q_in_place[COPIES];
  for (int cp = 0; cp < COPIES; cp++) {
    q_top[cp] = aligned_alloc(64, words * 4);
    q_in_place[cp] = aligned_alloc(64, words * 4);
  }
  memset(q_top[0], 0, words * 4);
  memset(q_in_place[0], 0, words * 4);
  for (int tile = 0; tile < NT; tile++)
    for (int g = 0; g < NG; g++)
      for (int kk = 0; kk < G; kk++)
        for (int col = 0; col < TILE; col++) {
          int c = codes[(size_t)(g * G + kk) * N + tile * TILE + col], p = nibble_of(kk, col);
          size_t at = ((size_t)tile * NG + g) * 1024 + word_of(kk, col);
          q_top[0][at] |= (uint32_t)(c & 15) << (4 * p);
          q_in_place[0][at] |= (uint32_t)(c + 8) << (4 * p);
        }
  for (int cp = 1; cp < COPIES; cp++) {
    memcpy(q_top[cp], q_top[0], words * 4);
    memcpy(q_in_place[cp], q_in_place[0], words * 4);
  }
  double *ref = calloc(N, sizeof(double));
  for (int k = 0; k < K; k++)
    for (int n = 0; n < N; n++) ref[n] += (double)x[k] * codes[(size_t)k * N + n] * scale[(k / G) * N + n];

  const char *names[2] = {"top", "in place"};
  gemv_fn fns[2] = {gemv_top, gemv_in_place};
  uint32_t **weights[2] = {q_top, q_in_place};
  float *out = malloc(N * sizeof(float));
  for (int v = 0; v < 2; v++) {
    fns[v](x, weights[v][0], s, out);
    double err = 0, top = 0;
    for (int n = 0; n < N; n++) {
      err = fmax(err, fabs(out[n] - ref[n]));
      top = fmax(top, fabs(ref[n]));
    }
    printf("%-9s max error %.3g (outputs up to %.3g)\n", names[v], err, top);
  }
  double *times[2][2];
  for (int v = 0; v < 2; v++)
    for (int hot = 0; hot < 2; hot++) times[v][hot] = malloc(rounds * sizeof(double));
  int copy = 0;
  for (int r = 0; r < rounds; r++)      // interleaved: each round times every variant, cold then hot
    for (int v = 0; v < 2; v++)
      for (int hot = 0; hot < 2; hot++) {
        const uint32_t *w = weights[v][hot ? 0 : copy];
        copy = (copy + 1) % COPIES;
        double t0 = now();
        fns[v](x, w, s, out);
        times[v][hot][r] = now() - t0;
      }
  for (int v = 0; v < 2; v++) {
    for (int hot = 0; hot < 2; hot++) qsort(times[v][hot], rounds, sizeof(double), cmp);
    printf("%-9s median cold %.3f ms, hot %.3f ms (%d rounds)\n", names[v], times[v][0][rounds / 2] * 1e3,
           times[v][1][rounds / 2] * 1e3, rounds);
  }
  return 0;
}
