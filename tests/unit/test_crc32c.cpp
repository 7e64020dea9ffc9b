#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "slsvirt/crc32c.hpp"
#include "test_util.hpp"

using namespace slsvirt;

TEST(Crc32c, KnownVectors)
{
	EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
	EXPECT_EQ(crc32c_portable("123456789", 9), 0xE3069283u);
	EXPECT_EQ(crc32c(nullptr, 0), 0u);
	unsigned char zeros[32] = {};
	EXPECT_EQ(crc32c(zeros, 32), 0x8A9136AAu);	// RFC 3720 B.4
	unsigned char ones[32];
	memset(ones, 0xff, sizeof(ones));
	EXPECT_EQ(crc32c(ones, 32), 0x62A8AB43u);
}

TEST(Crc32c, HardwareMatchesPortableAndChains)
{
	std::vector<unsigned char> buf(10000);
	test::fill_random(buf.data(), buf.size(), 7);
	// Lengths around the 3-lane stripe (3 x 1360 bytes) and its multiples.
	for (size_t len : {0ul, 1ul, 7ul, 8ul, 9ul, 63ul, 4079ul, 4080ul, 4081ul, 4096ul, 8160ul, 8167ul, 9990ul}) {
		for (size_t off : {0ul, 1ul, 3ul}) {
			uint32_t p = crc32c_portable(buf.data() + off, len);
			EXPECT_EQ(crc32c(buf.data() + off, len), p) << len << " " << off;
			if (crc32c_hw_available()) {
				EXPECT_EQ(crc32c_hw(buf.data() + off, len), p) << len << " " << off;
			}
		}
	}
	uint32_t whole = crc32c(buf.data(), buf.size());
	uint32_t part = crc32c(buf.data(), 1234);
	EXPECT_EQ(crc32c(buf.data() + 1234, buf.size() - 1234, part), whole);
	uint32_t ppart = crc32c_portable(buf.data(), 1234);
	EXPECT_EQ(crc32c_portable(buf.data() + 1234, buf.size() - 1234, ppart), whole);
}
