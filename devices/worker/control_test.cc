// The worker's side of the broker's control channel (ipc/worker.capnp), as bytes: the pure
// request decoder and reply encoder every worker shares.
#include "devices/worker/control.h"

#include <gtest/gtest.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include "ipc/channel.h"
#include "ipc/worker.capnp.h"

namespace moss::runtime {
namespace {

std::vector<uint8_t> request_bytes(ControlRequest kind, uint32_t version = ipc::WORKER_PROTOCOL_VERSION) {
  return worker::encode_request(kind, version);
}

TEST(WorkerControl, DecodesEveryRequestKind) {
  for (auto k : {ControlRequest::kDescribe, ControlRequest::kStats, ControlRequest::kShutdown}) {
    auto r = decode_control_request(request_bytes(k));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(*r, k);
  }
}

TEST(WorkerControl, RefusesMalformedOtherVersionAndUnknownRequests) {
  auto refused = [](std::vector<uint8_t> bytes, const std::string& needle) {
    auto r = decode_control_request(bytes);
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
  };
  refused({}, "bad length");
  refused(std::vector<uint8_t>(24, 0xff), "segments");
  auto good = request_bytes(ControlRequest::kStats);
  refused(std::vector<uint8_t>(good.begin(), good.end() - 8), "segment sizes");
  refused(request_bytes(ControlRequest::kStats, 1), "protocol version 1; this worker speaks version 2");
  // The union's discriminant sits after `version` in the root's data section: segment table
  // (8 bytes), root pointer (8), version (4), then the u16 tag. A tag from a newer schema:
  auto unknown = good;
  ASSERT_EQ(unknown[20], 1);  // STATS (the second member), so the offset is right.
  unknown[20] = 42;
  refused(unknown, "of a kind this worker does not know");
}

TEST(WorkerControl, EncodesEveryReplyKind) {
  auto decode = [](const std::vector<uint8_t>& bytes, auto check) {
    auto p = ipc::decode_packet(bytes);
    ASSERT_TRUE(p.ok()) << p.error().message;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
      auto m = (*p)->root<ipc::WorkerToBroker>();
      EXPECT_EQ(m.getVersion(), ipc::WORKER_PROTOCOL_VERSION);
      check(m);
    })) {
      ADD_FAILURE() << e->getDescription().cStr();
    }
  };
  ControlReply d = ControlReply::of(ControlReply::Kind::kDescription);
  d.description = {"blk", 3, {{"disk", "/images/a.img"}, {"readOnly", "true"}}};
  decode(encode_control_reply(d), [](ipc::WorkerToBroker::Reader m) {
    ASSERT_EQ(m.which(), ipc::WorkerToBroker::DESCRIPTION);
    auto r = m.getDescription();
    EXPECT_EQ(std::string(r.getKind().cStr()), "blk");
    EXPECT_EQ(r.getNumQueues(), 3u);
    ASSERT_EQ(r.getDetails().size(), 2u);
    EXPECT_EQ(std::string(r.getDetails()[0].getKey().cStr()), "disk");
    EXPECT_EQ(std::string(r.getDetails()[1].getValue().cStr()), "true");
  });
  ControlReply s = ControlReply::of(ControlReply::Kind::kStats);
  s.stats = {1, 2, 3, 4, 5, {{"readRequests", 6}}};
  decode(encode_control_reply(s), [](ipc::WorkerToBroker::Reader m) {
    ASSERT_EQ(m.which(), ipc::WorkerToBroker::STATS);
    auto r = m.getStats();
    EXPECT_EQ(r.getRequests(), 1u);
    EXPECT_EQ(r.getErrors(), 2u);
    EXPECT_EQ(r.getBytesIn(), 3u);
    EXPECT_EQ(r.getBytesOut(), 4u);
    EXPECT_EQ(r.getInFlight(), 5u);
    ASSERT_EQ(r.getCounters().size(), 1u);
    EXPECT_EQ(std::string(r.getCounters()[0].getName().cStr()), "readRequests");
    EXPECT_EQ(r.getCounters()[0].getValue(), 6u);
  });
  decode(encode_control_reply(ControlReply::of(ControlReply::Kind::kShuttingDown)),
         [](ipc::WorkerToBroker::Reader m) { EXPECT_EQ(m.which(), ipc::WorkerToBroker::SHUTTING_DOWN); });
  decode(encode_control_reply(ControlReply::failure("cannot flush")), [](ipc::WorkerToBroker::Reader m) {
    ASSERT_EQ(m.which(), ipc::WorkerToBroker::ERROR);
    EXPECT_EQ(std::string(m.getError().cStr()), "cannot flush");
  });
}

TEST(WorkerControl, StatsAddUpByNameAndKeepInFlight) {
  Stats a{1, 0, 10, 20, 3, {{"reads", 1}}};
  a += Stats{2, 1, 5, 5, 7, {{"writes", 4}, {"reads", 2}}};
  EXPECT_EQ(a.requests, 3u);
  EXPECT_EQ(a.errors, 1u);
  EXPECT_EQ(a.bytes_in, 15u);
  EXPECT_EQ(a.bytes_out, 25u);
  EXPECT_EQ(a.in_flight, 3u);
  EXPECT_EQ(a.counter("reads"), 3u);
  EXPECT_EQ(a.counter("writes"), 4u);
  EXPECT_EQ(a.counter("none"), 0u);
}

}  // namespace
}  // namespace moss::runtime
