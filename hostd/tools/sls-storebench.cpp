// sls-storebench: the real store writer under a synthetic epoch stream.
// One FULL epoch of --ram-mib, then --epochs delta epochs of --dirty-mib
// scattered pages each (paced at --rate per second, or as fast as possible),
// with the daemon's background retention/compaction; prints one JSON object
// with epochs/s, MiB/s and commit latency percentiles.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "slsvirt/compactor.hpp"
#include "slsvirt/log.hpp"
#include "slsvirt/store.hpp"
#include "slsvirt/uring.hpp"

using namespace slsvirt;

namespace {

uint64_t mono_ns()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

double pct(std::vector<uint64_t> v, double p)
{
	if (v.empty())
		return 0;
	std::sort(v.begin(), v.end());
	size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
	return static_cast<double>(v[std::min(i, v.size() - 1)]) / 1e6;
}

int usage()
{
	fprintf(stderr,
		"usage: sls-storebench --dir D [--epochs K] [--dirty-mib D] [--ram-mib R] [--rate HZ]\n"
		"                      [--direct-io] [--retain N] [--compact-min N] [--compact-bytes-pct P]\n"
		"                      [--no-merge]\n"
		"                      [--zero-pct P] [--spare-files N] [--keep]\n");
	return 2;
}

} // namespace

int main(int argc, char **argv)
{
	std::string dir;
	unsigned epochs = 500, retain = kDefaultRetain, compact_min = kDefaultCompactMin, compact_pct = 100;
	unsigned spare_files = kDefaultSpareFiles;
	double dirty_mib = 1, ram_mib = 256, rate = 0, zero_pct = 0;
	bool direct = false, keep = false, merge = true;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		auto val = [&]() -> const char * { return i + 1 < argc ? argv[++i] : nullptr; };
		const char *v = nullptr;
		if (a == "--dir" && (v = val()))
			dir = v;
		else if (a == "--epochs" && (v = val()))
			epochs = static_cast<unsigned>(strtoul(v, nullptr, 10));
		else if (a == "--dirty-mib" && (v = val()))
			dirty_mib = strtod(v, nullptr);
		else if (a == "--ram-mib" && (v = val()))
			ram_mib = strtod(v, nullptr);
		else if (a == "--rate" && (v = val()))
			rate = strtod(v, nullptr);
		else if (a == "--retain" && (v = val()))
			retain = static_cast<unsigned>(strtoul(v, nullptr, 10));
		else if (a == "--compact-min" && (v = val()))
			compact_min = static_cast<unsigned>(strtoul(v, nullptr, 10));
		else if (a == "--compact-bytes-pct" && (v = val()))
			compact_pct = static_cast<unsigned>(strtoul(v, nullptr, 10));
		else if (a == "--spare-files" && (v = val()))
			spare_files = static_cast<unsigned>(strtoul(v, nullptr, 10));
		else if (a == "--zero-pct" && (v = val()))
			zero_pct = strtod(v, nullptr);
		else if (a == "--direct-io")
			direct = true;
		else if (a == "--no-merge")
			merge = false;
		else if (a == "--keep")
			keep = true;
		else
			return usage();
	}
	if (dir.empty() || ram_mib <= 0 || dirty_mib < 0 || dirty_mib > ram_mib)
		return usage();
	log_set_level(LogLevel::warn);
	const uint64_t ram_bytes = static_cast<uint64_t>(ram_mib * (1 << 20)) / 4096 * 4096;
	const uint64_t npages = ram_bytes / 4096;
	const uint64_t dirty_pages = static_cast<uint64_t>(dirty_mib * 256);
	unsigned char *ram = static_cast<unsigned char *>(std::aligned_alloc(4096, ram_bytes));
	if (!ram)
		return 1;
	std::mt19937_64 rng(42);
	for (uint64_t i = 0; i < ram_bytes / 8; i++)
		reinterpret_cast<uint64_t *>(ram)[i] = rng();
	std::vector<RamBlockMem> blocks = {{"pc.ram", ram_bytes, ram}};

	auto st = Store::open(dir, "bench", true);
	if (!st) {
		fprintf(stderr, "sls-storebench: %s\n", st.message().c_str());
		return 1;
	}
	st->set_direct_io(direct);
	st->set_spare_limits(spare_files, kDefaultSpareBytes);
	if (auto rec = st->recover(); !rec) {
		fprintf(stderr, "sls-storebench: %s\n", rec.message().c_str());
		return 1;
	}
	auto ring = Uring::create(256);
	if (!ring) {
		fprintf(stderr, "sls-storebench: %s\n", ring.message().c_str());
		return 1;
	}
	Compactor comp(*st, RetentionPolicy{retain, compact_min, compact_pct, merge}, FaultPlan(), 200, "storebench");
	std::vector<unsigned char> dev(64 << 10, 0x5a);

	const uint64_t tf = mono_ns();
	auto full = st->write_epoch({1, 0, 1, 0, 0}, blocks, dev, FaultPlan(), &*ring);
	if (!full) {
		fprintf(stderr, "sls-storebench: full epoch: %s\n", full.message().c_str());
		return 1;
	}
	const double full_ms = static_cast<double>(mono_ns() - tf) / 1e6;

	std::vector<uint64_t> lat, lat_new, lat_made, lat_retired;
	uint64_t data_bytes = 0, file_bytes = 0, late = 0, zero_entries = 0, reused = 0;
	std::vector<PageRef> pages;
	std::vector<uint64_t> idx(npages);
	for (uint64_t i = 0; i < npages; i++)
		idx[i] = i;
	const uint64_t period_ns = rate > 0 ? static_cast<uint64_t>(1e9 / rate) : 0;
	const uint64_t t0 = mono_ns();
	uint64_t next = t0;
	for (unsigned k = 0; k < epochs; k++) {
		const uint64_t e = k + 2;
		// A scattered dirty set: partial Fisher-Yates, then ascending.
		for (uint64_t i = 0; i < dirty_pages; i++)
			std::swap(idx[i], idx[i + rng() % (npages - i)]);
		std::vector<uint64_t> chosen(idx.begin(), idx.begin() + static_cast<long>(dirty_pages));
		std::sort(chosen.begin(), chosen.end());
		pages.clear();
		// The listed pages keep their (random) contents unless made zero:
		// the writer reads and checksums every listed page either way, and
		// storing into 2048 random pages here costs this VM ~1.5 us each
		// (TLB misses), which is the guest's work, not the store's.
		for (uint64_t p : chosen) {
			if (zero_pct > 0 && static_cast<double>(rng() % 10000) < zero_pct * 100)
				memset(ram + p * 4096, 0, 4096);
			pages.push_back({0, p * 4096});
		}
		if (period_ns) {
			uint64_t now = mono_ns();
			if (now < next) {
				struct timespec ts = {static_cast<time_t>((next - now) / 1000000000ull),
						      static_cast<long>((next - now) % 1000000000ull)};
				nanosleep(&ts, nullptr);
			} else if (now > next + period_ns) {
				late++;	// a whole period behind: the writer cannot keep the rate
				next = now;
			}
			next += period_ns;
		}
		const uint64_t a = mono_ns();
		auto r = st->write_delta_epoch({e, e - 1, 0, 0, 0}, blocks, pages, dev, FaultPlan(), &*ring);
		const uint64_t b = mono_ns();
		if (!r) {
			fprintf(stderr, "sls-storebench: epoch %llu: %s\n", static_cast<unsigned long long>(e),
				r.message().c_str());
			return 1;
		}
		lat.push_back(b - a);
		// Where it went: a new file, a spare made ahead (fallocated: the
		// first write converts extents), or a retired segment (a pure overwrite).
		(!r->reused_spare ? lat_new : r->written_path.find("/spare-new-") != std::string::npos ? lat_made
													 : lat_retired)
			.push_back(b - a);
		data_bytes += r->data_pages * 4096;
		file_bytes += r->file_bytes;
		reused += r->reused_spare;
		zero_entries += r->zero_pages;
		comp.kick();	// after the "ack", as slsvirtd does
	}
	const double secs = static_cast<double>(mono_ns() - t0) / 1e9;
	double sum_ms = 0;
	for (uint64_t l : lat)
		sum_ms += static_cast<double>(l) / 1e6;
	comp.wait_idle();
	printf("{\"tool\":\"sls-storebench\",\"epochs\":%u,\"dirty_mib\":%.2f,\"ram_mib\":%.0f,\"rate\":%.1f,"
	       "\"direct_io\":%s,\"epochs_per_s\":%.1f,\"data_mib_s\":%.1f,\"file_mib_s\":%.1f,"
	       "\"write_mib_s_while_writing\":%.1f,\"commit_ms_p50\":%.3f,\"commit_ms_p99\":%.3f,"
	       "\"commit_ms_max\":%.3f,\"commit_ms_mean\":%.3f,\"late_ticks\":%llu,\"zero_entries\":%llu,"
	       "\"full_epoch_ms\":%.1f,\"full_epoch_mib\":%.1f,\"compaction_passes\":%llu,\"bases_written\":%llu,\"merges_written\":%llu,"
	       "\"compaction_max_pass_ms\":%.1f,\"segments_removed\":%llu,\"epochs_over_spares\":%llu,\"spares_made\":%llu,"
	       "\"by_target\":{\"new_file\":[%zu,%.3f,%.3f],\"made_spare\":[%zu,%.3f,%.3f],"
	       "\"retired_segment\":[%zu,%.3f,%.3f]}}\n",
	       epochs, dirty_mib, ram_mib, rate, full->direct_io ? "true" : "false", epochs / secs,
	       static_cast<double>(data_bytes) / (1 << 20) / secs, static_cast<double>(file_bytes) / (1 << 20) / secs,
	       static_cast<double>(file_bytes) / (1 << 20) / (sum_ms / 1e3), pct(lat, 50), pct(lat, 99), pct(lat, 100),
	       sum_ms / static_cast<double>(lat.empty() ? 1 : lat.size()), static_cast<unsigned long long>(late),
	       static_cast<unsigned long long>(zero_entries), full_ms,
	       static_cast<double>(full->file_bytes) / (1 << 20), static_cast<unsigned long long>(comp.passes()),
	       static_cast<unsigned long long>(comp.bases_written()),
	       static_cast<unsigned long long>(comp.merges_written()), static_cast<double>(comp.max_pass_ns()) / 1e6,
	       static_cast<unsigned long long>(comp.segments_removed()), static_cast<unsigned long long>(reused),
	       static_cast<unsigned long long>(comp.spares_made()), lat_new.size(), pct(lat_new, 50), pct(lat_new, 99),
	       lat_made.size(), pct(lat_made, 50), pct(lat_made, 99), lat_retired.size(), pct(lat_retired, 50),
	       pct(lat_retired, 99));
	if (!keep) {
		auto list = st->list(ScanDepth::structure);
		if (list)
			for (const auto &s : *list)
				unlink(s.path.c_str());
		for (const auto &sp : st->spare_files())
			unlink(sp.first.c_str());
	}
	std::free(ram);
	return 0;
}
