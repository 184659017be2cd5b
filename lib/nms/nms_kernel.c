/*
 * Greedy non-maximum suppression on boxes already sorted by score, best first, with
 * py-faster-rcnn's conventions: areas use +1 widths, and a box is suppressed when its IoU
 * with a kept box is greater than the threshold.
 *
 * The inner loop has no branches, so the compiler vectorises it: for each kept box it
 * marks every later box it overlaps, whether already suppressed or not. The arithmetic
 * is done in the input's precision in the same order as py_cpu_nms, and the library is
 * built with -ffp-contract=off so that no fused multiply-add changes a rounding: the kept
 * set is the same as NumPy's, bit for bit. `max_keep` stops the scan once that many
 * boxes are kept (the RPN wants 2000 of 12000).
 *
 * Built by `make` into _nms_kernel.so and loaded with ctypes (nms/compiled.py).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEFINE_NMS(NAME, T)                                                              \
int64_t NAME(const T *boxes, int64_t n, T thresh, int64_t max_keep, int64_t *keep)       \
{                                                                                        \
    T *area = (T *)malloc(sizeof(T) * (n > 0 ? n : 1));                                  \
    uint8_t *dead = (uint8_t *)calloc(n > 0 ? n : 1, 1);                                \
    int64_t kept = 0;                                                                    \
    if (!area || !dead) { free(area); free(dead); return -1; }                           \
    for (int64_t i = 0; i < n; ++i) {                                                    \
        const T *b = boxes + 4 * i;                                                      \
        area[i] = (b[2] - b[0] + 1) * (b[3] - b[1] + 1);                                 \
    }                                                                                    \
    for (int64_t i = 0; i < n && kept < max_keep; ++i) {                                 \
        if (dead[i]) continue;                                                           \
        keep[kept++] = i;                                                                \
        const T x1 = boxes[4 * i], y1 = boxes[4 * i + 1];                                \
        const T x2 = boxes[4 * i + 2], y2 = boxes[4 * i + 3], ai = area[i];              \
        for (int64_t j = i + 1; j < n; ++j) {                                            \
            const T *b = boxes + 4 * j;                                                  \
            T xx1 = b[0] > x1 ? b[0] : x1;                                               \
            T yy1 = b[1] > y1 ? b[1] : y1;                                               \
            T xx2 = b[2] < x2 ? b[2] : x2;                                               \
            T yy2 = b[3] < y2 ? b[3] : y2;                                               \
            T w = xx2 - xx1 + 1;                                                         \
            T h = yy2 - yy1 + 1;                                                         \
            w = w > 0 ? w : 0;                                                           \
            h = h > 0 ? h : 0;                                                           \
            T inter = w * h;                                                             \
            T ovr = inter / (ai + area[j] - inter);                                      \
            dead[j] |= (uint8_t)(ovr > thresh);                                          \
        }                                                                                \
    }                                                                                    \
    free(area);                                                                          \
    free(dead);                                                                          \
    return kept;                                                                         \
}

DEFINE_NMS(nms_sorted_f32, float)
DEFINE_NMS(nms_sorted_f64, double)
