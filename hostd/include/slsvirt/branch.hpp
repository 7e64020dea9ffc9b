// Branches: a VM started from another VM's epoch (a clone) and the pins
// that keep that epoch in the parent's store until the child has one of
// its own; rewinds: a VM restored to an older epoch of its own store
// (docs/store-format.md "Branches and pins", "Rewinds").
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

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

// A restore of epoch `to` while `newest` (>= to) was the VM's newest valid
// epoch: the VM's timeline is from then on `to` and what it was written
// after (its ancestry), then the epochs written after `newest`; epochs in
// (to, newest] are another timeline, which a restore without --epoch never
// picks. Recorded for a restore of anything but the current timeline's
// newest epoch (to == newest: an abandoned newest epoch restored again).
struct Rewind {
	uint64_t to = 0;
	uint64_t newest = 0;
};

// <vm_dir>/rewinds: every rewind, oldest first (appended, written atomically).
[[nodiscard]] Status add_rewind(const std::string &vm_dir, const Rewind &r);
// Empty without a rewinds file.
[[nodiscard]] Result<std::vector<Rewind>> load_rewinds(const std::string &vm_dir);
// nullptr if `epoch` is on the VM's current timeline after `rewinds`, else
// the rewind that left it on another one.
const Rewind *abandoned_by(const std::vector<Rewind> &rewinds, uint64_t epoch);

} // namespace slsvirt
