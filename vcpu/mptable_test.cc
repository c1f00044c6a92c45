#include "vcpu/mptable.h"

#include <gtest/gtest.h>

#include <cstring>

namespace moss::boot {
namespace {

uint8_t sum(const uint8_t* p, size_t n) {
  uint8_t s = 0;
  for (size_t i = 0; i < n; i++) s = static_cast<uint8_t>(s + p[i]);
  return s;
}

TEST(MpTable, ChecksumsAndCountsAreConsistent) {
  for (uint32_t cpus : {1u, 2u, 8u}) {
    auto t = build_mptable(0x9fc00, cpus);
    ASSERT_GE(t.size(), 60u);
    EXPECT_EQ(std::memcmp(t.data(), "_MP_", 4), 0);
    EXPECT_EQ(sum(t.data(), 16), 0);
    uint32_t cfg;
    std::memcpy(&cfg, &t[4], 4);
    EXPECT_EQ(cfg, 0x9fc10u);
    EXPECT_EQ(std::memcmp(&t[16], "PCMP", 4), 0);
    uint16_t len, entries;
    std::memcpy(&len, &t[16 + 4], 2);
    std::memcpy(&entries, &t[16 + 34], 2);
    EXPECT_EQ(len, t.size() - 16);
    EXPECT_EQ(sum(&t[16], len), 0);
    EXPECT_EQ(entries, cpus + 1 + 1 + 16 + 2);
    // Processor entries: APIC id i, only CPU 0 is the bootstrap processor.
    for (uint32_t i = 0; i < cpus; i++) {
      const uint8_t* e = &t[16 + 44 + i * 20];
      EXPECT_EQ(e[0], 0);
      EXPECT_EQ(e[1], i);
      EXPECT_EQ(e[3], i == 0 ? 3 : 1);
    }
  }
}

}  // namespace
}  // namespace moss::boot
