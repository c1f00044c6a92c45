#include "devices/worker/control.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include "ipc/channel.h"
#include "ipc/worker.capnp.h"

namespace moss::runtime {

Result<ControlRequest> decode_control_request(std::span<const uint8_t> bytes) {
  MOSS_TRY(auto packet, ipc::decode_packet(bytes));
  ControlRequest out = ControlRequest::kDescribe;
  std::string problem;
  // Cap'n Proto checks pointers as fields are read, and throws: every read stays inside this
  // boundary.
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto m = packet->root<ipc::BrokerToWorker>();
    if (m.getVersion() != ipc::WORKER_PROTOCOL_VERSION) {
      problem = "the control request has protocol version " + std::to_string(m.getVersion()) +
                "; this worker speaks version " + std::to_string(ipc::WORKER_PROTOCOL_VERSION);
      return;
    }
    using B = ipc::BrokerToWorker;
    switch (m.which()) {
      case B::DESCRIBE: out = ControlRequest::kDescribe; break;
      case B::STATS: out = ControlRequest::kStats; break;
      case B::SHUTDOWN: out = ControlRequest::kShutdown; break;
      default: problem = "the control request is of a kind this worker does not know"; break;
    }
  })) {
    problem = std::string("the control request is malformed: ") + e->getDescription().cStr();
  }
  if (!problem.empty()) return make_error(problem);
  return out;
}

std::vector<uint8_t> encode_control_reply(const ControlReply& r) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<ipc::WorkerToBroker>();
  m.setVersion(ipc::WORKER_PROTOCOL_VERSION);
  using K = ControlReply::Kind;
  switch (r.kind) {
    case K::kDescription: {
      auto d = m.initDescription();
      d.setKind(r.description.kind);
      d.setNumQueues(r.description.num_queues);
      auto details = d.initDetails(static_cast<unsigned>(r.description.details.size()));
      for (unsigned i = 0; i < details.size(); i++) {
        details[i].setKey(r.description.details[i].first);
        details[i].setValue(r.description.details[i].second);
      }
      break;
    }
    case K::kStats: {
      auto s = m.initStats();
      s.setRequests(r.stats.requests);
      s.setErrors(r.stats.errors);
      s.setBytesIn(r.stats.bytes_in);
      s.setBytesOut(r.stats.bytes_out);
      s.setInFlight(r.stats.in_flight);
      auto c = s.initCounters(static_cast<unsigned>(r.stats.counters.size()));
      for (unsigned i = 0; i < c.size(); i++) {
        c[i].setName(r.stats.counters[i].first);
        c[i].setValue(r.stats.counters[i].second);
      }
      break;
    }
    case K::kShuttingDown: m.setShuttingDown(); break;
    case K::kError: m.setError(r.error); break;
  }
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(mb);
  auto bytes = flat.asBytes();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

}  // namespace moss::runtime
