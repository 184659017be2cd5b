/*
 * Greedy non-maximum suppression on boxes already in visiting order (best first), for
 * both conventions the project needs:
 *
 *   offset 1  py-faster-rcnn's pixel boxes: widths are x2 - x1 + 1 (py_cpu_nms);
 *   offset 0  SSD/RefineDet's normalised boxes: widths are xmax - xmin (JaccardOverlap).
 *
 * A box is suppressed when its IoU with a box kept before it is greater than the
 * threshold; boxes that do not intersect have intersection 0 (width and height clamped
 * at 0), hence IoU 0, as Caffe's JaccardOverlap returns (and 0/0 for two empty boxes is
 * NaN, which suppresses nothing: Caffe's 0 again).
 *
 * Why this shape:
 * - The inner loop has no branches: for each kept box it marks every later box it
 *   overlaps, whether already suppressed or not, so the compiler vectorises it. The
 *   boxes are first copied into one array per coordinate, so the vector loads are
 *   contiguous.
 * - The arithmetic is done in the input's precision, in the same order as the NumPy
 *   references (py_cpu_nms; Caffe's JaccardOverlap), and the library is built with
 *   -ffp-contract=off so that no fused multiply-add changes a rounding: the kept set is
 *   the reference's, bit for bit. Adding an offset of 0 changes no value.
 * - `max_keep` stops the scan once that many boxes are kept (the RPN wants 2000 of
 *   12000); the grouped entry point runs many independent sets (the classes of a batch)
 *   in one call.
 *
 * Built by setup.py next to nms_kernel.py, which loads it with ctypes.
 */
#include <stdint.h>
#include <stdlib.h>

/* Every entry point's signature changes this number; the loader refuses a library built
 * from another version of this file. */
int64_t greedy_nms_abi_version(void) { return 2; }

#define DEFINE_NMS(SUFFIX, T)                                                            \
static int64_t run_##SUFFIX(const T *boxes, int64_t n, T thresh, T offset,              \
                            int64_t max_keep, int64_t *keep, T *work,                \
                            uint8_t *restrict dead)                                      \
{                                                                                        \
    T *restrict x1 = work, *restrict y1 = work + n, *restrict x2 = work + 2 * n;         \
    T *restrict y2 = work + 3 * n, *restrict area = work + 4 * n;                        \
    int64_t kept = 0;                                                                    \
    for (int64_t i = 0; i < n; ++i) {                                                    \
        const T *b = boxes + 4 * i;                                                      \
        x1[i] = b[0]; y1[i] = b[1]; x2[i] = b[2]; y2[i] = b[3];                          \
        area[i] = (b[2] - b[0] + offset) * (b[3] - b[1] + offset);                       \
        dead[i] = 0;                                                                     \
    }                                                                                    \
    for (int64_t i = 0; i < n && kept < max_keep; ++i) {                                 \
        if (dead[i]) continue;                                                           \
        keep[kept++] = i;                                                                \
        const T bx1 = x1[i], by1 = y1[i], bx2 = x2[i], by2 = y2[i], ai = area[i];        \
        for (int64_t j = i + 1; j < n; ++j) {                                            \
            T xx1 = x1[j] > bx1 ? x1[j] : bx1;                                           \
            T yy1 = y1[j] > by1 ? y1[j] : by1;                                           \
            T xx2 = x2[j] < bx2 ? x2[j] : bx2;                                           \
            T yy2 = y2[j] < by2 ? y2[j] : by2;                                           \
            T w = xx2 - xx1 + offset;                                                    \
            T h = yy2 - yy1 + offset;                                                    \
            w = w > 0 ? w : 0;                                                           \
            h = h > 0 ? h : 0;                                                           \
            T inter = w * h;                                                             \
            T ovr = inter / (ai + area[j] - inter);                                      \
            dead[j] |= (uint8_t)(ovr > thresh);                                          \
        }                                                                                \
    }                                                                                    \
    return kept;                                                                         \
}                                                                                        \
                                                                                         \
/* Kept positions of boxes (n, 4) in visiting order, at most max_keep of them (-1: all); \
 * returns how many, or -1 when memory ran out. */                                       \
int64_t greedy_nms_##SUFFIX(const T *boxes, int64_t n, T thresh, T offset,              \
                            int64_t max_keep, int64_t *keep)                             \
{                                                                                        \
    if (n <= 0) return 0;                                                                \
    if (max_keep < 0 || max_keep > n) max_keep = n;                                      \
    T *work = (T *)malloc(sizeof(T) * 5 * (size_t)n);                                    \
    uint8_t *dead = (uint8_t *)malloc((size_t)n);                                        \
    int64_t kept = -1;                                                                   \
    if (work && dead) kept = run_##SUFFIX(boxes, n, thresh, offset, max_keep, keep,      \
                                          work, dead);                                   \
    free(work);                                                                          \
    free(dead);                                                                          \
    return kept;                                                                         \
}                                                                                        \
                                                                                         \
/* The same for consecutive groups of boxes, each suppressed on its own: group g holds   \
 * boxes ends[g-1] .. ends[g]-1 (ends ascending, ends[ngroups-1] = n). Writes the kept   \
 * positions (into the whole array) group after group; returns how many, or -1. */       \
int64_t greedy_nms_groups_##SUFFIX(const T *boxes, const int64_t *ends, int64_t ngroups, \
                                   T thresh, T offset, int64_t *keep)                    \
{                                                                                        \
    int64_t n = ngroups > 0 ? ends[ngroups - 1] : 0, total = 0, begin = 0;               \
    if (n <= 0) return 0;                                                                \
    T *work = (T *)malloc(sizeof(T) * 5 * (size_t)n);                                    \
    uint8_t *dead = (uint8_t *)malloc((size_t)n);                                        \
    if (!work || !dead) { free(work); free(dead); return -1; }                           \
    for (int64_t g = 0; g < ngroups; ++g) {                                              \
        int64_t m = ends[g] - begin;                                                     \
        if (m > 0) {                                                                     \
            int64_t got = run_##SUFFIX(boxes + 4 * begin, m, thresh, offset, m,          \
                                       keep + total, work, dead);                        \
            for (int64_t k = 0; k < got; ++k) keep[total + k] += begin;                  \
            total += got;                                                                \
        }                                                                                \
        begin = ends[g] > begin ? ends[g] : begin;                                       \
    }                                                                                    \
    free(work);                                                                          \
    free(dead);                                                                          \
    return total;                                                                        \
}

DEFINE_NMS(f32, float)
DEFINE_NMS(f64, double)
