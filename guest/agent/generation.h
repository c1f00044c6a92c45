// The guest side of GENERATION (protocol.h): what moss-init does when the host gives a restored
// VM a new generation. Plain system calls, no exceptions (moss-init links it).
#pragma once

#include <cstdint>
#include <string_view>

#include "base/result.h"
#include "guest/agent/protocol.h"

namespace moss::agent {

// Where programs read the generation: one line, the decimal number, mode 0644; replaced
// atomically (written to a temporary name in the same directory, then renamed over it).
inline constexpr const char kGenerationDir[] = "/run/moss";
inline constexpr const char kGenerationFile[] = "/run/moss/generation";

// Mixes `bytes` into the kernel's entropy pool through `random_fd` (an open /dev/urandom) with
// RNDADDENTROPY, credited at 8 bits a byte: the host drew them from getrandom(). Needs
// CAP_SYS_ADMIN.
Result<void> mix_entropy(int random_fd, std::string_view bytes);

// Writes "<generation>\n" to <dir>/generation (dir made 0755 if missing), atomically.
Result<void> publish_generation(const char* dir, uint64_t generation);

// moss-init's GenerationHandler (session.h): mixes the entropy into /dev/urandom's pool, steps
// CLOCK_REALTIME to realtime_ns unless it is 0, then publishes the number in kGenerationFile
// (last: a program that sees the new number also sees the rest done).
Result<void> apply_generation(const Frame& generation);

}  // namespace moss::agent
