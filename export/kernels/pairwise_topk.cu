// Pairwise distances and fused distance + top-k between query rows and bank rows.
//
//   qfm_pairwise_dist : Q (N, D) fp16, B (M, D) fp16 -> dist (N, M) fp32
//   qfm_topk_partial  : the same distances, never written out: each block keeps, per query, the k
//                       best over its slice of the bank and writes (N, S*k) partial lists
//   qfm_topk_merge    : (N, L) candidate lists -> (N, k) final, one warp per query
//
// Distances: squared L2 (|q|^2 + |b|^2 - 2 q.b, clamped at 0) or cosine (1 - q.b / (|q||b|)).
// The dot products run on tensor cores (WMMA 16x16x16, fp16 in, fp32 accumulate); the norms are
// summed in fp32 from the same fp16 tiles, so both metrics see exactly the values the MMA sees.
//
// Compile-time configuration (NVRTC -D options, see compile.py):
//   QFM_QT     query rows per block (16, 64 or 128)      QFM_MT  bank rows per tile (64 or 128)
//   QFM_METRIC 0 = squared L2, 1 = cosine
// Fixed: 8 warps per block, D chunks of 64, k <= 32 (one list slot per lane).
//
// Requirements on the caller: D % 8 == 0 (16-byte vector loads; pad with zeros otherwise, which
// changes neither metric) and 16-byte aligned row starts (true for contiguous tensors when
// D % 8 == 0). N, M are arbitrary: out-of-range rows are zero-filled and masked.
//
// Ties: candidates are visited in increasing bank index and an equal distance never displaces an
// earlier entry, so among equal distances the lower index ranks first (the reference's order).
// The final merge (qfm_topk_merge) keeps that order: partial lists arrive in split order, and the
// splits cover increasing index ranges.
//
// Non-finite distances (a NaN or inf embedding, e.g. an FP16 overflow upstream) rank as FLT_MAX:
// after every finite distance, before the empty-slot sentinel (+inf, index -1). So every returned
// index is a real bank row whenever the bank has >= k rows, and gathers downstream (scores, ids
// in the TensorRT engine) never read out of bounds.

#include <cuda_fp16.h>
#include <mma.h>

#define QFM_INF __int_as_float(0x7f800000)

#ifndef QFM_QT
#define QFM_QT 64
#endif
#ifndef QFM_MT
#define QFM_MT 64
#endif
#ifndef QFM_METRIC
#define QFM_METRIC 0
#endif

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kQT = QFM_QT;
constexpr int kMT = QFM_MT;
constexpr int kKC = 64;                 // D chunk staged in shared memory
constexpr int kLdh = kKC + 8;           // padded row stride (halves): spreads rows over banks
constexpr int kLdc = kMT + 4;           // padded row stride (floats) of the dot-product tile
constexpr int kKMax = 32;
constexpr int kFragsPerWarp = (kQT / 16) * (kMT / 16) / kWarps;
constexpr int kQueriesPerWarp = kQT / kWarps;
constexpr int kNormSegs = kThreads / kMT;   // threads summing one bank row's squares
constexpr float kEps = 1e-8f;

static_assert(kFragsPerWarp >= 1 && (kQT / 16) * (kMT / 16) % kWarps == 0, "tile must split over 8 warps");
static_assert(kThreads % kMT == 0 && kKC % kNormSegs == 0, "bank tile rows must divide the block");
static_assert(kQT % kWarps == 0, "query tile must split over 8 warps");

constexpr int kStageBytes = (kQT + kMT) * kLdh * 2;
constexpr int kTileBytes = kQT * kLdc * 4;
constexpr int kSmemBytes = kStageBytes > kTileBytes ? kStageBytes : kTileBytes;

struct Shared {
    // The staged fp16 chunks and the fp32 dot-product tile are never live at the same time.
    alignas(128) unsigned char raw[kSmemBytes];
    float q_sq[kQT];          // |q|^2 of the block's queries
    float b_sq[kMT];          // |b|^2 of the current bank tile
    float b_part[kThreads];   // per-thread partial |b|^2 before the reduction
};

// The value a distance is ranked (and reported) by: itself when finite, else FLT_MAX. A bit test,
// not isfinite(): it cannot be folded away under fast-math assumptions.
__device__ __forceinline__ float rank_key(float d) {
    return (__float_as_uint(d) & 0x7f800000u) == 0x7f800000u ? 3.402823466e38f : d;
}

__device__ __forceinline__ float finish_distance(float dot, float q_sq, float b_sq) {
#if QFM_METRIC == 0
    // Clamp rounding below zero, but let NaN through: fmaxf(NaN, 0) is 0, which would rank a NaN
    // embedding as everyone's exact duplicate.
    const float d = q_sq + b_sq - 2.0f * dot;
    return d < 0.0f ? 0.0f : d;
#else
    return 1.0f - dot / (fmaxf(sqrtf(q_sq), kEps) * fmaxf(sqrtf(b_sq), kEps));
#endif
}

// |q|^2 for the block's queries, one warp per query row (rows >= N get 0).
__device__ void query_norms(const __half* __restrict__ Q, int N, int D, int q0, Shared& s) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int r = warp; r < kQT; r += kWarps) {
        float acc = 0.0f;
        const int gq = q0 + r;
        if (gq < N) {
            const __half* row = Q + (size_t)gq * D;
            for (int c = lane; c < D; c += 32) { const float v = __half2float(row[c]); acc += v * v; }
        }
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0) s.q_sq[r] = acc;
    }
}

// Stage rows [row0, row0 + rows) x [k0, k0 + kKC) of X into shared memory, zero outside
// [0, row_end) x [0, D). 16-byte vector loads.
template <int ROWS>
__device__ __forceinline__ void stage_chunk(const __half* __restrict__ X, int row0, int row_end, int D, int k0,
                                            __half* dst) {
    constexpr int kVecPerRow = kKC / 8;
    for (int v = threadIdx.x; v < ROWS * kVecPerRow; v += kThreads) {
        const int r = v / kVecPerRow, c = (v % kVecPerRow) * 8;
        const int gr = row0 + r, gc = k0 + c;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (gr < row_end && gc < D) val = *reinterpret_cast<const uint4*>(X + (size_t)gr * D + gc);
        *reinterpret_cast<uint4*>(dst + r * kLdh + c) = val;
    }
}

// Dot products of the block's kQT queries with bank rows [m0, m0 + kMT) into the fp32 tile
// (row = query, column = bank row), and |b|^2 of those bank rows into s.b_sq.
__device__ void dot_tile(const __half* __restrict__ Q, const __half* __restrict__ B, int N, int m_end, int D,
                         int q0, int m0, Shared& s) {
    using namespace nvcuda;
    __half* sQ = reinterpret_cast<__half*>(s.raw);
    __half* sB = sQ + kQT * kLdh;
    const int warp = threadIdx.x / 32;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kFragsPerWarp];
#pragma unroll
    for (int f = 0; f < kFragsPerWarp; ++f) wmma::fill_fragment(acc[f], 0.0f);

    const int norm_row = threadIdx.x % kMT, norm_seg = threadIdx.x / kMT;
    constexpr int kSegCols = kKC / kNormSegs;
    float b_part = 0.0f;

    for (int k0 = 0; k0 < D; k0 += kKC) {
        stage_chunk<kQT>(Q, q0, N, D, k0, sQ);
        stage_chunk<kMT>(B, m0, m_end, D, k0, sB);
        __syncthreads();
#pragma unroll 4
        for (int c = 0; c < kSegCols; ++c) {
            const float v = __half2float(sB[norm_row * kLdh + norm_seg * kSegCols + c]);
            b_part += v * v;
        }
#pragma unroll
        for (int kk = 0; kk < kKC; kk += 16) {
#pragma unroll
            for (int f = 0; f < kFragsPerWarp; ++f) {
                const int tile = warp * kFragsPerWarp + f;
                const int tr = tile / (kMT / 16), tc = tile % (kMT / 16);
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
                wmma::load_matrix_sync(a, sQ + tr * 16 * kLdh + kk, kLdh);
                wmma::load_matrix_sync(b, sB + tc * 16 * kLdh + kk, kLdh);   // B^T, column-major
                wmma::mma_sync(acc[f], a, b, acc[f]);
            }
        }
        __syncthreads();   // the next chunk (or the fp32 tile) overwrites the staging buffers
    }
    float* sC = reinterpret_cast<float*>(s.raw);
#pragma unroll
    for (int f = 0; f < kFragsPerWarp; ++f) {
        const int tile = warp * kFragsPerWarp + f;
        const int tr = tile / (kMT / 16), tc = tile % (kMT / 16);
        wmma::store_matrix_sync(sC + tr * 16 * kLdc + tc * 16, acc[f], kLdc, wmma::mem_row_major);
    }
    s.b_part[threadIdx.x] = b_part;
    __syncthreads();
    if (threadIdx.x < kMT) {
        float t = 0.0f;
#pragma unroll
        for (int g = 0; g < kNormSegs; ++g) t += s.b_part[g * kMT + threadIdx.x];
        s.b_sq[threadIdx.x] = t;
    }
    __syncthreads();
}

// Insert (d, i) into a warp-wide sorted list, one slot per lane (lane 0 = best). Equal distances
// keep their order of arrival; the worst slot falls off the end.
__device__ __forceinline__ void warp_insert(float& best_d, int& best_i, float d, int i, int lane) {
    const unsigned before = __ballot_sync(0xffffffffu, best_d <= d);
    const int pos = __popc(before);
    const float up_d = __shfl_up_sync(0xffffffffu, best_d, 1);
    const int up_i = __shfl_up_sync(0xffffffffu, best_i, 1);
    if (lane > pos) { best_d = up_d; best_i = up_i; }
    else if (lane == pos) { best_d = d; best_i = i; }
}

// Offer one candidate per lane (visited in lane order) to a warp list of length k.
__device__ __forceinline__ void warp_offer(float& best_d, int& best_i, float d, int i, int k, int lane) {
    const float kth = __shfl_sync(0xffffffffu, best_d, k - 1);
    unsigned pending = __ballot_sync(0xffffffffu, d < kth);
    while (pending) {                                    // rare once the list has filled
        const int src = __ffs(pending) - 1;
        pending &= pending - 1;
        const float cd = __shfl_sync(0xffffffffu, d, src);
        const int ci = __shfl_sync(0xffffffffu, i, src);
        if (cd < __shfl_sync(0xffffffffu, best_d, k - 1)) warp_insert(best_d, best_i, cd, ci, lane);
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(kThreads, 2)
qfm_pairwise_dist(const __half* __restrict__ Q, const __half* __restrict__ B, int N, int M, int D,
                  float* __restrict__ dist) {
    __shared__ Shared s;
    const int q0 = blockIdx.y * kQT, m0 = blockIdx.x * kMT;
    query_norms(Q, N, D, q0, s);
    dot_tile(Q, B, N, M, D, q0, m0, s);
    const float* sC = reinterpret_cast<const float*>(s.raw);
    for (int e = threadIdx.x; e < kQT * kMT; e += kThreads) {   // row-wise: coalesced stores
        const int r = e / kMT, c = e % kMT;
        if (q0 + r < N && m0 + c < M)
            dist[(size_t)(q0 + r) * M + m0 + c] = finish_distance(sC[r * kLdc + c], s.q_sq[r], s.b_sq[c]);
    }
}

// grid = (S, ceil(N / QT)); block x handles bank rows [x * chunk, min(M, (x + 1) * chunk)) and
// writes its k best per query to out[:, x * k : (x + 1) * k] (distance +inf and index -1 where
// the slice has fewer than k rows).
extern "C" __global__ void __launch_bounds__(kThreads, 2)
qfm_topk_partial(const __half* __restrict__ Q, const __half* __restrict__ B, int N, int M, int D, int k,
                 int chunk, float* __restrict__ out_d, int* __restrict__ out_i) {
    __shared__ Shared s;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int q0 = blockIdx.y * kQT;
    const int m_begin = blockIdx.x * chunk;
    const int m_end = min(M, m_begin + chunk);
    float best_d[kQueriesPerWarp];
    int best_i[kQueriesPerWarp];
#pragma unroll
    for (int j = 0; j < kQueriesPerWarp; ++j) { best_d[j] = QFM_INF; best_i[j] = -1; }

    query_norms(Q, N, D, q0, s);
    for (int m0 = m_begin; m0 < m_end; m0 += kMT) {
        dot_tile(Q, B, N, m_end, D, q0, m0, s);
        const float* sC = reinterpret_cast<const float*>(s.raw);
#pragma unroll
        for (int j = 0; j < kQueriesPerWarp; ++j) {
            const int r = warp * kQueriesPerWarp + j;
            if (q0 + r >= N) continue;                        // warp-uniform
#pragma unroll
            for (int c0 = 0; c0 < kMT; c0 += 32) {
                const int c = c0 + lane, m = m0 + c;
                const float d = m < m_end ? rank_key(finish_distance(sC[r * kLdc + c], s.q_sq[r], s.b_sq[c]))
                                          : QFM_INF;
                warp_offer(best_d[j], best_i[j], d, m, k, lane);
            }
        }
        __syncthreads();   // the next tile overwrites the fp32 tile
    }
    const int stride = gridDim.x * k;
#pragma unroll
    for (int j = 0; j < kQueriesPerWarp; ++j) {
        const int gq = q0 + warp * kQueriesPerWarp + j;
        if (gq < N && lane < k) {
            out_d[(size_t)gq * stride + blockIdx.x * k + lane] = best_d[j];
            out_i[(size_t)gq * stride + blockIdx.x * k + lane] = best_i[j];
        }
    }
}

// One warp per query: the k best of L candidates (in_d, in_i: (N, L)). Candidates with index -1
// (empty slots) are skipped. grid = (ceil(N / 8), 1): 8 warps per block. Also the TensorRT match
// engine's last step (plugin qfm::knn_merge), so the engine keeps the tie order above.
extern "C" __global__ void __launch_bounds__(kThreads)
qfm_topk_merge(const float* __restrict__ in_d, const int* __restrict__ in_i, int N, int L, int k,
               float* __restrict__ out_d, int* __restrict__ out_i) {
    const int lane = threadIdx.x % 32;
    const int q = blockIdx.x * kWarps + threadIdx.x / 32;
    if (q >= N) return;                                     // whole warp leaves together
    float best_d = QFM_INF;
    int best_i = -1;
    for (int c0 = 0; c0 < L; c0 += 32) {
        const int c = c0 + lane;
        float d = QFM_INF;
        int i = -1;
        if (c < L) { i = in_i[(size_t)q * L + c]; d = i < 0 ? QFM_INF : rank_key(in_d[(size_t)q * L + c]); }
        warp_offer(best_d, best_i, d, i, k, lane);
    }
    if (lane < k) { out_d[(size_t)q * k + lane] = best_d; out_i[(size_t)q * k + lane] = best_i; }
}
