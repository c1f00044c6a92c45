// The worker's side of the broker's control interface (ipc/worker.capnp; its messages as values,
// and the request encoder tests use: ipc/worker_messages.h): the pure decoder of
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
#include "ipc/worker_messages.h"

namespace moss::runtime {

using ControlRequest = worker::Request;
using ControlReply = worker::Reply;

// Pure: one packet's bytes to a request, or an Error in one sentence (bad framing, another
// protocol version, a request kind this worker does not know).
Result<ControlRequest> decode_control_request(std::span<const uint8_t> packet);

// The bytes of one packet (a flat Cap'n Proto message, version workerProtocolVersion).
std::vector<uint8_t> encode_control_reply(const ControlReply& reply);

}  // namespace moss::runtime
