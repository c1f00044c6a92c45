// The broker's side of ipc/worker.capnp (its messages: ipc/worker_messages.h, with
// encode_request and expected_reply): requests to a device worker over its control socket
// (describe, stats, shutdown; quiescing and state go over vhost-user), and the pure decoder of
// everything a worker sends back (fuzzed in fuzz/fuzz_broker_peers.cc). A worker is
// untrusted: every reply is checked for framing, version and kind before a field is used, its
// text and lists are bounded, and a worker that answers garbage or nothing in time is an Error.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "ipc/worker_messages.h"

namespace moss::worker {

// At most this many details or counters, and this many bytes of any text, are kept from a reply.
inline constexpr size_t kMaxListEntries = 64;
inline constexpr size_t kMaxTextBytes = 512;

// Pure: the bytes of one packet a worker sent.
Result<Reply> decode_reply(std::span<const uint8_t> packet);
// Sends `r` on `fd` and waits up to `timeout_ms` for the answer. A kError reply becomes an
// Error carrying the worker's sentence.
Result<Reply> call(int fd, Request r, int timeout_ms = 10000);

}  // namespace moss::worker
