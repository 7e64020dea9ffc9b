// proto.h codec. Every received field is checked before it is used.
#include <algorithm>
#include <cstring>

#include "slsvirt/crc32c.hpp"
#include "slsvirt/proto_codec.hpp"

namespace slsvirt::proto {
namespace {

template <typename T>
T load(std::span<const unsigned char> b, size_t off = 0)
{
	T v;
	memcpy(&v, b.data() + off, sizeof(T));
	return v;
}

template <typename T>
std::span<const unsigned char> as_bytes_of(const T &v)
{
	return {reinterpret_cast<const unsigned char *>(&v), sizeof(T)};
}

// Copies a NUL-terminated string field; fails if there is no NUL.
bool all_zero_bytes(const char *f, size_t n)
{
	return std::all_of(f, f + n, [](char c) { return c == 0; });
}

bool cstr_field(const char *f, size_t n, std::string &out)
{
	const void *z = memchr(f, '\0', n);
	if (!z)
		return false;
	out.assign(f, static_cast<const char *>(z));
	return true;
}

void put_str(char *dst, size_t n, const std::string &s)
{
	memset(dst, 0, n);
	memcpy(dst, s.data(), std::min(s.size(), n - 1));
}

bool zeros(const void *p, size_t n)
{
	const auto *b = static_cast<const unsigned char *>(p);
	return std::all_of(b, b + n, [](unsigned char c) { return c == 0; });
}

// Fixed payload size of each type (variable part after it, if any).
size_t fixed_size(uint16_t type)
{
	switch (type) {
	case SLS_MSG_HELLO: return sizeof(sls_msg_hello);
	case SLS_MSG_HELLO_ACK: return sizeof(sls_msg_hello_ack);
	case SLS_MSG_EPOCH: return sizeof(sls_msg_epoch);
	case SLS_MSG_EPOCH_ACK: return sizeof(sls_msg_epoch_ack);
	case SLS_MSG_RESTORE: return SLS_MSG_RESTORE_V1_LEN;
	case SLS_MSG_RESTORE_ACK: return sizeof(sls_msg_restore_ack);
	}
	return 0;
}

// Largest payload a type may carry.
uint64_t max_size(uint16_t type)
{
	switch (type) {
	case SLS_MSG_HELLO: return sizeof(sls_msg_hello) + SLS_MAX_RAM_BLOCKS * sizeof(sls_ram_block);
	case SLS_MSG_EPOCH: return SLS_PROTO_MAX_PAYLOAD;	// devstate + page list
	case SLS_MSG_RESTORE_ACK: return sizeof(sls_msg_restore_ack) + kMaxDevstate;
	case SLS_MSG_RESTORE: return sizeof(sls_msg_restore);
	default: return fixed_size(type);
	}
}

} // namespace

const char *type_name(uint16_t type)
{
	switch (type) {
	case SLS_MSG_HELLO: return "HELLO";
	case SLS_MSG_HELLO_ACK: return "HELLO_ACK";
	case SLS_MSG_EPOCH: return "EPOCH";
	case SLS_MSG_EPOCH_ACK: return "EPOCH_ACK";
	case SLS_MSG_RESTORE: return "RESTORE";
	case SLS_MSG_RESTORE_ACK: return "RESTORE_ACK";
	}
	return "unknown";
}

Result<Header> decode_header(std::span<const unsigned char> bytes, uint16_t version)
{
	if (bytes.size() < kHeaderSize)
		return make_error(-EPROTO, "message header truncated (%zu of %zu bytes)", bytes.size(), kHeaderSize);
	auto raw = load<sls_msg_hdr>(bytes);
	if (raw.magic != SLS_PROTO_MAGIC)
		return make_error(-EPROTO, "bad message magic 0x%08x", raw.magic);
	if (fixed_size(raw.type) == 0)
		return make_error(-EPROTO, "unknown message type %u", raw.type);
	if (version == 0 ? raw.version < 1 : raw.version != version)
		return make_error(-EPROTO, "%s: protocol version %u, expected %s%u", type_name(raw.type), raw.version,
				  version == 0 ? ">= " : "", version == 0 ? 1u : version);
	if (raw.length > SLS_PROTO_MAX_PAYLOAD || raw.length > max_size(raw.type))
		return make_error(-EMSGSIZE, "%s: payload length %u exceeds the maximum %llu", type_name(raw.type),
				  raw.length, static_cast<unsigned long long>(max_size(raw.type)));
	if (raw.length < fixed_size(raw.type))
		return make_error(-EPROTO, "%s: payload length %u shorter than its fixed part (%zu)",
				  type_name(raw.type), raw.length, fixed_size(raw.type));
	if (raw.type == SLS_MSG_HELLO && (raw.length - sizeof(sls_msg_hello)) % sizeof(sls_ram_block))
		return make_error(-EPROTO, "HELLO: payload length %u is not the fixed part + whole RAM blocks",
				  raw.length);
	if (raw.seq == 0)
		return make_error(-EPROTO, "%s: sequence number 0", type_name(raw.type));
	return Header{raw.version, raw.type, raw.length, raw.payload_crc, raw.seq};
}

Status check_payload(const Header &h, std::span<const unsigned char> payload)
{
	if (payload.size() != h.length)
		return make_error(-EPROTO, "%s: payload truncated (%zu of %u bytes)", type_name(h.type), payload.size(),
				  h.length);
	uint32_t crc = payload.empty() ? 0 : crc32c(payload.data(), payload.size());
	if (crc != h.payload_crc)
		return make_error(-EBADMSG, "%s: payload crc mismatch (header 0x%08x, computed 0x%08x)",
				  type_name(h.type), h.payload_crc, crc);
	return {};
}

Result<Hello> decode_hello(std::span<const unsigned char> p)
{
	if (p.size() < sizeof(sls_msg_hello))
		return make_error(-EPROTO, "HELLO truncated");
	auto m = load<sls_msg_hello>(p);
	Hello h;
	h.min_version = m.min_version;
	h.max_version = m.max_version;
	if (m.min_version == 0 || m.min_version > m.max_version)
		return make_error(-EPROTO, "HELLO: version range %u..%u is empty", m.min_version, m.max_version);
	if (!cstr_field(m.vm_name, sizeof(m.vm_name), h.vm_name))
		return make_error(-EINVAL, "HELLO: vm_name not NUL-terminated");
	SLS_TRY(check_vm_name(h.vm_name));
	if (m.page_size != SLS_PAGE_SIZE)
		return make_error(-EINVAL, "HELLO: page size %u, only %u is supported", m.page_size, SLS_PAGE_SIZE);
	if (m.nr_blocks < 1 || m.nr_blocks > SLS_MAX_RAM_BLOCKS)
		return make_error(-EINVAL, "HELLO: nr_blocks %u outside 1..%u", m.nr_blocks, SLS_MAX_RAM_BLOCKS);
	if (p.size() != sizeof(m) + m.nr_blocks * sizeof(sls_ram_block))
		return make_error(-EPROTO, "HELLO: %zu payload bytes do not hold exactly %u RAM blocks", p.size(),
				  m.nr_blocks);
	if (m.flags != 0 || !zeros(m.reserved, sizeof(m.reserved)))
		return make_error(-EINVAL, "HELLO: flags/reserved must be 0");
	if (m.staging_size == 0 || m.staging_size % SLS_PAGE_SIZE)
		return make_error(-EINVAL, "HELLO: staging_size %llu not a positive page multiple",
				  static_cast<unsigned long long>(m.staging_size));
	h.staging_size = m.staging_size;
	for (uint32_t i = 0; i < m.nr_blocks; i++) {
		auto b = load<sls_ram_block>(p, sizeof(m) + i * sizeof(sls_ram_block));
		StagingBlock sb;
		if (!cstr_field(b.idstr, sizeof(b.idstr), sb.idstr) || sb.idstr.empty())
			return make_error(-EINVAL, "HELLO: block %u idstr empty or not NUL-terminated", i);
		sb.length = b.length;
		sb.staging_offset = b.staging_offset;
		if (b.length == 0 || b.length % SLS_PAGE_SIZE || b.staging_offset % SLS_PAGE_SIZE)
			return make_error(-EINVAL, "HELLO: block '%s' length %llu / offset %llu not page aligned",
					  sb.idstr.c_str(), static_cast<unsigned long long>(b.length),
					  static_cast<unsigned long long>(b.staging_offset));
		if (b.staging_offset > m.staging_size || b.length > m.staging_size - b.staging_offset)
			return make_error(-EINVAL, "HELLO: block '%s' [%llu, +%llu) outside the %llu-byte staging area",
					  sb.idstr.c_str(), static_cast<unsigned long long>(b.staging_offset),
					  static_cast<unsigned long long>(b.length),
					  static_cast<unsigned long long>(m.staging_size));
		for (const auto &o : h.blocks) {
			if (o.idstr == sb.idstr)
				return make_error(-EINVAL, "HELLO: block '%s' listed twice", sb.idstr.c_str());
			if (sb.staging_offset < o.staging_offset + o.length &&
			    o.staging_offset < sb.staging_offset + sb.length)
				return make_error(-EINVAL, "HELLO: blocks '%s' and '%s' overlap in staging",
						  o.idstr.c_str(), sb.idstr.c_str());
		}
		h.blocks.push_back(std::move(sb));
	}
	return h;
}

Result<uint32_t> negotiate_version(const Hello &h)
{
	if (h.min_version > SLS_PROTO_VERSION || h.max_version < SLS_PROTO_VERSION)
		return make_error(-EPROTONOSUPPORT, "engine speaks protocol %u..%u, hostd speaks %u", h.min_version,
				  h.max_version, SLS_PROTO_VERSION);
	return static_cast<uint32_t>(SLS_PROTO_VERSION);
}

Result<HelloAck> decode_hello_ack(std::span<const unsigned char> p)
{
	if (p.size() != sizeof(sls_msg_hello_ack))
		return make_error(-EPROTO, "HELLO_ACK: %zu bytes", p.size());
	auto m = load<sls_msg_hello_ack>(p);
	HelloAck a{m.status, m.version, m.durable_epoch, {}};
	if (!cstr_field(m.message, sizeof(m.message), a.message))
		return make_error(-EPROTO, "HELLO_ACK: message not NUL-terminated");
	if (a.status > 0)
		return make_error(-EPROTO, "HELLO_ACK: positive status %d", a.status);
	return a;
}

Result<Epoch> decode_epoch(std::span<const unsigned char> p)
{
	if (p.size() < sizeof(sls_msg_epoch))
		return make_error(-EPROTO, "EPOCH truncated");
	auto m = load<sls_msg_epoch>(p);
	if (m.epoch == 0)
		return make_error(-EINVAL, "EPOCH: epoch 0 is reserved");
	if (m.flags & ~SLS_EPOCH_F_FULL)
		return make_error(-EINVAL, "EPOCH: unknown flags 0x%llx", static_cast<unsigned long long>(m.flags));
	if (m.parent_epoch >= m.epoch)
		return make_error(-EINVAL, "EPOCH: parent %llu not older than epoch %llu",
				  static_cast<unsigned long long>(m.parent_epoch),
				  static_cast<unsigned long long>(m.epoch));
	if ((m.flags & SLS_EPOCH_F_FULL) && m.nr_pages != 0)
		return make_error(-EINVAL, "EPOCH: full epoch %llu carries nr_pages %u (must be 0)",
				  static_cast<unsigned long long>(m.epoch), m.nr_pages);
	const uint64_t want = sizeof(m) + static_cast<uint64_t>(m.devstate_len) +
			      static_cast<uint64_t>(m.nr_pages) * sizeof(uint64_t);
	if (m.devstate_len > kMaxDevstate || p.size() != want)
		return make_error(-EPROTO,
				  "EPOCH: devstate_len %u + nr_pages %u (%llu bytes) does not match the %zu payload "
				  "bytes",
				  m.devstate_len, m.nr_pages, static_cast<unsigned long long>(want), p.size());
	Epoch e{m.epoch, m.parent_epoch, m.flags, m.capture_realtime_ns, m.stop_ns,
		p.subspan(sizeof(m), m.devstate_len)};
	e.pages.resize(m.nr_pages);
	if (m.nr_pages)
		memcpy(e.pages.data(), p.data() + sizeof(m) + m.devstate_len, m.nr_pages * sizeof(uint64_t));
	return e;
}

Result<std::vector<StagedPage>> resolve_epoch_pages(std::span<const uint64_t> pages,
						    const std::vector<StagingBlock> &blocks)
{
	// Blocks sorted by staging offset; the ascending page list walks them once.
	std::vector<uint32_t> order(blocks.size());
	for (uint32_t i = 0; i < order.size(); i++)
		order[i] = i;
	std::sort(order.begin(), order.end(),
		  [&](uint32_t a, uint32_t b) { return blocks[a].staging_offset < blocks[b].staging_offset; });
	std::vector<StagedPage> out;
	out.reserve(pages.size());
	size_t bi = 0;
	for (size_t i = 0; i < pages.size(); i++) {
		const uint64_t idx = pages[i];
		if (i > 0 && idx <= pages[i - 1])
			return make_error(-EINVAL, "EPOCH: page list entry %zu (%llu) is not greater than entry %zu (%llu)%s",
					  i, static_cast<unsigned long long>(idx), i - 1,
					  static_cast<unsigned long long>(pages[i - 1]),
					  idx == pages[i - 1] ? " (duplicate)" : " (unsorted)");
		if (idx > UINT64_MAX / SLS_PAGE_SIZE)
			return make_error(-EINVAL, "EPOCH: page list entry %zu (%llu) outside every RAM block", i,
					  static_cast<unsigned long long>(idx));
		const uint64_t off = idx * SLS_PAGE_SIZE;
		while (bi < order.size() && off >= blocks[order[bi]].staging_offset + blocks[order[bi]].length)
			bi++;
		if (bi == order.size() || off < blocks[order[bi]].staging_offset)
			return make_error(-EINVAL, "EPOCH: page list entry %zu (page %llu, staging offset 0x%llx) is "
					  "outside every RAM block", i, static_cast<unsigned long long>(idx),
					  static_cast<unsigned long long>(off));
		out.push_back({order[bi], off - blocks[order[bi]].staging_offset});
	}
	return out;
}

Result<EpochAck> decode_epoch_ack(std::span<const unsigned char> p)
{
	if (p.size() != sizeof(sls_msg_epoch_ack))
		return make_error(-EPROTO, "EPOCH_ACK: %zu bytes", p.size());
	auto m = load<sls_msg_epoch_ack>(p);
	EpochAck a{m.epoch, m.status, m.bytes_written, {}};
	if (!cstr_field(m.message, sizeof(m.message), a.message) || m.reserved)
		return make_error(-EPROTO, "EPOCH_ACK: bad message/reserved");
	return a;
}

Result<Restore> decode_restore(std::span<const unsigned char> p)
{
	if (p.size() != sizeof(sls_msg_restore) && p.size() != SLS_MSG_RESTORE_V1_LEN)
		return make_error(-EPROTO, "RESTORE: %zu bytes, expected %u or %zu", p.size(), SLS_MSG_RESTORE_V1_LEN,
				  sizeof(sls_msg_restore));
	sls_msg_restore m{};
	memcpy(&m, p.data(), p.size());
	if (m.flags & ~SLS_RESTORE_F_ALL)
		return make_error(-EINVAL, "RESTORE: unknown flags 0x%llx", static_cast<unsigned long long>(m.flags));
	Restore r{m.epoch, m.flags, {}};
	if (!cstr_field(m.source_vm, sizeof(m.source_vm), r.source_vm))
		return make_error(-EPROTO, "RESTORE: source_vm not NUL-terminated");
	if (m.flags & SLS_RESTORE_F_SOURCE) {
		if (Status s = check_vm_name(r.source_vm); !s.ok())
			return make_error(-EINVAL, "RESTORE: source_vm: %s", s.message().c_str());
	} else if (!all_zero_bytes(m.source_vm, sizeof(m.source_vm))) {
		return make_error(-EINVAL, "RESTORE: source_vm set without SLS_RESTORE_F_SOURCE");
	}
	return r;
}

Result<RestoreAck> decode_restore_ack(std::span<const unsigned char> p)
{
	if (p.size() < sizeof(sls_msg_restore_ack))
		return make_error(-EPROTO, "RESTORE_ACK truncated");
	auto m = load<sls_msg_restore_ack>(p);
	RestoreAck a{m.epoch, m.status, {}, {}};
	if (!cstr_field(m.message, sizeof(m.message), a.message))
		return make_error(-EPROTO, "RESTORE_ACK: message not NUL-terminated");
	if (p.size() != sizeof(m) + m.devstate_len)
		return make_error(-EPROTO, "RESTORE_ACK: devstate_len %u does not match %zu bytes", m.devstate_len,
				  p.size());
	a.devstate = p.subspan(sizeof(m));
	return a;
}

Bytes frame(uint16_t type, std::span<const unsigned char> payload, uint64_t seq, uint16_t version)
{
	sls_msg_hdr h{};
	h.magic = SLS_PROTO_MAGIC;
	h.version = version;
	h.type = type;
	h.length = static_cast<uint32_t>(payload.size());
	h.payload_crc = payload.empty() ? 0 : crc32c(payload.data(), payload.size());
	h.seq = seq;
	Bytes out(sizeof(h) + payload.size());
	memcpy(out.data(), &h, sizeof(h));
	if (!payload.empty())
		memcpy(out.data() + sizeof(h), payload.data(), payload.size());
	return out;
}

Bytes encode_hello(const Hello &h, uint64_t seq, uint16_t hdr_version)
{
	sls_msg_hello m{};
	m.min_version = h.min_version;
	m.max_version = h.max_version;
	put_str(m.vm_name, sizeof(m.vm_name), h.vm_name);
	m.page_size = SLS_PAGE_SIZE;
	m.nr_blocks = static_cast<uint32_t>(h.blocks.size());
	m.staging_size = h.staging_size;
	Bytes p(sizeof(m) + h.blocks.size() * sizeof(sls_ram_block));
	memcpy(p.data(), &m, sizeof(m));
	for (size_t i = 0; i < h.blocks.size(); i++) {
		sls_ram_block b{};
		put_str(b.idstr, sizeof(b.idstr), h.blocks[i].idstr);
		b.length = h.blocks[i].length;
		b.staging_offset = h.blocks[i].staging_offset;
		memcpy(p.data() + sizeof(m) + i * sizeof(b), &b, sizeof(b));
	}
	return frame(SLS_MSG_HELLO, p, seq, hdr_version);
}

Bytes encode_hello_ack(const HelloAck &a, uint64_t seq)
{
	sls_msg_hello_ack m{};
	m.status = a.status;
	m.version = a.version;
	m.durable_epoch = a.durable_epoch;
	put_str(m.message, sizeof(m.message), a.message);
	return frame(SLS_MSG_HELLO_ACK, as_bytes_of(m), seq);
}

Bytes encode_epoch(const Epoch &e, uint64_t seq)
{
	sls_msg_epoch m{};
	m.epoch = e.epoch;
	m.parent_epoch = e.parent_epoch;
	m.flags = e.flags;
	m.capture_realtime_ns = e.capture_realtime_ns;
	m.stop_ns = e.stop_ns;
	m.devstate_len = static_cast<uint32_t>(e.devstate.size());
	m.nr_pages = static_cast<uint32_t>(e.pages.size());
	const size_t list = e.pages.size() * sizeof(uint64_t);
	Bytes p(sizeof(m) + e.devstate.size() + list);
	memcpy(p.data(), &m, sizeof(m));
	if (!e.devstate.empty())
		memcpy(p.data() + sizeof(m), e.devstate.data(), e.devstate.size());
	if (list)
		memcpy(p.data() + sizeof(m) + e.devstate.size(), e.pages.data(), list);
	return frame(SLS_MSG_EPOCH, p, seq);
}

Bytes encode_epoch_ack(const EpochAck &a, uint64_t seq)
{
	sls_msg_epoch_ack m{};
	m.epoch = a.epoch;
	m.status = a.status;
	m.bytes_written = a.bytes_written;
	put_str(m.message, sizeof(m.message), a.message);
	return frame(SLS_MSG_EPOCH_ACK, as_bytes_of(m), seq);
}

Bytes encode_restore(const Restore &r, uint64_t seq)
{
	sls_msg_restore m{};
	m.epoch = r.epoch;
	m.flags = r.flags;
	put_str(m.source_vm, sizeof(m.source_vm), r.source_vm);
	if (!r.flags && r.source_vm.empty())
		return frame(SLS_MSG_RESTORE, std::span(reinterpret_cast<const unsigned char *>(&m), SLS_MSG_RESTORE_V1_LEN),
			     seq);
	return frame(SLS_MSG_RESTORE, as_bytes_of(m), seq);
}

Bytes encode_restore_ack(const RestoreAck &a, uint64_t seq)
{
	sls_msg_restore_ack m{};
	m.epoch = a.epoch;
	m.status = a.status;
	m.devstate_len = static_cast<uint32_t>(a.devstate.size());
	put_str(m.message, sizeof(m.message), a.message);
	Bytes p(sizeof(m) + a.devstate.size());
	memcpy(p.data(), &m, sizeof(m));
	if (!a.devstate.empty())
		memcpy(p.data() + sizeof(m), a.devstate.data(), a.devstate.size());
	return frame(SLS_MSG_RESTORE_ACK, p, seq);
}

} // namespace slsvirt::proto
