// crc32c (Castagnoli, reflected, as in iSCSI/ext4/btrfs).
#pragma once

#include <cstddef>
#include <cstdint>

namespace slsvirt {

// Extends `crc` (the crc32c of the bytes before) over [data, data+len).
// crc32c(nullptr, 0) == 0; crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void *data, size_t len, uint32_t crc = 0);

// Implementations, exposed for tests; crc32c() picks SSE4.2 when the CPU has it.
uint32_t crc32c_portable(const void *data, size_t len, uint32_t crc = 0);
uint32_t crc32c_hw(const void *data, size_t len, uint32_t crc = 0);
bool crc32c_hw_available();

} // namespace slsvirt
