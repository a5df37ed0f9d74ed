// Facts about this process's machine and time, for reports, lock files and temporary names.
// No torch headers.
#pragma once

#include <string>

namespace latentmoe {

std::string host_name();        // gethostname(2), or "unknown"
std::string utc_now_iso8601();  // e.g. "2026-12-01T19:37:00Z"

}  // namespace latentmoe
