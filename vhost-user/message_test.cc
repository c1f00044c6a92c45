#include "vhost-user/message.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace moss::vhost_user {
namespace {

struct Case {
  const char* name;
  Message msg;
  size_t nfds;
};

std::vector<uint8_t> header(uint32_t request, uint32_t flags, uint32_t size) {
  std::vector<uint8_t> out(12);
  std::memcpy(&out[0], &request, 4);
  std::memcpy(&out[4], &flags, 4);
  std::memcpy(&out[8], &size, 4);
  return out;
}

// resize+memcpy rather than vector::insert, which trips GCC 12's -O3 -Wstringop-overflow.
void append_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  if (n == 0) return;
  size_t at = out.size();
  out.resize(at + n);
  std::memcpy(out.data() + at, p, n);
}

template <typename T>
void append(std::vector<uint8_t>& out, T v) {
  append_bytes(out, &v, sizeof v);
}

std::vector<uint8_t> raw(uint32_t request, uint32_t flags, std::vector<uint8_t> payload) {
  auto out = header(request, flags, static_cast<uint32_t>(payload.size()));
  append_bytes(out, payload.data(), payload.size());
  return out;
}

std::vector<uint8_t> u64_payload(uint64_t v) {
  std::vector<uint8_t> p;
  append(p, v);
  return p;
}

constexpr uint32_t kReq = kVersion;
constexpr uint32_t kRep = kVersion | kFlagReply;
constexpr auto R = [](Request r) { return static_cast<uint32_t>(r); };

MemoryRegion region(uint64_t n) { return MemoryRegion{n << 20, 1 << 20, 0x7f0000000000 + (n << 20), n * 4096}; }

TEST(VhostUserMessage, EveryRequestKindRoundTrips) {
  const Case cases[] = {
      {"get-features", make_request(Request::kGetFeatures), 0},
      {"set-features", make_request(Request::kSetFeatures, uint64_t{0x140000000}), 0},
      {"set-owner-need-reply", make_request(Request::kSetOwner, Empty{}, true), 0},
      {"mem-table", make_request(Request::kSetMemTable, MemoryTable{{region(0), region(1), region(2)}}), 3},
      {"mem-table-empty", make_request(Request::kSetMemTable, MemoryTable{}), 0},
      {"mem-table-full", make_request(Request::kSetMemTable, MemoryTable{std::vector<MemoryRegion>(8, region(5))}), 8},
      {"vring-num", make_request(Request::kSetVringNum, VringState{1, 256}), 0},
      {"vring-addr", make_request(Request::kSetVringAddr, VringAddr{2, 0, 0x1000, 0x3000, 0x2000, 0x9000}), 0},
      {"vring-base", make_request(Request::kSetVringBase, VringState{0, 7}), 0},
      {"get-vring-base", make_request(Request::kGetVringBase, VringState{3, 0}), 0},
      {"kick", make_request(Request::kSetVringKick, uint64_t{5}), 1},
      {"kick-nofd", make_request(Request::kSetVringKick, uint64_t{5 | kVringNoFd}), 0},
      {"call", make_request(Request::kSetVringCall, uint64_t{0}), 1},
      {"err-nofd", make_request(Request::kSetVringErr, uint64_t{255 | kVringNoFd}), 0},
      {"enable", make_request(Request::kSetVringEnable, VringState{1, 1}), 0},
      {"get-config", make_request(Request::kGetConfig, Config{0, 0, std::vector<uint8_t>(60, 0)}), 0},
      {"set-config", make_request(Request::kSetConfig, Config{8, 1, {1, 2, 3, 4}}), 0},
      {"set-config-max", make_request(Request::kSetConfig, Config{0, 0, std::vector<uint8_t>(256, 0xab)}), 0},
      {"get-inflight", make_request(Request::kGetInflightFd, Inflight{0, 0, 2, 128}), 0},
      {"set-inflight", make_request(Request::kSetInflightFd, Inflight{8192, 4096, 2, 128}), 1},
      {"add-mem-reg", make_request(Request::kAddMemReg, SingleMemoryRegion{region(4)}), 1},
      {"rem-mem-reg", make_request(Request::kRemMemReg, SingleMemoryRegion{region(4)}), 0},
      {"rem-mem-reg-stray-fd", make_request(Request::kRemMemReg, SingleMemoryRegion{region(4)}), 1},
      {"device-state", make_request(Request::kSetDeviceStateFd, DeviceStateTransfer{kTransferLoad, kPhaseStopped}), 1},
      {"check-state", make_request(Request::kCheckDeviceState), 0},
      {"log-base", make_request(Request::kSetLogBase, Log{4096, 0}), 1},
      {"log-fd", make_request(Request::kSetLogFd), 1},
      {"reset-device", make_request(Request::kResetDevice, Empty{}, true), 0},
      {"max-mem-slots", make_request(Request::kGetMaxMemSlots), 0},
  };
  for (const auto& c : cases) {
    auto bytes = encode(c.msg);
    auto back = decode(bytes, c.nfds, Direction::kRequest);
    ASSERT_TRUE(back.ok()) << c.name << ": " << back.error().message;
    EXPECT_EQ(*back, c.msg) << c.name;
  }
}

TEST(VhostUserMessage, EveryReplyKindRoundTrips) {
  const Case cases[] = {
      {"features", make_reply(Request::kGetFeatures, uint64_t{1} << 30), 0},
      {"protocol-features", make_reply(Request::kGetProtocolFeatures, uint64_t{0xa209}), 0},
      {"queue-num", make_reply(Request::kGetQueueNum, uint64_t{4}), 0},
      {"vring-base", make_reply(Request::kGetVringBase, VringState{1, 42}), 0},
      {"config", make_reply(Request::kGetConfig, Config{0, 0, {9, 8, 7}}), 0},
      {"config-failed", make_reply(Request::kGetConfig, Empty{}), 0},
      {"inflight", make_reply(Request::kGetInflightFd, Inflight{4224, 0, 1, 256}), 1},
      {"inflight-failed", make_reply(Request::kGetInflightFd, Inflight{0, 0, 1, 256}), 0},
      {"state-nofd", make_reply(Request::kSetDeviceStateFd, uint64_t{kDeviceStateNoFd}), 0},
      {"state-own-fd", make_reply(Request::kSetDeviceStateFd, uint64_t{0}), 1},
      {"state-error", make_reply(Request::kSetDeviceStateFd, uint64_t{kDeviceStateNoFd | 1}), 0},
      {"check-state", make_reply(Request::kCheckDeviceState, uint64_t{0}), 0},
      {"ack", make_reply(Request::kSetMemTable, uint64_t{0}), 0},
      {"nack", make_reply(Request::kSetVringAddr, uint64_t{1}), 0},
  };
  for (const auto& c : cases) {
    auto back = decode(encode(c.msg), c.nfds, Direction::kReply);
    ASSERT_TRUE(back.ok()) << c.name << ": " << back.error().message;
    EXPECT_EQ(*back, c.msg) << c.name;
  }
}

TEST(VhostUserMessage, EncodesTheWireLayout) {
  auto b = encode(make_request(Request::kSetVringAddr, VringAddr{2, 0, 0x1111, 0x2222, 0x3333, 0x4444}, true));
  ASSERT_EQ(b.size(), 12u + 40u);
  auto expect = header(R(Request::kSetVringAddr), kVersion | kFlagNeedReply, 40);
  append(expect, uint32_t{2});
  append(expect, uint32_t{0});
  append(expect, uint64_t{0x1111});  // desc
  append(expect, uint64_t{0x2222});  // used
  append(expect, uint64_t{0x3333});  // avail
  append(expect, uint64_t{0x4444});  // log
  EXPECT_EQ(b, expect);

  EXPECT_EQ(encode(make_request(Request::kSetMemTable, MemoryTable{{region(0), region(1)}})).size(), 12u + 8 + 64);
  EXPECT_EQ(encode(make_request(Request::kAddMemReg, SingleMemoryRegion{region(0)})).size(), 12u + 40);
  EXPECT_EQ(encode(make_request(Request::kGetInflightFd, Inflight{})).size(), 12u + 24);
  EXPECT_EQ(encode(make_request(Request::kGetConfig, Config{0, 0, std::vector<uint8_t>(8)})).size(), 12u + 12 + 8);
  EXPECT_EQ(encode(make_reply(Request::kGetFeatures, uint64_t{1}))[4], kVersion | kFlagReply);
}

// Each malformed input must be a clean Error, whose message says what was wrong.
struct Bad {
  const char* name;
  std::vector<uint8_t> bytes;
  size_t nfds;
  Direction dir;
  const char* says;
};

TEST(VhostUserMessage, MalformedInputsAreErrors) {
  auto table9 = header(R(Request::kSetMemTable), kReq, 8 + 9 * 32);
  append(table9, uint32_t{9});
  append(table9, uint32_t{0});
  table9.resize(12 + 8 + 9 * 32);
  auto table2 = encode(make_request(Request::kSetMemTable, MemoryTable{{region(0), region(1)}}));
  auto table_lies = table2;  // Says 3 regions, carries 2.
  table_lies[12] = 3;
  auto config_lies = encode(make_request(Request::kSetConfig, Config{0, 0, {1, 2, 3, 4}}));
  config_lies[16] = 5;  // Size field 5, 4 bytes follow.
  auto config_big = header(R(Request::kSetConfig), kReq, 12 + 257);
  append(config_big, uint32_t{0});
  append(config_big, uint32_t{257});
  append(config_big, uint32_t{0});
  config_big.resize(12 + 12 + 257);
  auto oversize = header(R(Request::kSetConfig), kReq, 4097);
  oversize.resize(12 + 4097);
  auto truncated = encode(make_request(Request::kSetFeatures, uint64_t{1}));
  truncated.pop_back();
  auto trailing = encode(make_request(Request::kSetFeatures, uint64_t{1}));
  trailing.push_back(0);

  const Bad cases[] = {
      {"empty", {}, 0, Direction::kRequest, "shorter than its 12-byte header"},
      {"short-header", std::vector<uint8_t>(11, 0), 0, Direction::kRequest, "shorter than its 12-byte header"},
      {"version-0", header(1, 0, 0), 0, Direction::kRequest, "version 0"},
      {"version-2", header(1, 2, 0), 0, Direction::kRequest, "version 2"},
      {"version-3", header(1, 3, 0), 0, Direction::kRequest, "version 3"},
      {"undefined-flag", header(1, kReq | 0x10, 0), 0, Direction::kRequest, "undefined header flags"},
      {"oversize", oversize, 0, Direction::kRequest, "exceeds the 4096-byte limit"},
      {"truncated", truncated, 0, Direction::kRequest, "header says"},
      {"trailing", trailing, 0, Direction::kRequest, "header says"},
      {"u64-too-short", raw(R(Request::kSetFeatures), kReq, {1, 2, 3, 4}), 0, Direction::kRequest, "8 bytes are required"},
      {"empty-with-payload", raw(R(Request::kGetFeatures), kReq, {0}), 0, Direction::kRequest, "0 bytes are required"},
      {"vring-addr-short", raw(R(Request::kSetVringAddr), kReq, std::vector<uint8_t>(32)), 0, Direction::kRequest, "40 bytes"},
      {"inflight-20", raw(R(Request::kGetInflightFd), kReq, std::vector<uint8_t>(20)), 0, Direction::kRequest, "24 bytes"},
      {"undefined-request-0", header(0, kReq, 0), 0, Direction::kRequest, "not defined"},
      {"undefined-request-44", header(44, kReq, 0), 0, Direction::kRequest, "not defined"},
      {"undefined-request-max", header(0xffffffff, kReq, 0), 0, Direction::kRequest, "not defined"},
      {"unsupported-iotlb", raw(R(Request::kIotlbMsg), kReq, std::vector<uint8_t>(32)), 0, Direction::kRequest, "not supported"},
      {"fd-on-set-features", raw(R(Request::kSetFeatures), kReq, u64_payload(0)), 1, Direction::kRequest,
       "1 file descriptors where 0"},
      {"too-many-fds", raw(R(Request::kGetFeatures), kReq, {}), 9, Direction::kRequest, "more than 8"},
      {"mem-table-9-regions", table9, 8, Direction::kRequest, "at most 8"},
      {"mem-table-fd-short", table2, 1, Direction::kRequest, "where 2 are required"},
      {"mem-table-fd-extra", table2, 3, Direction::kRequest, "where 2 are required"},
      {"mem-table-count-lies", table_lies, 3, Direction::kRequest, "bytes are required"},
      {"mem-table-no-count", raw(R(Request::kSetMemTable), kReq, {0, 0, 0}), 0, Direction::kRequest, "8 bytes are required"},
      {"kick-without-fd", raw(R(Request::kSetVringKick), kReq, u64_payload(1)), 0, Direction::kRequest, "where 1 are required"},
      {"kick-nofd-with-fd", raw(R(Request::kSetVringKick), kReq, u64_payload(1 | kVringNoFd)), 1, Direction::kRequest,
       "where 0 are required"},
      {"kick-two-fds", raw(R(Request::kSetVringKick), kReq, u64_payload(1)), 2, Direction::kRequest, "where 1 are required"},
      {"kick-high-bits", raw(R(Request::kSetVringCall), kReq, u64_payload(0x200)), 1, Direction::kRequest, "beyond 0-8"},
      {"add-mem-reg-no-fd", encode(make_request(Request::kAddMemReg, SingleMemoryRegion{})), 0, Direction::kRequest,
       "where 1 are required"},
      {"rem-mem-reg-two-fds", encode(make_request(Request::kRemMemReg, SingleMemoryRegion{})), 2, Direction::kRequest,
       "where 1 are required"},
      {"inflight-set-no-fd", encode(make_request(Request::kSetInflightFd, Inflight{})), 0, Direction::kRequest,
       "where 1 are required"},
      {"device-state-no-fd", encode(make_request(Request::kSetDeviceStateFd, DeviceStateTransfer{})), 0, Direction::kRequest,
       "where 1 are required"},
      {"config-size-lies", config_lies, 0, Direction::kRequest, "bytes are required"},
      {"config-over-256", config_big, 0, Direction::kRequest, "at most 256"},
      {"config-no-header", raw(R(Request::kGetConfig), kReq, {0, 0, 0, 0}), 0, Direction::kRequest, "12 bytes are required"},
      {"request-with-reply-flag", header(R(Request::kGetFeatures), kRep, 0), 0, Direction::kRequest, "reply flag"},
      {"reply-without-reply-flag", raw(R(Request::kGetFeatures), kReq, u64_payload(1)), 0, Direction::kReply, "reply flag"},
      {"reply-needing-reply", raw(R(Request::kGetFeatures), kRep | kFlagNeedReply, u64_payload(1)), 0, Direction::kReply,
       "reply flag"},
      {"reply-ack-empty", header(R(Request::kSetOwner), kRep, 0), 0, Direction::kReply, "8 bytes are required"},
      {"inflight-reply-no-fd", encode(make_reply(Request::kGetInflightFd, Inflight{4096, 0, 1, 64})), 0, Direction::kReply,
       "where 1 are required"},
      {"inflight-failed-with-fd", encode(make_reply(Request::kGetInflightFd, Inflight{0, 0, 1, 64})), 1, Direction::kReply,
       "where 0 are required"},
      {"state-nofd-with-fd", encode(make_reply(Request::kSetDeviceStateFd, uint64_t{kDeviceStateNoFd})), 1, Direction::kReply,
       "where 0 are required"},
      {"postcopy-advise-reply", encode(make_reply(Request::kPostcopyAdvise, uint64_t{0})), 0, Direction::kReply,
       "not supported"},
  };
  for (const auto& c : cases) {
    auto r = decode(c.bytes, c.nfds, c.dir);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_NE(r.error().message.find(c.says), std::string::npos) << c.name << ": " << r.error().message;
  }
}

TEST(VhostUserMessage, HeaderAloneBoundsThePayloadRead) {
  EXPECT_TRUE(decode_header(header(1, kReq, 4096)).ok());
  EXPECT_FALSE(decode_header(header(1, kReq, 4097)).ok());
  EXPECT_FALSE(decode_header(header(1, kReq, 0xffffffff)).ok());
  auto h = decode_header(header(5, kReq | kFlagNeedReply, 40));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->request, 5u);
  EXPECT_EQ(h->size, 40u);
}

TEST(VhostUserMessage, NamesRequests) {
  EXPECT_STREQ(request_name(Request::kGetVringBase), "GET_VRING_BASE");
  EXPECT_STREQ(request_name(Request::kCheckDeviceState), "CHECK_DEVICE_STATE");
  EXPECT_STREQ(request_name(static_cast<Request>(77)), "an undefined request");
}

}  // namespace
}  // namespace moss::vhost_user
