// Minimal QMP client over a unix socket (greeting, qmp_capabilities,
// events skipped, QMP errors returned as error values with their desc).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "slsvirt/fd.hpp"
#include "slsvirt/result.hpp"

namespace slsvirt {

class QmpClient {
public:
	// Connects, reads the greeting, negotiates capabilities.
	[[nodiscard]] static Result<QmpClient> connect(const std::string &path, int timeout_ms);
	// Runs one command; returns its "return" value. A QMP error becomes
	// Error{-EIO, "<class>: <desc>"}.
	[[nodiscard]] Result<nlohmann::json> execute(const std::string &cmd,
						     const nlohmann::json &args = nlohmann::json());
	void set_timeout_ms(int ms) { timeout_ms_ = ms; }

private:
	QmpClient() = default;
	[[nodiscard]] Result<nlohmann::json> read_message();
	UniqueFd fd_;
	std::string buf_;
	int timeout_ms_ = 30000;
	uint64_t next_id_ = 1;
};

} // namespace slsvirt
