// slsvirtd's core: the listening socket and one thread (and io_uring) per
// engine connection. Usable in-process (tests) and from slsvirtd's main().
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "slsvirt/fault.hpp"
#include "slsvirt/fd.hpp"
#include "slsvirt/result.hpp"
#include "slsvirt/store.hpp"

namespace slsvirt {

struct ServerConfig {
	std::string socket_path;
	std::string store_root;
	unsigned retain = 8;		// keep at least this many restorable epochs per VM
	unsigned compact_min = 64;	// see RetentionPolicy
	unsigned compact_bytes_pct = 100;
	bool compact_merge = true;	// RetentionPolicy::merge
	unsigned compact_interval_ms = 200;	// a VM's compactor looks at most this often
	bool direct_io = true;		// O_DIRECT for segment writes where supported (measured: faster)
	unsigned spare_files = kDefaultSpareFiles;	// spare pool bounds per VM (Store::set_spare_limits)
	uint64_t spare_bytes = kDefaultSpareBytes;
	FaultPlan faults;
};

class Server {
public:
	explicit Server(ServerConfig cfg);
	~Server();
	Server(const Server &) = delete;
	Server &operator=(const Server &) = delete;

	// Creates the socket dir (0700) and the socket (0600) and listens.
	[[nodiscard]] Status listen();
	// Accepts until stop() (from any thread or a signal handler's thread).
	[[nodiscard]] Status run();
	// Starts run() on a background thread (tests).
	[[nodiscard]] Status start_background();
	// Async-signal-safe: makes run() return soon.
	void request_stop();
	// Stops accepting, closes every connection, joins threads, unlinks the socket.
	void stop();

	unsigned connections_handled() const { return handled_.load(); }

private:
	struct Conn;
	void serve(std::shared_ptr<Conn> c);
	void reap_finished();

	ServerConfig cfg_;
	UniqueFd listen_fd_;
	UniqueFd wake_fd_;	// eventfd that wakes run() for stop()
	std::thread bg_;
	std::mutex mu_;
	std::vector<std::shared_ptr<Conn>> conns_;
	std::set<std::string> active_vms_;
	std::atomic<bool> stopping_{false};
	std::atomic<unsigned> handled_{0};
	bool bound_ = false;
};

} // namespace slsvirt
