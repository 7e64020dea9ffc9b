// Encoder/decoder + validation for include/slsvirt/proto.h messages; pure
// functions, no sockets, so every rule is unit-testable.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "slsvirt/proto.h"
#include "slsvirt/result.hpp"
#include "slsvirt/store.hpp"

namespace slsvirt::proto {

using Bytes = std::vector<unsigned char>;

inline constexpr size_t kHeaderSize = sizeof(sls_msg_hdr);
static_assert(kHeaderSize == 24);
static_assert(sizeof(sls_ram_block) == 272);
// Largest device state that fits in both an EPOCH and a RESTORE_ACK.
inline constexpr uint32_t kMaxDevstate = SLS_PROTO_MAX_PAYLOAD - sizeof(sls_msg_restore_ack);

struct Header {
	uint16_t version;
	uint16_t type;
	uint32_t length;
	uint32_t payload_crc;
	uint64_t seq;
};

// Checks magic, type, version and length bounds of a received header
// (before any payload is read). `version`: 0 = before HELLO (any >= 1),
// else the negotiated version which every later message must carry.
[[nodiscard]] Result<Header> decode_header(std::span<const unsigned char> bytes, uint16_t version);
// Checks payload length and crc against the header.
[[nodiscard]] Status check_payload(const Header &h, std::span<const unsigned char> payload);

struct StagingBlock {
	std::string idstr;
	uint64_t length;
	uint64_t staging_offset;
};

struct Hello {
	uint32_t min_version, max_version;
	std::string vm_name;
	uint64_t staging_size;
	std::vector<StagingBlock> blocks;
};

struct HelloAck {
	int32_t status;
	uint32_t version;
	uint64_t durable_epoch;
	std::string message;
};

struct Epoch {
	uint64_t epoch, parent_epoch, flags, capture_realtime_ns, stop_ns;
	std::span<const unsigned char> devstate;	// points into the payload
	// Delta epochs: staging page indices (staging offset / SLS_PAGE_SIZE),
	// strictly ascending. Full epochs: empty.
	std::vector<uint64_t> pages = {};
};

// A staged page of a delta epoch, resolved against the HELLO layout.
struct StagedPage {
	uint32_t block;		// index into Hello::blocks
	uint64_t offset;	// byte offset inside that block
};

struct EpochAck {
	uint64_t epoch;
	int32_t status;
	uint64_t bytes_written;
	std::string message;
};

struct Restore {
	uint64_t epoch;
	uint64_t flags = 0;		// SLS_RESTORE_F_*
	std::string source_vm;		// F_SOURCE: the store to read
};

struct RestoreAck {
	uint64_t epoch;
	int32_t status;
	std::string message;
	std::span<const unsigned char> devstate;
};

// Decoders validate every field (see proto.h and docs); payload = bytes
// after the header, already crc-checked by check_payload().
[[nodiscard]] Result<Hello> decode_hello(std::span<const unsigned char> payload);
[[nodiscard]] Result<HelloAck> decode_hello_ack(std::span<const unsigned char> payload);
[[nodiscard]] Result<Epoch> decode_epoch(std::span<const unsigned char> payload);
[[nodiscard]] Result<EpochAck> decode_epoch_ack(std::span<const unsigned char> payload);
[[nodiscard]] Result<Restore> decode_restore(std::span<const unsigned char> payload);
[[nodiscard]] Result<RestoreAck> decode_restore_ack(std::span<const unsigned char> payload);

// Resolves a delta epoch's page list against the HELLO layout: every index
// must lie inside a RAM block; the list must be strictly ascending (which
// also excludes duplicates). -EINVAL with a message naming the bad entry.
[[nodiscard]] Result<std::vector<StagedPage>> resolve_epoch_pages(std::span<const uint64_t> pages,
								  const std::vector<StagingBlock> &blocks);

// Version both sides speak, or -EPROTONOSUPPORT.
[[nodiscard]] Result<uint32_t> negotiate_version(const Hello &h);

// Encoders return header + payload, crc filled in.
Bytes encode_hello(const Hello &h, uint64_t seq, uint16_t hdr_version = SLS_PROTO_VERSION);
Bytes encode_hello_ack(const HelloAck &a, uint64_t seq);
Bytes encode_epoch(const Epoch &e, uint64_t seq);
Bytes encode_epoch_ack(const EpochAck &a, uint64_t seq);
Bytes encode_restore(const Restore &r, uint64_t seq);
Bytes encode_restore_ack(const RestoreAck &a, uint64_t seq);
// Generic framing (for tests that build malformed messages).
Bytes frame(uint16_t type, std::span<const unsigned char> payload, uint64_t seq,
	    uint16_t version = SLS_PROTO_VERSION);

const char *type_name(uint16_t type);

} // namespace slsvirt::proto
