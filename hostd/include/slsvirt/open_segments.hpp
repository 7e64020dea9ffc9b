// Segment files that a lazily restored VM reads while it runs.
//
// A lazy restore hands the epoch's chain segment files (fds) to QEMU, which
// reads pages from them whenever the guest first touches one, for as long
// as the VM runs. Retiring such a file as a spare would let a later epoch
// overwrite the pages under it (QEMU would catch that by the page crcs and
// stop). So Store::retire() deletes a held file instead (its bytes stay
// readable through the open fds) and never recycles it. Held by inode, for
// as long as the QEMU that reads it lives (by its pid, across reconnects);
// a restarted slsvirtd adopts the holds from /proc before it serves anyone.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <mutex>
#include <string>

namespace slsvirt::open_segments {

// Serialises hold() against Store::retire()'s check-zero-rename: a file
// is either held before retire looks, or retired (header zeroed) before
// the holder checks its header.
std::mutex &lock();
// Caller holds lock().
void hold(uint64_t owner, const struct stat &st);
bool held(const struct stat &st);
// Drops every file `owner` holds (takes lock() itself).
void release(uint64_t owner);
// Number of files held (tests).
size_t count();
// Holds, for each other process, every file it has open under
// store_root/*/epochs/ (what a lazily restored QEMU got from an earlier
// slsvirtd), owner = its pid. Run by a starting slsvirtd before it serves
// any connection, so that no compaction recycles a file a running VM still
// reads. Returns the number of files held.
size_t adopt(const std::string &store_root);

} // namespace slsvirt::open_segments
