#include "broker/worker_control.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <kj/exception.h>

#include "base/syscall.h"
#include "ipc/channel.h"
#include "ipc/worker.capnp.h"

namespace moss::worker {

Reply::Kind expected_reply(Request r) {
  switch (r) {
    case Request::kDescribe: return Reply::Kind::kDescription;
    case Request::kQuiesce: return Reply::Kind::kQuiesced;
    case Request::kSaveState: return Reply::Kind::kState;
    case Request::kRestoreState: return Reply::Kind::kRestored;
    case Request::kResume: return Reply::Kind::kResumed;
    case Request::kStats: return Reply::Kind::kStats;
    case Request::kShutdown: return Reply::Kind::kShuttingDown;
  }
  return Reply::Kind::kError;
}

Result<Reply> decode_reply(std::span<const uint8_t> bytes) {
  MOSS_TRY(auto packet, ipc::decode_packet(bytes));
  Reply out;
  std::string problem;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto m = packet->root<ipc::WorkerToBroker>();
    if (m.getVersion() != ipc::WORKER_PROTOCOL_VERSION) {
      problem = "the worker speaks control protocol version " + std::to_string(m.getVersion());
      return;
    }
    using W = ipc::WorkerToBroker;
    switch (m.which()) {
      case W::DESCRIPTION: {
        auto d = m.getDescription();
        out.kind = Reply::Kind::kDescription;
        out.description = {d.getKind().cStr(), d.getDisk().cStr(), d.getReadOnly(), d.getCapacityBytes(),
                           d.getNumQueues()};
        break;
      }
      case W::QUIESCED: out.kind = Reply::Kind::kQuiesced; break;
      case W::STATE: {
        auto s = m.getState();
        out.kind = Reply::Kind::kState;
        out.state.assign(s.begin(), s.end());
        break;
      }
      case W::RESTORED: out.kind = Reply::Kind::kRestored; break;
      case W::RESUMED: out.kind = Reply::Kind::kResumed; break;
      case W::STATS: {
        auto s = m.getStats();
        out.kind = Reply::Kind::kStats;
        out.stats = {s.getReadRequests(), s.getWriteRequests(), s.getFlushRequests(), s.getOtherRequests(),
                     s.getBytesRead(),    s.getBytesWritten(),  s.getErrors(),        s.getInFlight(),
                     s.getQuiesced()};
        break;
      }
      case W::SHUTTING_DOWN: out.kind = Reply::Kind::kShuttingDown; break;
      case W::ERROR: {
        out.kind = Reply::Kind::kError;
        out.error = m.getError().cStr();
        if (out.error.size() > 512) out.error.resize(512);  // One sentence, not a flood.
        break;
      }
      default: problem = "the worker sent a reply of an unknown kind"; break;
    }
  })) {
    problem = std::string("the worker's reply is malformed: ") + e->getDescription().cStr();
  }
  if (!problem.empty()) return make_error(problem);
  return out;
}

std::vector<uint8_t> encode_request(Request r, std::span<const uint8_t> state) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<ipc::BrokerToWorker>();
  m.setVersion(ipc::WORKER_PROTOCOL_VERSION);
  switch (r) {
    case Request::kDescribe: m.setDescribe(); break;
    case Request::kQuiesce: m.setQuiesce(); break;
    case Request::kSaveState: m.setSaveState(); break;
    case Request::kRestoreState: m.setRestoreState(kj::arrayPtr(state.data(), state.size())); break;
    case Request::kResume: m.setResume(); break;
    case Request::kStats: m.setStats(); break;
    case Request::kShutdown: m.setShutdown(); break;
  }
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(mb);
  auto bytes = flat.asBytes();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

Result<Reply> call(int fd, Request r, std::span<const uint8_t> state, int timeout_ms) {
  std::vector<uint8_t> packet = encode_request(r, state);
  if (packet.size() > ipc::kMaxPacketBytes) return make_error("control message too large to send");
  MOSS_TRY(ssize_t sent, MOSS_SYS(send(fd, packet.data(), packet.size(), MSG_NOSIGNAL)));
  if (static_cast<size_t>(sent) != packet.size()) return make_error("control message was truncated on send");
  pollfd p{fd, POLLIN, 0};
  int n;
  do {
    n = poll(&p, 1, timeout_ms);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return timeout_error("the worker did not answer within " + std::to_string(timeout_ms) + " ms");
  if (n < 0) return sys_error("wait for", "the worker's reply");
  std::vector<uint8_t> buf(ipc::kMaxPacketBytes + 1);
  ssize_t got;
  do {
    got = recv(fd, buf.data(), buf.size(), MSG_TRUNC);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return sys_error("read", "the worker's reply");
  if (got == 0) return make_error("the worker closed its control channel");
  if (static_cast<size_t>(got) > ipc::kMaxPacketBytes) return make_error("the worker's reply is too large");
  MOSS_TRY(Reply reply, decode_reply(std::span<const uint8_t>(buf.data(), static_cast<size_t>(got))));
  if (reply.kind == Reply::Kind::kError) return make_error("the worker refused: " + reply.error);
  if (reply.kind != expected_reply(r)) return make_error("the worker answered a different request");
  return reply;
}

}  // namespace moss::worker
