// The worker's side of the broker's control interface (ipc/worker.capnp): the pure decoder of
// a request packet and the encoder of a reply packet, for every device. The runtime
// (runtime.h) reads one packet per readable event and sends exactly one reply per request, in
// order.
//
// The broker is trusted, but a packet that does not decode, has another protocol version or
// a request this worker does not know is answered with an error reply, not a crash or a
// disconnect: a newer broker then learns what this worker cannot do.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/worker/device.h"

namespace moss::runtime {

enum class ControlRequest { kDescribe, kStats, kShutdown };

// Pure: one packet's bytes to a request, or an Error in one sentence (bad framing, another
// protocol version, a request kind this worker does not know).
Result<ControlRequest> decode_control_request(std::span<const uint8_t> packet);

struct ControlReply {
  enum class Kind { kDescription, kStats, kShuttingDown, kError };
  Kind kind = Kind::kError;
  Description description;  // kDescription
  Stats stats;              // kStats
  std::string error;        // kError: one sentence.

  static ControlReply of(Kind k) {
    ControlReply r;
    r.kind = k;
    return r;
  }
  static ControlReply failure(std::string why) {
    ControlReply r;
    r.error = std::move(why);
    return r;
  }
};

// The bytes of one packet (a flat Cap'n Proto message, version workerProtocolVersion).
std::vector<uint8_t> encode_control_reply(const ControlReply& reply);
// The broker's side, for tests: one request packet; `version` 0 means the current one.
std::vector<uint8_t> encode_control_request(ControlRequest request, uint32_t version = 0);

}  // namespace moss::runtime
