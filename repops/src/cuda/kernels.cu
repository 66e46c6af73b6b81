// repops CUDA kernels: the same operations, in the same order, as the CPU kernels in `src/kernels/`.
//
// Compiled by NVRTC with --fmad=false (no a*b+c is ever contracted: fused multiply-adds are written
// as fmaf, exactly where the CPU code calls mul_add), IEEE division and square root, and no
// flush-to-zero. The constants (#defines ahead of this file) are generated from the Rust constants,
// bit for bit. Kernels favour the CPU's order of operations over speed: one thread per output element
// or per row, every reduction in the canonical order of `reduce.rs`.

#define RP_INF __uint_as_float(0x7f800000u)
#define RP_NAN __uint_as_float(0x7fc00000u)

__device__ __forceinline__ float pow2i(int k) { return __uint_as_float(((unsigned)(k + 127)) << 23); }

__device__ float rp_exp(float x) {
    if (isnan(x)) return x;
    if (x > EXP_OVERFLOW) return RP_INF;
    if (x < EXP_UNDERFLOW) return 0.0f;
    float k = rintf(x * LOG2E);
    float r = fmaf(-k, LN2_HI, x);
    r = fmaf(-k, LN2_LO, r);
    float p = EXP_POLY_0;
    p = fmaf(p, r, EXP_POLY_1);
    p = fmaf(p, r, EXP_POLY_2);
    p = fmaf(p, r, EXP_POLY_3);
    p = fmaf(p, r, EXP_POLY_4);
    p = fmaf(p, r, EXP_POLY_5);
    p = fmaf(p, r, EXP_POLY_6);
    p = fmaf(p, r, EXP_POLY_7);
    p = fmaf(p, r, EXP_POLY_8);
    int ki = (int)k;
    if (ki > 127) return (p * pow2i(127)) * pow2i(ki - 127);
    if (ki < -126) return (p * pow2i(ki + 64)) * pow2i(-64);
    return p * pow2i(ki);
}

__device__ float rp_ln(float x) {
    if (isnan(x) || x < 0.0f) return RP_NAN;
    if (x == 0.0f) return -RP_INF;
    if (x == RP_INF) return x;
    int e = 0;
    if (x < __uint_as_float(0x00800000u)) { x = x * pow2i(23); e = -23; }
    unsigned bits = __float_as_uint(x);
    e += (int)((bits >> 23) & 0xffu) - 127;
    float m = __uint_as_float((bits & 0x007fffffu) | 0x3f800000u);
    if (m > SQRT2) { m = m * 0.5f; e += 1; }
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float p = LN_POLY_0;
    p = fmaf(p, z, LN_POLY_1);
    p = fmaf(p, z, LN_POLY_2);
    p = fmaf(p, z, LN_POLY_3);
    p = fmaf(p, z, LN_POLY_4);
    p = fmaf(p, z, LN_POLY_5);
    float log1pf = fmaf(s, z * p, 2.0f * s);
    float ef = (float)e;
    return fmaf(ef, LN2_HI, fmaf(ef, LN2_LO, log1pf));
}

__device__ float rp_tanh(float x) {
    if (isnan(x)) return x;
    float a = fabsf(x);
    float t;
    if (a > TANH_SATURATE) {
        t = 1.0f;
    } else if (a < TANH_SERIES) {
        float z = a * a;
        float p = TANH_POLY_0;
        p = fmaf(p, z, TANH_POLY_1);
        p = fmaf(p, z, TANH_POLY_2);
        t = fmaf(a, z * p, a);
    } else {
        t = 1.0f - 2.0f / (rp_exp(2.0f * a) + 1.0f);
    }
    return copysignf(t, x);
}

__device__ __forceinline__ float rp_sigmoid(float x) { return 1.0f / (1.0f + rp_exp(-x)); }

// Unary codes: the order of `Unary` in elementwise.rs.
__device__ float rp_unary(int op, float c, float x) {
    switch (op) {
        case 0: return rp_exp(x);
        case 1: return rp_ln(x);
        case 2: return rp_tanh(x);
        case 3: return sqrtf(x);
        case 4: return 1.0f / sqrtf(x);
        case 5: return x * rp_sigmoid(x);
        case 6: { float s = rp_sigmoid(x); return s * (1.0f + x * (1.0f - s)); }
        case 7: return -x;
        case 8: return x * c;
        case 9: return x + c;
        default: return x * x;
    }
}

// Binary codes: the order of `Binary` in elementwise.rs.
__device__ float rp_binary(int op, float a, float b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        default: return (a * rp_sigmoid(a)) * b;
    }
}

// The canonical reductions of reduce.rs: 8 lanes, a fixed tree, then the tail in order.
__device__ float rp_combine(const float* l) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

__device__ float rp_sum(const float* x, long long n) {
    float l[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    long long c = n / 8 * 8;
    for (long long i = 0; i < c; i += 8)
        for (int j = 0; j < 8; j++) l[j] = l[j] + x[i + j];
    float s = rp_combine(l);
    for (long long i = c; i < n; i++) s = s + x[i];
    return s;
}

__device__ float rp_dot(const float* a, const float* b, long long n) {
    float l[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    long long c = n / 8 * 8;
    for (long long i = 0; i < c; i += 8)
        for (int j = 0; j < 8; j++) l[j] = fmaf(a[i + j], b[i + j], l[j]);
    float s = rp_combine(l);
    for (long long i = c; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

__device__ float rp_max(const float* x, long long n) {
    float m = -RP_INF;
    for (long long i = 0; i < n; i++) {
        float v = x[i];
        if (isnan(v)) return v;
        if (v > m) m = v;
    }
    return m;
}

#define GRID_STRIDE(i, total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (long long)blockDim.x * gridDim.x)

// C = op(A) . op(B): A is m x k (stored k x m when ta), B is k x n (stored n x k when tb); one fma
// chain per element in increasing p, as on the CPU, whichever way the operands are stored.
extern "C" __global__ void rp_matmul(const float* a, const float* b, float* c, long long batch, long long m,
                                     long long k, long long n, int shared_b, int ta, int tb) {
    GRID_STRIDE(idx, batch * m * n) {
        long long bi = idx / (m * n), rem = idx % (m * n), i = rem / n, j = rem % n;
        const float* am = a + bi * m * k;
        const float* bm = b + (shared_b ? 0 : bi * k * n);
        long long a_at = ta ? i : i * k, a_step = ta ? m : 1;
        long long b_at = tb ? j * k : j, b_step = tb ? 1 : n;
        float acc = 0.0f;
        for (long long p = 0; p < k; p++) acc = fmaf(am[a_at + p * a_step], bm[b_at + p * b_step], acc);
        c[idx] = acc;
    }
}

// The same product, tiled: a block of 16 x 16 threads computes a 64 x 64 tile of C, four rows by four
// columns per thread, staging 16-deep slices of A and B in shared memory. Each element is still the one
// fma chain in increasing p from +0 (the slice loop runs only over the k that exist: no padding term is
// ever added, which would turn a -0 sum into +0), so the bits are rp_matmul's. Grid: (n/64, m/64, batch).
#define RP_BM 64
#define RP_BN 64
#define RP_BK 16
extern "C" __global__ void rp_matmul_tiled(const float* a, const float* b, float* c, long long batch, long long m,
                                           long long k, long long n, int shared_b, int ta, int tb) {
    __shared__ float As[RP_BK][RP_BM + 1];
    __shared__ float Bs[RP_BK][RP_BN + 1];
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
    const long long bi = blockIdx.z;
    const long long row0 = (long long)blockIdx.y * RP_BM, col0 = (long long)blockIdx.x * RP_BN;
    const float* am = a + bi * m * k;
    const float* bm = b + (shared_b ? 0 : bi * k * n);
    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[r][q] = 0.0f;
    for (long long p0 = 0; p0 < k; p0 += RP_BK) {
        // Neighbouring threads load neighbouring addresses, whichever way the operand is stored.
        for (int e = tid; e < RP_BM * RP_BK; e += 256) {
            const int r = ta ? e % RP_BM : e / RP_BK, q = ta ? e / RP_BM : e % RP_BK;
            const long long gi = row0 + r, gp = p0 + q;
            As[q][r] = (gi < m && gp < k) ? (ta ? am[gp * m + gi] : am[gi * k + gp]) : 0.0f;
        }
        for (int e = tid; e < RP_BK * RP_BN; e += 256) {
            const int q = tb ? e % RP_BK : e / RP_BN, cc = tb ? e / RP_BK : e % RP_BN;
            const long long gp = p0 + q, gj = col0 + cc;
            Bs[q][cc] = (gp < k && gj < n) ? (tb ? bm[gj * k + gp] : bm[gp * n + gj]) : 0.0f;
        }
        __syncthreads();
        const int depth = (k - p0 < RP_BK) ? (int)(k - p0) : RP_BK;
        for (int q = 0; q < depth; q++) {
            float av[4], bv[4];
#pragma unroll
            for (int r = 0; r < 4; r++) av[r] = As[q][ty + 16 * r];
#pragma unroll
            for (int j = 0; j < 4; j++) bv[j] = Bs[q][tx + 16 * j];
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[r][j] = fmaf(av[r], bv[j], acc[r][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const long long gi = row0 + ty + 16 * r;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const long long gj = col0 + tx + 16 * j;
            if (gi < m && gj < n) c[(bi * m + gi) * n + gj] = acc[r][j];
        }
    }
}

extern "C" __global__ void rp_transpose(const float* x, float* y, long long batch, long long r, long long c) {
    GRID_STRIDE(idx, batch * r * c) {
        long long bi = idx / (r * c), rem = idx % (r * c), i = rem / c, j = rem % c;
        y[bi * r * c + j * r + i] = x[idx];
    }
}

extern "C" __global__ void rp_unary_k(const float* x, float* y, long long n, int op, float c) {
    GRID_STRIDE(i, n) { y[i] = rp_unary(op, c, x[i]); }
}

extern "C" __global__ void rp_binary_k(const float* a, const float* b, float* y, long long n, int op) {
    GRID_STRIDE(i, n) { y[i] = rp_binary(op, a[i], b[i]); }
}

// kind: 0 sum, 1 mean, 2 max.
extern "C" __global__ void rp_row_reduce(const float* x, float* y, long long rows, long long n, int kind) {
    GRID_STRIDE(r, rows) {
        const float* xr = x + r * n;
        if (kind == 2) y[r] = rp_max(xr, n);
        else if (kind == 1) y[r] = rp_sum(xr, n) / (float)n;
        else y[r] = rp_sum(xr, n);
    }
}

// log: 0 softmax, 1 log-softmax.
extern "C" __global__ void rp_softmax(const float* x, float* y, long long rows, long long n, int log) {
    GRID_STRIDE(r, rows) {
        const float* xr = x + r * n;
        float* yr = y + r * n;
        float m = rp_max(xr, n);
        for (long long i = 0; i < n; i++) yr[i] = rp_exp(xr[i] - m);
        float s = rp_sum(yr, n);
        if (log) {
            float ls = rp_ln(s);
            for (long long i = 0; i < n; i++) yr[i] = (xr[i] - m) - ls;
        } else {
            for (long long i = 0; i < n; i++) yr[i] = yr[i] / s;
        }
    }
}

extern "C" __global__ void rp_softmax_backward(const float* y, const float* dy, float* dx, long long rows, long long n,
                                               int log) {
    GRID_STRIDE(r, rows) {
        const float* yr = y + r * n;
        const float* gr = dy + r * n;
        float* o = dx + r * n;
        if (log) {
            float s = rp_sum(gr, n);
            for (long long i = 0; i < n; i++) o[i] = gr[i] - rp_exp(yr[i]) * s;
        } else {
            float d = rp_dot(gr, yr, n);
            for (long long i = 0; i < n; i++) o[i] = yr[i] * (gr[i] - d);
        }
    }
}

// Per-row losses into `losses`; `scratch` holds rows * n floats.
extern "C" __global__ void rp_cross_entropy_rows(const float* x, const unsigned* t, float* scratch, float* losses,
                                                 long long rows, long long n) {
    GRID_STRIDE(r, rows) {
        const float* xr = x + r * n;
        float* e = scratch + r * n;
        float m = rp_max(xr, n);
        for (long long i = 0; i < n; i++) e[i] = rp_exp(xr[i] - m);
        losses[r] = rp_ln(rp_sum(e, n)) - (xr[t[r]] - m);
    }
}

extern "C" __global__ void rp_mean_of(const float* losses, float* out, long long rows) {
    if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = rp_sum(losses, rows) / (float)rows;
}

extern "C" __global__ void rp_cross_entropy_backward(const float* x, const unsigned* t, const float* dloss, float* dx,
                                                     long long rows, long long n) {
    float g = dloss[0] / (float)rows;
    GRID_STRIDE(r, rows) {
        const float* xr = x + r * n;
        float* o = dx + r * n;
        float m = rp_max(xr, n);
        for (long long i = 0; i < n; i++) o[i] = rp_exp(xr[i] - m);
        float s = rp_sum(o, n);
        for (long long i = 0; i < n; i++) {
            float onehot = (i == (long long)t[r]) ? 1.0f : 0.0f;
            o[i] = (o[i] / s - onehot) * g;
        }
    }
}

__device__ __forceinline__ float rp_inv_rms(const float* xr, long long n, float eps) {
    return 1.0f / sqrtf(rp_dot(xr, xr, n) / (float)n + eps);
}

extern "C" __global__ void rp_rms_norm(const float* x, const float* w, float* y, long long rows, long long n, float eps) {
    GRID_STRIDE(r, rows) {
        const float* xr = x + r * n;
        float inv = rp_inv_rms(xr, n, eps);
        for (long long i = 0; i < n; i++) y[r * n + i] = (xr[i] * inv) * w[i];
    }
}

extern "C" __global__ void rp_rms_norm_backward_x(const float* x, const float* w, const float* dy, float* dx,
                                                  long long rows, long long n, float eps) {
    GRID_STRIDE(r, rows) {
        const float* xr = x + r * n;
        const float* gr = dy + r * n;
        float inv = rp_inv_rms(xr, n, eps);
        float l[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        long long c8 = n / 8 * 8;
        for (long long i = 0; i < c8; i += 8)
            for (int j = 0; j < 8; j++) l[j] = fmaf(gr[i + j] * w[i + j], xr[i + j], l[j]);
        float d = rp_combine(l);
        for (long long i = c8; i < n; i++) d = fmaf(gr[i] * w[i], xr[i], d);
        float c = d / (float)n;
        float k = ((inv * inv) * inv) * c;
        for (long long i = 0; i < n; i++) dx[r * n + i] = inv * (gr[i] * w[i]) - xr[i] * k;
    }
}

extern "C" __global__ void rp_inv_rms_rows(const float* x, float* inv, long long rows, long long n, float eps) {
    GRID_STRIDE(r, rows) { inv[r] = rp_inv_rms(x + r * n, n, eps); }
}

extern "C" __global__ void rp_rms_norm_backward_w(const float* x, const float* dy, const float* inv, float* dw,
                                                  long long rows, long long n) {
    GRID_STRIDE(j, n) {
        float acc = 0.0f;
        for (long long r = 0; r < rows; r++) acc = fmaf(dy[r * n + j], x[r * n + j] * inv[r], acc);
        dw[j] = acc;
    }
}

extern "C" __global__ void rp_rope(const float* x, const float* cos_t, const float* sin_t, float* y, long long rows,
                                   long long positions, long long d, int inverse) {
    long long half = d / 2;
    GRID_STRIDE(idx, rows * half) {
        long long r = idx / half, i = idx % half, t = r % positions;
        float c = cos_t[t * half + i];
        float s = inverse ? -sin_t[t * half + i] : sin_t[t * half + i];
        float x1 = x[r * d + i], x2 = x[r * d + i + half];
        y[r * d + i] = x1 * c - x2 * s;
        y[r * d + i + half] = x1 * s + x2 * c;
    }
}

extern "C" __global__ void rp_embedding(const float* table, const unsigned* ids, float* out, long long tokens, long long d) {
    GRID_STRIDE(idx, tokens * d) {
        long long t = idx / d, j = idx % d;
        out[idx] = table[(long long)ids[t] * d + j];
    }
}

// `grad` starts zeroed; each thread owns a column and adds the tokens in order.
extern "C" __global__ void rp_embedding_backward(const float* dy, const unsigned* ids, float* grad, long long tokens,
                                                 long long d) {
    GRID_STRIDE(j, d) {
        for (long long t = 0; t < tokens; t++) {
            long long at = (long long)ids[t] * d + j;
            grad[at] = grad[at] + dy[t * d + j];
        }
    }
}

extern "C" __global__ void rp_adam_moment(const float* m, const float* g, float* out, long long n, float beta, int second) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        out[i] = second ? beta * m[i] + (1.0f - beta) * (gi * gi) : beta * m[i] + (1.0f - beta) * gi;
    }
}

extern "C" __global__ void rp_adam_param(const float* p, const float* m, const float* v, float* out, long long n,
                                         float lr, float eps, float decay, float bc1, float bc2) {
    GRID_STRIDE(i, n) {
        float x = p[i];
        x = x - decay * x;
        x = x - lr * ((m[i] / bc1) / (sqrtf(v[i] / bc2) + eps));
        out[i] = x;
    }
}
