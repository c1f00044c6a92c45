// A new generation for a restored VM (issue 13, "A new generation on every restore"): two VMs
// restored from one spore would otherwise start with the same kernel RNG state and clock. The
// broker calls renew_generation() on a fresh agent connection after a restore and before any
// command runs; moss-init mixes the entropy into its pool, steps the realtime clock if asked,
// and publishes the number in /run/moss/generation (guest/agent/generation.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "base/result.h"

namespace moss {

inline constexpr std::chrono::milliseconds kGenerationTimeout{5000};

// On `agent_fd`, a stream connected to the guest agent (after the vsock worker's CONNECT/OK)
// on which nothing was sent yet: HELLO (version 2), GENERATION{generation, realtime_ns (none:
// leave the guest's clock), kGenerationEntropyBytes fresh from getrandom()}, and waits up to
// `timeout` for the agent's acknowledgement (agent::renew_generation, guest/agent/client.h).
// The fd is borrowed and left open; the protocol lets it carry EXEC or SHUTDOWN frames next
// (not a new ExecClient, which starts with its own HELLO). Errors are one sentence: an agent
// too old for generations, the agent's refusal, the time-out, a closed connection.
Result<void> renew_generation(int agent_fd, uint64_t generation, std::optional<int64_t> realtime_ns,
                              std::chrono::milliseconds timeout = kGenerationTimeout);

// The realtime clock's time now, in ns since the epoch (for --clock realtime).
int64_t realtime_now_ns();

}  // namespace moss
