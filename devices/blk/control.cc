#include "devices/blk/control.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>

#include "ipc/channel.h"
#include "ipc/worker.capnp.h"

namespace moss::blk {

Result<ControlRequest> decode_control_request(std::span<const uint8_t> bytes) {
  MOSS_TRY(auto packet, ipc::decode_packet(bytes));
  ControlRequest out;
  std::string problem;
  // Cap'n Proto checks pointers as fields are read, and throws: every read stays inside this
  // boundary.
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto m = packet->root<ipc::BrokerToWorker>();
    if (m.getVersion() != ipc::WORKER_PROTOCOL_VERSION) {
      problem = "the control request has protocol version " + std::to_string(m.getVersion()) +
                "; this moss-blk speaks version " + std::to_string(ipc::WORKER_PROTOCOL_VERSION);
      return;
    }
    using B = ipc::BrokerToWorker;
    using K = ControlRequest::Kind;
    switch (m.which()) {
      case B::DESCRIBE: out.kind = K::kDescribe; break;
      case B::QUIESCE: out.kind = K::kQuiesce; break;
      case B::SAVE_STATE: out.kind = K::kSaveState; break;
      case B::RESTORE_STATE: {
        out.kind = K::kRestoreState;
        auto d = m.getRestoreState();
        out.state.assign(d.begin(), d.end());
        break;
      }
      case B::RESUME: out.kind = K::kResume; break;
      case B::STATS: out.kind = K::kStats; break;
      case B::SHUTDOWN: out.kind = K::kShutdown; break;
      default: problem = "the control request is of a kind this moss-blk does not know"; break;
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
      d.setKind("blk");
      d.setDisk(r.description.disk);
      d.setReadOnly(r.description.read_only);
      d.setCapacityBytes(r.description.capacity_bytes);
      d.setNumQueues(r.description.num_queues);
      break;
    }
    case K::kQuiesced: m.setQuiesced(); break;
    case K::kState: m.setState(kj::arrayPtr(r.state.data(), r.state.size())); break;
    case K::kRestored: m.setRestored(); break;
    case K::kResumed: m.setResumed(); break;
    case K::kStats: {
      auto s = m.initStats();
      const Counters& c = r.stats.counters;
      s.setReadRequests(c.read_requests);
      s.setWriteRequests(c.write_requests);
      s.setFlushRequests(c.flush_requests);
      s.setOtherRequests(c.other_requests);
      s.setBytesRead(c.bytes_read);
      s.setBytesWritten(c.bytes_written);
      s.setErrors(c.errors);
      s.setInFlight(r.stats.in_flight);
      s.setQuiesced(r.stats.quiesced);
      break;
    }
    case K::kShuttingDown: m.setShuttingDown(); break;
    case K::kError: m.setError(r.error); break;
  }
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(mb);
  auto bytes = flat.asBytes();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

}  // namespace moss::blk
