// The policies moss ships (policies/*.policy), compiled into every binary that links this, and
// the roles that load them.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "policies/policy.h"

namespace moss::sandbox {

// A kind of jailed child process. Each has a policy of the same name (vcpu.policy, ...).
enum class Role { kVcpu, kBlk, kVsock, kNull };

const char* role_name(Role role);  // "vcpu", "blk", "vsock", "null"
std::optional<Role> role_from_name(std::string_view name);
std::vector<Role> all_roles();

}  // namespace moss::sandbox

namespace moss::policy {

// The text of a built-in policy file by name ("common"), or nullopt.
std::optional<std::string> builtin_text(const std::string& name);
std::vector<std::string> builtin_names();
// The effective policy of a role: its file with every include expanded.
Result<Policy> builtin(sandbox::Role role);

}  // namespace moss::policy
