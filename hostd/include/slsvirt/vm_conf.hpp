// <store-root>/<vm>/vm.conf: how slsctl starts a VM's QEMU. A header line
// "SLSVCONF <version> <crc32c hex of the body>" then a JSON body.
#pragma once

#include <string>
#include <vector>

#include "slsvirt/result.hpp"

namespace slsvirt {

struct VmConf {
	std::string qemu;
	std::string kernel;
	std::string initrd;
	std::string append;
	std::string mem = "256M";
	unsigned smp = 1;
	std::vector<std::string> extra_args;
	unsigned period_ms = 0;	// checkpoint period given to the device (0 = on request only)
};

inline constexpr unsigned kVmConfVersion = 1;

std::string encode_vm_conf(const VmConf &c);
[[nodiscard]] Result<VmConf> decode_vm_conf(const std::string &text);
[[nodiscard]] Status save_vm_conf(const std::string &path, const VmConf &c);
[[nodiscard]] Result<VmConf> load_vm_conf(const std::string &path);

} // namespace slsvirt
