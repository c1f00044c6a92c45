// libFuzzer target: every message a peer of the broker sends it, through the same pure
// decoders the broker uses. Selector byte (mod 3): 0 = a device worker's reply
// (broker/worker_control.cc), 1 = a request on a VM's control socket (broker/control.cc, the
// server side), 2 = a stats reply as `moss stats` reads it (and the same bytes as an agent
// reply, as `moss exec` reads it). Then the packet bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "broker/control.h"
#include "broker/worker_control.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::span<const uint8_t> packet(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      auto r = moss::worker::decode_reply(packet);
      if (r.ok() && r->kind == moss::worker::Reply::Kind::kError && r->error.size() > 512) __builtin_trap();
      break;
    }
    case 1: (void)moss::control::decode_request(packet); break;
    default: {
      auto s = moss::control::decode_stats_reply(packet);
      if (s.ok()) (void)moss::control::to_json(*s);
      auto a = moss::control::decode_agent_reply(packet);
      if (!a.ok() && a.error().message.empty()) __builtin_trap();
      break;
    }
  }
  return 0;
}
