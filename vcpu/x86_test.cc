#include "vcpu/x86.h"

#include <gtest/gtest.h>

namespace moss::x86 {
namespace {

TEST(Cpuid, EachVcpuGetsItsOwnApicIdAndTheHypervisorBit) {
  std::vector<kvm_cpuid_entry2> supported(3);
  supported[0].function = 1;
  supported[0].ebx = 0xff00ffff;
  supported[1].function = 0xb;
  supported[1].index = 1;
  supported[2].function = 7;
  supported[2].ebx = 0x1234;
  auto c = cpuid_for_vcpu(supported, 1, 2);
  EXPECT_EQ(c[0].ebx >> 24, 1u);
  EXPECT_EQ((c[0].ebx >> 16) & 0xff, 2u);
  EXPECT_TRUE(c[0].ecx & (1u << 31));
  EXPECT_TRUE(c[0].edx & (1u << 28));
  EXPECT_EQ(c[1].edx, 1u);
  EXPECT_EQ(c[2].ebx, 0x1234u);  // Other leaves pass through.
}

}  // namespace
}  // namespace moss::x86
