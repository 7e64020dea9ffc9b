// crc32c: SSE4.2 crc32 instruction (three interleaved streams) when the CPU
// has it, Boost.CRC otherwise.
#include <boost/crc.hpp>

#include <array>
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
namespace {

// Three independent crc32 streams hide the instruction's 3-cycle latency
// (one stream: ~8 bytes per 3 cycles; three: ~8 bytes per cycle). Each
// stripe is 3 x kLane bytes; the lanes are joined by shifting a lane's crc
// register over kLane zero bytes (a GF(2) linear map, applied with four
// table lookups) and xoring the next lane's, as in Mark Adler's crc32c.c.
// kLane = 1360: a 4096-byte page is three lanes plus 16 bytes.
constexpr size_t kLane = 1360;
constexpr uint32_t kPoly = 0x82F63B78u;	// reflected Castagnoli

using Mat = std::array<uint32_t, 32>;	// column n: image of bit n

uint32_t mat_times(const Mat &m, uint32_t v)
{
	uint32_t r = 0;
	for (int n = 0; v; n++, v >>= 1)
		if (v & 1)
			r ^= m[static_cast<size_t>(n)];
	return r;
}

Mat mat_mul(const Mat &a, const Mat &b)	// a after b
{
	Mat r;
	for (size_t n = 0; n < 32; n++)
		r[n] = mat_times(a, b[n]);
	return r;
}

struct ShiftTable {
	uint32_t t[4][256];
	ShiftTable()
	{
		Mat bit;	// one zero bit through the register
		bit[0] = kPoly;
		for (size_t n = 1; n < 32; n++)
			bit[n] = 1u << (n - 1);
		Mat byte = bit;
		for (int i = 0; i < 3; i++)
			byte = mat_mul(byte, byte);	// 8 zero bits
		Mat op{}, pw = byte;
		for (size_t n = 0; n < 32; n++)
			op[n] = 1u << n;	// identity
		for (size_t k = kLane; k; k >>= 1, pw = mat_mul(pw, pw))
			if (k & 1)
				op = mat_mul(pw, op);
		for (uint32_t n = 0; n < 256; n++)
			for (int b = 0; b < 4; b++)
				t[b][n] = mat_times(op, n << (8 * b));
	}
	uint32_t shift(uint32_t c) const
	{
		return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
	}
};

const ShiftTable &lane_shift()
{
	static const ShiftTable table;
	return table;
}

} // namespace

__attribute__((target("sse4.2"))) uint32_t crc32c_hw(const void *data, size_t len, uint32_t crc)
{
	const auto *p = static_cast<const unsigned char *>(data);
	uint64_t c = crc ^ 0xFFFFFFFFu;
	while (len && (reinterpret_cast<uintptr_t>(p) & 7)) {
		c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
		len--;
	}
	if (len >= 3 * kLane) {
		const ShiftTable &sh = lane_shift();
		do {
			uint64_t c1 = 0, c2 = 0;
			for (size_t i = 0; i < kLane; i += 8) {
				uint64_t v0, v1, v2;
				memcpy(&v0, p + i, 8);
				memcpy(&v1, p + kLane + i, 8);
				memcpy(&v2, p + 2 * kLane + i, 8);
				c = _mm_crc32_u64(c, v0);
				c1 = _mm_crc32_u64(c1, v1);
				c2 = _mm_crc32_u64(c2, v2);
			}
			c = sh.shift(static_cast<uint32_t>(c)) ^ static_cast<uint32_t>(c1);
			c = sh.shift(static_cast<uint32_t>(c)) ^ static_cast<uint32_t>(c2);
			p += 3 * kLane;
			len -= 3 * kLane;
		} while (len >= 3 * kLane);
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
