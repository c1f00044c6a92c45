// The worker's side of the broker's control interface (ipc/worker.capnp): the pure decoder of
// a request packet and the encoder of a reply packet. The worker loop (worker.h) does the
// rest: it reads one packet per readable event and sends exactly one reply per request, in
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
#include "devices/blk/device.h"

namespace moss::blk {

struct ControlRequest {
  enum class Kind { kDescribe, kQuiesce, kSaveState, kRestoreState, kResume, kStats, kShutdown };
  Kind kind = Kind::kDescribe;
  std::vector<uint8_t> state;  // kRestoreState: the blob as sent (decode_state checks it).
};

// Pure: one packet's bytes to a request, or an Error in one sentence (bad framing, another
// protocol version, a request kind this worker does not know).
Result<ControlRequest> decode_control_request(std::span<const uint8_t> packet);

struct WorkerDescription {
  std::string disk;  // As given on the command line.
  bool read_only = false;
  uint64_t capacity_bytes = 0;
  uint32_t num_queues = 0;
};

struct WorkerStats {
  Counters counters;
  uint32_t in_flight = 0;
  bool quiesced = false;
};

struct ControlReply {
  enum class Kind { kDescription, kQuiesced, kState, kRestored, kResumed, kStats, kShuttingDown, kError };
  Kind kind = Kind::kError;
  WorkerDescription description;  // kDescription
  WorkerStats stats;              // kStats
  std::vector<uint8_t> state;     // kState
  std::string error;              // kError: one sentence.

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

}  // namespace moss::blk
