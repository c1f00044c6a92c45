#include "ipc/worker_messages.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "ipc/worker.capnp.h"

namespace moss::worker {

std::string Description::detail(const std::string& key) const {
  for (const auto& [k, v] : details) {
    if (k == key) return v;
  }
  return "";
}

Stats& Stats::operator+=(const Stats& o) {
  requests += o.requests;
  errors += o.errors;
  bytes_in += o.bytes_in;
  bytes_out += o.bytes_out;
  for (const auto& [name, value] : o.counters) {
    bool found = false;
    for (auto& [n, v] : counters) {
      if (n == name) {
        v += value;
        found = true;
        break;
      }
    }
    if (!found) counters.emplace_back(name, value);
  }
  return *this;
}

uint64_t Stats::counter(const std::string& name) const {
  for (const auto& [n, v] : counters) {
    if (n == name) return v;
  }
  return 0;
}

Reply::Kind expected_reply(Request r) {
  switch (r) {
    case Request::kDescribe: return Reply::Kind::kDescription;
    case Request::kStats: return Reply::Kind::kStats;
    case Request::kShutdown: return Reply::Kind::kShuttingDown;
  }
  return Reply::Kind::kError;
}

std::vector<uint8_t> encode_request(Request r, uint32_t version) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<ipc::BrokerToWorker>();
  m.setVersion(version != 0 ? version : ipc::WORKER_PROTOCOL_VERSION);
  switch (r) {
    case Request::kDescribe: m.setDescribe(); break;
    case Request::kStats: m.setStats(); break;
    case Request::kShutdown: m.setShutdown(); break;
  }
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(mb);
  auto bytes = flat.asBytes();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

}  // namespace moss::worker
