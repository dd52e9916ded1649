// Emulated CUB device radix sort (cub/device/device_radix_sort.cuh) with CUB's temporary-storage
// protocol: a call with d_temp_storage == nullptr only writes the bytes it needs; a call with storage
// smaller than that fails. Keys are ordered by CUB's bit transform (floats: sign bit flipped for
// positives, all bits for negatives, so -0.0 sorts below +0.0), restricted to [begin_bit, end_bit);
// the sort is stable, as CUB's. The sort is queued on the stream like a kernel.
#pragma once

#include <algorithm>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "mcpm_emu/runtime.h"

namespace mcpm_emu {

template <class K>
uint64_t radix_key(K key) {
  if constexpr (std::is_same<K, float>::value) {
    uint32_t u;
    std::memcpy(&u, &key, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  } else if constexpr (std::is_same<K, double>::value) {
    uint64_t u;
    std::memcpy(&u, &key, 8);
    return (u >> 63) ? ~u : (u | (uint64_t{1} << 63));
  } else if constexpr (std::is_signed<K>::value) {
    return static_cast<uint64_t>(static_cast<std::make_unsigned_t<K>>(key)) ^ (uint64_t{1} << (8 * sizeof(K) - 1));
  } else {
    return static_cast<uint64_t>(key);
  }
}

template <class K, class V>
cudaError_t radix_sort_pairs(bool descending, void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out,
                             const V* values_in, V* values_out, int n, int begin_bit, int end_bit,
                             cudaStream_t stream) {
  const size_t need = static_cast<size_t>(n > 0 ? n : 0) * (sizeof(K) + sizeof(V) + sizeof(int)) + 256;
  if (!temp) {
    temp_bytes = need;
    return cudaSuccess;
  }
  if (temp_bytes < need || n < 0 || begin_bit < 0 || end_bit > static_cast<int>(8 * sizeof(K)) || begin_bit >= end_bit)
    return cudaErrorInvalidValue;
  return enqueue_device_work(stream, [=] {
    const size_t count = static_cast<size_t>(n);
    if (!is_device_range(temp, need) || !is_device_range(keys_in, count * sizeof(K)) ||
        !is_device_range(keys_out, count * sizeof(K)) || !is_device_range(values_in, count * sizeof(V)) ||
        !is_device_range(values_out, count * sizeof(V))) {
      device_fault("cub::DeviceRadixSort: an operand lies outside device memory");
      return;
    }
    const uint64_t mask = (end_bit - begin_bit >= 64) ? ~uint64_t{0} : ((uint64_t{1} << (end_bit - begin_bit)) - 1);
    std::vector<uint64_t> digits(count);
    for (size_t i = 0; i < count; ++i) digits[i] = (radix_key(keys_in[i]) >> begin_bit) & mask;
    std::vector<size_t> order(count);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return descending ? digits[a] > digits[b] : digits[a] < digits[b];
    });
    std::vector<K> keys(count);
    std::vector<V> values(count);
    for (size_t i = 0; i < count; ++i) {
      keys[i] = keys_in[order[i]];
      values[i] = values_in[order[i]];
    }
    std::copy(keys.begin(), keys.end(), keys_out);
    std::copy(values.begin(), values.end(), values_out);
  });
}

}  // namespace mcpm_emu

namespace cub {

struct DeviceRadixSort {
  template <class K, class V>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const K* d_keys_in, K* d_keys_out,
                               const V* d_values_in, V* d_values_out, int num_items, int begin_bit = 0,
                               int end_bit = sizeof(K) * 8, cudaStream_t stream = nullptr) {
    return mcpm_emu::radix_sort_pairs(false, d_temp_storage, temp_storage_bytes, d_keys_in, d_keys_out, d_values_in,
                                      d_values_out, num_items, begin_bit, end_bit, stream);
  }
  template <class K, class V>
  static cudaError_t SortPairsDescending(void* d_temp_storage, size_t& temp_storage_bytes, const K* d_keys_in,
                                         K* d_keys_out, const V* d_values_in, V* d_values_out, int num_items,
                                         int begin_bit = 0, int end_bit = sizeof(K) * 8, cudaStream_t stream = nullptr) {
    return mcpm_emu::radix_sort_pairs(true, d_temp_storage, temp_storage_bytes, d_keys_in, d_keys_out, d_values_in,
                                      d_values_out, num_items, begin_bit, end_bit, stream);
  }
};

}  // namespace cub
