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
namespace {

std::string bounded(capnp::Text::Reader t) {
  std::string s = t.cStr();
  if (s.size() > kMaxTextBytes) s.resize(kMaxTextBytes);  // One sentence, not a flood.
  return s;
}

}  // namespace

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
        out.description.kind = bounded(d.getKind());
        out.description.num_queues = d.getNumQueues();
        auto details = d.getDetails();
        if (details.size() > kMaxListEntries) {
          problem = "the worker's description has " + std::to_string(details.size()) + " details";
          return;
        }
        for (auto kv : details) out.description.details.emplace_back(bounded(kv.getKey()), bounded(kv.getValue()));
        break;
      }
      case W::STATS: {
        auto s = m.getStats();
        out.kind = Reply::Kind::kStats;
        out.stats.requests = s.getRequests();
        out.stats.errors = s.getErrors();
        out.stats.bytes_in = s.getBytesIn();
        out.stats.bytes_out = s.getBytesOut();
        out.stats.in_flight = s.getInFlight();
        auto counters = s.getCounters();
        if (counters.size() > kMaxListEntries) {
          problem = "the worker's stats have " + std::to_string(counters.size()) + " counters";
          return;
        }
        for (auto c : counters) out.stats.counters.emplace_back(bounded(c.getName()), c.getValue());
        break;
      }
      case W::SHUTTING_DOWN: out.kind = Reply::Kind::kShuttingDown; break;
      case W::ERROR: {
        out.kind = Reply::Kind::kError;
        out.error = bounded(m.getError());
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

Result<Reply> call(int fd, Request r, int timeout_ms) {
  std::vector<uint8_t> packet = encode_request(r);
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
