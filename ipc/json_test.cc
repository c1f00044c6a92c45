#include "ipc/json.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include "ipc/control.capnp.h"
#include "ipc/json.capnp.h"

namespace moss::ipc {
namespace {

TEST(Json, CapabilitiesAreTheVhostUserObject) {
  capnp::MallocMessageBuilder mb;
  auto caps = mb.initRoot<BackendCapabilities>();
  caps.setType("block");
  auto f = caps.initFeatures(2);
  f.set(0, "read-only");
  f.set(1, "blk-file");
  EXPECT_EQ(to_json(caps.asReader()), "{\"type\": \"block\", \"features\": [\"read-only\", \"blk-file\"]}\n");
  EXPECT_EQ(to_json(caps.asReader(), /*pretty=*/false), "{\"type\":\"block\",\"features\":[\"read-only\",\"blk-file\"]}\n");
}

TEST(Json, StatsKeysAreSnakeCaseAndWideIntegersAreNumbers) {
  capnp::MallocMessageBuilder mb;
  auto s = mb.initRoot<VmStats>();
  s.setName("vm");
  s.setUptimeMs(5'000'000'000ull);  // Above 2^32: a number all the same.
  s.initDiskStats(1)[0].setBytesRead(1ull << 40);
  std::string json = to_json(s.asReader(), /*pretty=*/false);
  EXPECT_NE(json.find("\"uptime_ms\":5000000000,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"bytes_read\":1099511627776,"), std::string::npos) << json;
  EXPECT_EQ(json.find("uptimeMs"), std::string::npos) << json;
}

TEST(Json, StringsAreEscaped) {
  capnp::MallocMessageBuilder mb;
  auto s = mb.initRoot<VmStats>();
  s.setName("a \"quoted\\\" name\n\x01");
  std::string json = to_json(s.asReader(), /*pretty=*/false);
  EXPECT_NE(json.find(R"("name":"a \"quoted\\\" name\n\u0001")"), std::string::npos) << json;
}

}  // namespace
}  // namespace moss::ipc
