// Branches: a VM started from another VM's epoch (a clone) and the pins
// that keep that epoch in the parent's store until the child has one of
// its own (docs/store-format.md "Branches and pins").
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "slsvirt/result.hpp"

namespace slsvirt {

struct Branch {
	std::string parent_vm;
	uint64_t parent_epoch = 0;
};

// <vm_dir>/branch: where the VM came from (written once, at clone time).
[[nodiscard]] Status save_branch(const std::string &vm_dir, const Branch &b);
// std::nullopt: the VM is no clone (no branch file).
[[nodiscard]] Result<std::optional<Branch>> load_branch(const std::string &vm_dir);

// <parent_vm_dir>/pins/<child>: epoch the child needs until its own store
// has a durable epoch. Retention keeps a pinned epoch and its chain.
[[nodiscard]] Status add_pin(const std::string &parent_vm_dir, const std::string &child, uint64_t epoch);
[[nodiscard]] Status remove_pin(const std::string &parent_vm_dir, const std::string &child);
// child -> epoch. A pin file that does not verify is reported with epoch
// UINT64_MAX, which keeps every epoch (never delete on doubt).
std::map<std::string, uint64_t> list_pins(const std::string &vm_dir);
// The pinned epochs themselves (plan_retention's `pinned`).
std::set<uint64_t> pinned_epochs(const std::string &vm_dir);

} // namespace slsvirt
