// proto.h codec: every validation rule, no sockets.
#include <gtest/gtest.h>

#include <cstring>

#include "slsvirt/crc32c.hpp"
#include "slsvirt/proto_codec.hpp"

using namespace slsvirt;
using namespace slsvirt::proto;

namespace {

Hello good_hello()
{
	Hello h;
	h.min_version = 1;
	h.max_version = 1;
	h.vm_name = "vm-1";
	h.staging_size = 16 * 4096;
	h.blocks = {{"pc.ram", 8 * 4096, 0}, {"pc.bios", 4 * 4096, 8 * 4096}};
	return h;
}

std::span<const unsigned char> payload_of(const Bytes &m) { return std::span(m).subspan(kHeaderSize); }

// Decodes a whole framed message as hostd does before HELLO.
Status decode_framed_hello(const Bytes &m)
{
	auto h = decode_header(m, 0);
	if (!h)
		return h.status();
	if (m.size() < kHeaderSize + h->length)
		return make_error(-EPROTO, "payload truncated");
	SLS_TRY(check_payload(*h, std::span(m).subspan(kHeaderSize, h->length)));
	return decode_hello(std::span(m).subspan(kHeaderSize, h->length)).status();
}

void set_u32(Bytes &m, size_t off, uint32_t v) { memcpy(m.data() + off, &v, 4); }
void set_u64(Bytes &m, size_t off, uint64_t v) { memcpy(m.data() + off, &v, 8); }
// Recomputes the payload crc after a test edited the payload.
void refresh_crc(Bytes &m)
{
	uint32_t c = crc32c(m.data() + kHeaderSize, m.size() - kHeaderSize);
	set_u32(m, offsetof(sls_msg_hdr, payload_crc), c);
}

} // namespace

TEST(Proto, HelloRoundTrip)
{
	Bytes m = encode_hello(good_hello(), 1);
	auto h = decode_header(m, 0);
	ASSERT_TRUE(h.ok()) << h.message();
	EXPECT_EQ(h->type, SLS_MSG_HELLO);
	EXPECT_EQ(h->seq, 1u);
	ASSERT_TRUE(check_payload(*h, payload_of(m)).ok());
	auto d = decode_hello(payload_of(m));
	ASSERT_TRUE(d.ok()) << d.message();
	EXPECT_EQ(d->vm_name, "vm-1");
	ASSERT_EQ(d->blocks.size(), 2u);
	EXPECT_EQ(d->blocks[1].idstr, "pc.bios");
	EXPECT_EQ(d->blocks[1].staging_offset, 8u * 4096);
	EXPECT_EQ(negotiate_version(*d).value(), 1u);
}

TEST(Proto, AckAndEpochRoundTrips)
{
	std::vector<unsigned char> dev(1000, 0x5a);
	Bytes e = encode_epoch({7, 6, SLS_EPOCH_F_FULL, 11, 22, dev}, 2);
	auto eh = decode_header(e, 1);
	ASSERT_TRUE(eh.ok());
	ASSERT_TRUE(check_payload(*eh, payload_of(e)).ok());
	auto ed = decode_epoch(payload_of(e));
	ASSERT_TRUE(ed.ok()) << ed.message();
	EXPECT_EQ(ed->epoch, 7u);
	EXPECT_EQ(ed->stop_ns, 22u);
	EXPECT_EQ(std::vector<unsigned char>(ed->devstate.begin(), ed->devstate.end()), dev);

	auto ha = decode_hello_ack(payload_of(encode_hello_ack({0, 1, 42, "ok"}, 1)));
	ASSERT_TRUE(ha.ok());
	EXPECT_EQ(ha->durable_epoch, 42u);
	EXPECT_EQ(ha->message, "ok");
	auto ea = decode_epoch_ack(payload_of(encode_epoch_ack({7, -5, 0, "boom"}, 2)));
	ASSERT_TRUE(ea.ok());
	EXPECT_EQ(ea->status, -5);
	EXPECT_EQ(ea->message, "boom");
	auto r = decode_restore(payload_of(encode_restore({3}, 3)));
	ASSERT_TRUE(r.ok());
	EXPECT_EQ(r->epoch, 3u);
	auto ra = decode_restore_ack(payload_of(encode_restore_ack({3, 0, "ok", dev}, 3)));
	ASSERT_TRUE(ra.ok());
	EXPECT_EQ(ra->devstate.size(), dev.size());
}

TEST(Proto, BadMagic)
{
	Bytes m = encode_hello(good_hello(), 1);
	m[0] ^= 1;
	auto h = decode_header(m, 0);
	ASSERT_FALSE(h.ok());
	EXPECT_NE(h.message().find("magic"), std::string::npos);
}

TEST(Proto, WrongVersion)
{
	Bytes m = encode_hello(good_hello(), 1, 0);	// header version 0
	EXPECT_FALSE(decode_header(m, 0).ok());
	Bytes e = encode_restore({1}, 2);
	set_u32(e, 4, 2u | (SLS_MSG_RESTORE << 16));	// version 2 after negotiating 1
	auto h = decode_header(e, 1);
	ASSERT_FALSE(h.ok());
	EXPECT_NE(h.message().find("version"), std::string::npos);
	// Version range without 1 cannot be negotiated.
	Hello hi = good_hello();
	hi.min_version = 2;
	hi.max_version = 3;
	auto d = decode_hello(payload_of(encode_hello(hi, 1)));
	ASSERT_TRUE(d.ok());
	EXPECT_EQ(negotiate_version(*d).code(), -EPROTONOSUPPORT);
	hi.min_version = 3;	// empty range
	hi.max_version = 2;
	EXPECT_FALSE(decode_hello(payload_of(encode_hello(hi, 1))).ok());
}

TEST(Proto, BadCrc)
{
	Bytes m = encode_hello(good_hello(), 1);
	m[kHeaderSize + 10] ^= 0x40;
	Status s = decode_framed_hello(m);
	ASSERT_FALSE(s.ok());
	EXPECT_NE(s.message().find("crc"), std::string::npos);
}

TEST(Proto, TruncatedHeaderAndPayload)
{
	Bytes m = encode_hello(good_hello(), 1);
	for (size_t n = 0; n < kHeaderSize; n++)
		EXPECT_FALSE(decode_header(std::span(m).first(n), 0).ok()) << n;
	auto h = decode_header(m, 0);
	ASSERT_TRUE(h.ok());
	for (size_t n = 0; n < h->length; n += 37)
		EXPECT_FALSE(check_payload(*h, std::span(m).subspan(kHeaderSize, n)).ok()) << n;
	// Decoders refuse short payloads on their own too.
	EXPECT_FALSE(decode_hello(std::span(m).subspan(kHeaderSize, 10)).ok());
	EXPECT_FALSE(decode_epoch(std::span(m).subspan(kHeaderSize, 10)).ok());
	EXPECT_FALSE(decode_restore(std::span(m).subspan(kHeaderSize, 15)).ok());
}

TEST(Proto, OversizedLength)
{
	Bytes e = encode_epoch({1, 0, SLS_EPOCH_F_FULL, 0, 0, {}}, 1);
	set_u32(e, offsetof(sls_msg_hdr, length), SLS_PROTO_MAX_PAYLOAD + 1);
	auto h = decode_header(e, 1);
	ASSERT_FALSE(h.ok());
	EXPECT_EQ(h.code(), -EMSGSIZE);
	// RESTORE has a fixed size: anything larger is refused before reading.
	Bytes r = encode_restore({1}, 1);
	set_u32(r, offsetof(sls_msg_hdr, length), 4096);
	EXPECT_EQ(decode_header(r, 1).code(), -EMSGSIZE);
	// HELLO longer than 64 blocks.
	Bytes hm = encode_hello(good_hello(), 1);
	set_u32(hm, offsetof(sls_msg_hdr, length), sizeof(sls_msg_hello) + 65 * sizeof(sls_ram_block));
	EXPECT_EQ(decode_header(hm, 0).code(), -EMSGSIZE);
	// devstate_len claiming more bytes than the payload holds.
	Bytes e2 = encode_epoch({1, 0, SLS_EPOCH_F_FULL, 0, 0, {}}, 1);
	set_u32(e2, kHeaderSize + offsetof(sls_msg_epoch, devstate_len), 100);
	refresh_crc(e2);
	EXPECT_FALSE(decode_epoch(payload_of(e2)).ok());
}

TEST(Proto, UnknownTypeAndSeqZero)
{
	Bytes r = encode_restore({1}, 1);
	set_u32(r, 4, 1u | (99u << 16));
	EXPECT_FALSE(decode_header(r, 1).ok());
	EXPECT_FALSE(decode_header(encode_restore({1}, 0), 1).ok());
}

TEST(Proto, NrBlocksOutOfRange)
{
	Hello h = good_hello();
	h.blocks.clear();
	EXPECT_FALSE(decode_hello(payload_of(encode_hello(h, 1))).ok());
	h = good_hello();
	h.staging_size = 70 * 4096;
	h.blocks.clear();
	for (int i = 0; i < 65; i++)
		h.blocks.push_back({"b" + std::to_string(i), 4096, static_cast<uint64_t>(i) * 4096});
	Bytes m = encode_hello(h, 1);
	EXPECT_FALSE(decode_header(m, 0).ok());	// longer than 64 blocks allow
	EXPECT_FALSE(decode_hello(payload_of(m)).ok());
	// nr_blocks field disagreeing with the payload size.
	Bytes g = encode_hello(good_hello(), 1);
	set_u32(g, kHeaderSize + offsetof(sls_msg_hello, nr_blocks), 3);
	refresh_crc(g);
	EXPECT_FALSE(decode_hello(payload_of(g)).ok());
}

TEST(Proto, BadBlocks)
{
	auto rejects = [](Hello h, const char *why) {
		auto d = decode_hello(payload_of(encode_hello(h, 1)));
		EXPECT_FALSE(d.ok()) << why;
		if (!d.ok()) {
			EXPECT_FALSE(d.message().empty());
		}
	};
	Hello h = good_hello();
	h.blocks[1].staging_offset = 4 * 4096;	// overlaps pc.ram
	rejects(h, "overlap");
	h = good_hello();
	h.blocks[1].staging_offset = 8 * 4096 + 100;
	rejects(h, "unaligned offset");
	h = good_hello();
	h.blocks[0].length = 4095;
	rejects(h, "unaligned length");
	h = good_hello();
	h.blocks[1].length = 9 * 4096;	// ends past staging_size
	rejects(h, "outside staging");
	h = good_hello();
	h.blocks[1].staging_offset = ~0ull & ~4095ull;	// overflow
	rejects(h, "offset overflow");
	h = good_hello();
	h.blocks[1].idstr = "pc.ram";
	rejects(h, "duplicate idstr");
	h = good_hello();
	h.blocks[0].length = 0;
	rejects(h, "empty block");
	h = good_hello();
	h.vm_name = ".hidden";
	rejects(h, "leading dot");
	h.vm_name = "a/b";
	rejects(h, "slash");
	h.vm_name = "";
	rejects(h, "empty name");
	h = good_hello();
	h.staging_size = 0;
	rejects(h, "zero staging");
	// Non-zero flags / reserved.
	Bytes m = encode_hello(good_hello(), 1);
	set_u64(m, kHeaderSize + offsetof(sls_msg_hello, flags), 1);
	refresh_crc(m);
	EXPECT_FALSE(decode_hello(payload_of(m)).ok());
	// vm_name without NUL.
	Bytes n = encode_hello(good_hello(), 1);
	memset(n.data() + kHeaderSize + offsetof(sls_msg_hello, vm_name), 'a', SLS_NAME_LEN);
	refresh_crc(n);
	EXPECT_FALSE(decode_hello(payload_of(n)).ok());
}

TEST(Proto, EpochFieldRules)
{
	EXPECT_FALSE(decode_epoch(payload_of(encode_epoch({0, 0, SLS_EPOCH_F_FULL, 0, 0, {}}, 1))).ok());
	EXPECT_FALSE(decode_epoch(payload_of(encode_epoch({5, 5, SLS_EPOCH_F_FULL, 0, 0, {}}, 1))).ok());
	EXPECT_FALSE(decode_epoch(payload_of(encode_epoch({5, 0, 0x10, 0, 0, {}}, 1))).ok());
	Bytes r = encode_restore({1}, 1);
	set_u64(r, kHeaderSize + offsetof(sls_msg_restore, flags), 2);
	refresh_crc(r);
	EXPECT_FALSE(decode_restore(payload_of(r)).ok());
}

TEST(Proto, DeltaEpochPageListRoundTrip)
{
	std::vector<unsigned char> dev = {1, 2, 3, 4, 5};	// odd length: the list is unaligned
	Epoch e{9, 8, 0, 11, 22, dev, {0, 1, 7, 100}};
	Bytes m = encode_epoch(e, 3);
	auto h = decode_header(m, 1);
	ASSERT_TRUE(h.ok()) << h.message();
	ASSERT_TRUE(check_payload(*h, payload_of(m)).ok());
	auto d = decode_epoch(payload_of(m));
	ASSERT_TRUE(d.ok()) << d.message();
	EXPECT_EQ(d->pages, e.pages);
	EXPECT_EQ(std::vector<unsigned char>(d->devstate.begin(), d->devstate.end()), dev);
	EXPECT_EQ(d->flags, 0u);
	// A full epoch with nr_pages == 0 (what the existing engine sends).
	auto f = decode_epoch(payload_of(encode_epoch({9, 8, SLS_EPOCH_F_FULL, 0, 0, dev}, 1)));
	ASSERT_TRUE(f.ok());
	EXPECT_TRUE(f->pages.empty());
}

TEST(Proto, DeltaEpochCountLengthMismatchAndFullWithPages)
{
	std::vector<unsigned char> dev(10, 7);
	Bytes m = encode_epoch({9, 8, 0, 0, 0, dev, {1, 2, 3}}, 1);
	// nr_pages says 4 but 3 are there; says 2 but 3 are there.
	for (uint32_t n : {4u, 2u, 0u, 0xffffffffu}) {
		Bytes x = m;
		set_u32(x, kHeaderSize + offsetof(sls_msg_epoch, nr_pages), n);
		refresh_crc(x);
		auto d = decode_epoch(payload_of(x));
		ASSERT_FALSE(d.ok()) << n;
		EXPECT_EQ(d.code(), -EPROTO) << n;
	}
	// Trailing half entry.
	Bytes y = m;
	y.resize(y.size() + 4);
	set_u32(y, offsetof(sls_msg_hdr, length), static_cast<uint32_t>(y.size() - kHeaderSize));
	refresh_crc(y);
	EXPECT_FALSE(decode_epoch(payload_of(y)).ok());
	// A full epoch must not carry pages.
	Bytes f = encode_epoch({9, 8, SLS_EPOCH_F_FULL, 0, 0, dev, {1}}, 1);
	auto d = decode_epoch(payload_of(f));
	ASSERT_FALSE(d.ok());
	EXPECT_EQ(d.code(), -EINVAL);
	// The header length limit admits a large page list (not only devstate).
	Bytes big = encode_epoch({9, 8, 0, 0, 0, {}, std::vector<uint64_t>(100000)}, 1);
	EXPECT_TRUE(decode_header(big, 1).ok());
}

TEST(Proto, ResolveEpochPagesOrderAndBounds)
{
	// pc.bios at staging 0 (4 pages), pc.ram at staging page 8 (16 pages): listed out of order.
	std::vector<StagingBlock> blocks = {{"pc.ram", 16 * 4096, 8 * 4096}, {"pc.bios", 4 * 4096, 0}};
	auto ok = resolve_epoch_pages(std::vector<uint64_t>{0, 3, 8, 9, 23}, blocks);
	ASSERT_TRUE(ok.ok()) << ok.message();
	ASSERT_EQ(ok->size(), 5u);
	EXPECT_EQ((*ok)[0].block, 1u);
	EXPECT_EQ((*ok)[1].offset, 3u * 4096);
	EXPECT_EQ((*ok)[2].block, 0u);
	EXPECT_EQ((*ok)[2].offset, 0u);
	EXPECT_EQ((*ok)[4].offset, 15u * 4096);
	EXPECT_TRUE(resolve_epoch_pages({}, blocks).ok());
	struct Bad {
		std::vector<uint64_t> pages;
		const char *why;
	};
	for (const Bad &b : std::vector<Bad>{{{3, 1}, "unsorted"},
					     {{8, 8}, "duplicate"},
					     {{4}, "outside"},	// the gap between the blocks
					     {{0, 24}, "outside"},	// past the last block
					     {{~0ull}, "outside"},
					     {{1ull << 52}, "outside"}}) {
		auto r = resolve_epoch_pages(b.pages, blocks);
		ASSERT_FALSE(r.ok()) << b.why;
		EXPECT_EQ(r.code(), -EINVAL);
		EXPECT_NE(r.message().find(b.why), std::string::npos) << r.message();
	}
}
