// crc32c: SSE4.2 crc32 instruction when the CPU has it, Boost.CRC otherwise.
#include <boost/crc.hpp>

#include <cstring>

#include "slsvirt/crc32c.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace slsvirt {

uint32_t crc32c_portable(const void *data, size_t len, uint32_t crc)
{
	// Continuing a computation: the register is the previous crc with the
	// final xor undone; Boost takes it in unreflected bit order.
	uint32_t reg = crc ^ 0xFFFFFFFFu, init = 0;
	for (int i = 0; i < 32; i++)
		init |= ((reg >> i) & 1u) << (31 - i);
	boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> c(init);
	c.process_bytes(data, len);
	return c.checksum();
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_hw(const void *data, size_t len, uint32_t crc)
{
	const auto *p = static_cast<const unsigned char *>(data);
	uint64_t c = crc ^ 0xFFFFFFFFu;
	while (len && (reinterpret_cast<uintptr_t>(p) & 7)) {
		c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = _mm_crc32_u64(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
	return static_cast<uint32_t>(c) ^ 0xFFFFFFFFu;
}

bool crc32c_hw_available()
{
	static const bool has = __builtin_cpu_supports("sse4.2");
	return has;
}
#else
uint32_t crc32c_hw(const void *data, size_t len, uint32_t crc) { return crc32c_portable(data, len, crc); }
bool crc32c_hw_available() { return false; }
#endif

uint32_t crc32c(const void *data, size_t len, uint32_t crc)
{
	if (crc32c_hw_available())
		return crc32c_hw(data, len, crc);
	return crc32c_portable(data, len, crc);
}

} // namespace slsvirt
