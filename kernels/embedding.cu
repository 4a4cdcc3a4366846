#include "kernels/embedding.cuh"

#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda_check.h"
#include "kernels/device_common.cuh"

namespace fp8d::kernels {
namespace {

constexpr int kThreads = 256;
constexpr size_t kAlign = 256;

size_t AlignUp(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// Radix sort only the bits a token id can have.
int KeyBits(int vocab) {
  int bits = 1;
  while ((1ll << bits) < vocab) ++bits;
  return bits;
}

size_t CubTempBytes(int n, int vocab) {
  size_t bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr),
                                             static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), n, 0,
                                             KeyBits(vocab)));
  return bytes;
}

// Workspace: sorted tokens | positions | sorted positions | CUB scratch.
struct Workspace {
  int32_t* sorted_tokens;
  int32_t* positions;
  int32_t* sorted_positions;
  void* cub_temp;
  size_t cub_bytes;
};

Workspace CarveWorkspace(void* base, int n, int vocab) {
  char* p = static_cast<char*>(base);
  const size_t ints = AlignUp(sizeof(int32_t) * static_cast<size_t>(n));
  Workspace w;
  w.sorted_tokens = reinterpret_cast<int32_t*>(p);
  w.positions = reinterpret_cast<int32_t*>(p + ints);
  w.sorted_positions = reinterpret_cast<int32_t*>(p + 2 * ints);
  w.cub_temp = p + 3 * ints;
  w.cub_bytes = CubTempBytes(n, vocab);
  return w;
}

__global__ void EmbeddingForwardKernel(__nv_bfloat16* out, const int32_t* tokens,
                                       const float* table, int n, int dim) {
  const int i = blockIdx.x;
  const float* row = table + static_cast<int64_t>(tokens[i]) * dim;
  __nv_bfloat16* o = out + static_cast<int64_t>(i) * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) o[c] = __float2bfloat16_rn(row[c]);
}

__global__ void IotaKernel(int32_t* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = i;
}

// Block (k, y) works when sorted_tokens[k] starts a segment (differs from its predecessor): it
// then owns channels [y * blockDim.x, (y + 1) * blockDim.x) of that token's gradient row and
// adds the segment's rows in position order, starting from the row's current value as the
// reference does. Splitting channels over blockIdx.y keeps a frequent token's serial chain short.
__global__ void EmbeddingBackwardSegmentKernel(float* dtable, const int32_t* sorted_tokens,
                                               const int32_t* sorted_positions,
                                               const __nv_bfloat16* dout, int n, int dim) {
  const int k = blockIdx.x;
  const int32_t token = sorted_tokens[k];
  if (k > 0 && sorted_tokens[k - 1] == token) return;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  int end = k + 1;
  while (end < n && sorted_tokens[end] == token) ++end;
  float* row = dtable + static_cast<int64_t>(token) * dim;
  float acc = row[c];
#pragma unroll 4
  for (int j = k; j < end; ++j) {
    acc += __bfloat162float(dout[static_cast<int64_t>(sorted_positions[j]) * dim + c]);
  }
  row[c] = acc;
}

}  // namespace

void EmbeddingForward(cudaStream_t stream, __nv_bfloat16* out, const int32_t* tokens,
                      const float* table, int n, int dim) {
  if (n == 0) return;
  EmbeddingForwardKernel<<<n, kThreads, 0, stream>>>(out, tokens, table, n, dim);
  CUDA_CHECK_LAUNCH();
}

size_t EmbeddingBackwardWorkspaceBytes(int n, int vocab) {
  return 3 * AlignUp(sizeof(int32_t) * static_cast<size_t>(n)) + CubTempBytes(n, vocab);
}

void EmbeddingBackward(cudaStream_t stream, float* dtable, const int32_t* tokens,
                       const __nv_bfloat16* dout, int n, int dim, int vocab, void* workspace,
                       size_t workspace_bytes) {
  if (n == 0) return;
  FP8D_KERNELS_CHECK(workspace_bytes >= EmbeddingBackwardWorkspaceBytes(n, vocab));
  Workspace w = CarveWorkspace(workspace, n, vocab);
  IotaKernel<<<static_cast<unsigned>(CeilDiv(n, kThreads)), kThreads, 0, stream>>>(w.positions, n);
  CUDA_CHECK_LAUNCH();
  // Radix sort is stable: equal tokens keep increasing positions.
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(w.cub_temp, w.cub_bytes, tokens, w.sorted_tokens,
                                             w.positions, w.sorted_positions, n, 0,
                                             KeyBits(vocab), stream));
  const dim3 grid(n, static_cast<unsigned>(CeilDiv(dim, kThreads)));
  EmbeddingBackwardSegmentKernel<<<grid, kThreads, 0, stream>>>(dtable, w.sorted_tokens,
                                                                w.sorted_positions, dout, n, dim);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fp8d::kernels
