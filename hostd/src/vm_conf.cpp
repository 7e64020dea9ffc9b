#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "slsvirt/crc32c.hpp"
#include "slsvirt/fd.hpp"
#include "slsvirt/vm_conf.hpp"

namespace slsvirt {

std::string encode_vm_conf(const VmConf &c)
{
	nlohmann::json j = {{"qemu", c.qemu},	  {"kernel", c.kernel}, {"initrd", c.initrd},
			    {"append", c.append}, {"mem", c.mem},	{"smp", c.smp},
			    {"period_ms", c.period_ms}, {"extra_args", c.extra_args}};
	std::string body = j.dump(2) + "\n";
	return strf("SLSVCONF %u %08x\n", kVmConfVersion, crc32c(body.data(), body.size())) + body;
}

Result<VmConf> decode_vm_conf(const std::string &text)
{
	size_t nl = text.find('\n');
	if (nl == std::string::npos || text.compare(0, 9, "SLSVCONF ") != 0)
		return make_error(-EBADMSG, "not a slsvirt VM config (bad magic)");
	unsigned version = 0, crc = 0;
	char tail = 0;
	std::string first = text.substr(0, nl);
	if (sscanf(first.c_str(), "SLSVCONF %u %8x%c", &version, &crc, &tail) != 2)
		return make_error(-EBADMSG, "VM config: malformed header line '%s'", first.c_str());
	if (version != kVmConfVersion)
		return make_error(-EBADMSG, "VM config version %u, this build reads %u", version, kVmConfVersion);
	std::string body = text.substr(nl + 1);
	uint32_t got = crc32c(body.data(), body.size());
	if (got != crc)
		return make_error(-EBADMSG, "VM config crc mismatch (stored %08x, computed %08x)", crc, got);
	auto j = nlohmann::json::parse(body, nullptr, false);
	if (j.is_discarded() || !j.is_object())
		return make_error(-EBADMSG, "VM config: body is not a JSON object");
	VmConf c;
	try {
		c.qemu = j.at("qemu").get<std::string>();
		c.kernel = j.at("kernel").get<std::string>();
		c.initrd = j.at("initrd").get<std::string>();
		c.append = j.at("append").get<std::string>();
		c.mem = j.at("mem").get<std::string>();
		c.smp = j.at("smp").get<unsigned>();
		c.extra_args = j.at("extra_args").get<std::vector<std::string>>();
		// Added with continuous checkpointing; older configs lack it (= 0).
		if (j.contains("period_ms"))
			c.period_ms = j.at("period_ms").get<unsigned>();
	} catch (const nlohmann::json::exception &e) {
		return make_error(-EBADMSG, "VM config: %s", e.what());
	}
	return c;
}

Status save_vm_conf(const std::string &path, const VmConf &c)
{
	return write_file_atomic(path, encode_vm_conf(c), 0600);
}

Result<VmConf> load_vm_conf(const std::string &path)
{
	auto text = read_small_file(path, 1 << 20);
	if (!text)
		return text.error();
	auto c = decode_vm_conf(*text);
	if (!c)
		return make_error(c.code(), "%s: %s", path.c_str(), c.message().c_str());
	return c;
}

} // namespace slsvirt
