#include "vcpu/bzimage.h"

#include <gtest/gtest.h>

#include <cstring>

namespace moss::boot {
namespace {

// A synthetic bzImage: boot sector signature, "HdrS", protocol 2.15, 64-bit entry.
std::vector<uint8_t> fake_bzimage(size_t size = 0x10000) {
  std::vector<uint8_t> img(size, 0);
  img[0x1f1] = 1;  // setup_sects: one sector of setup after the boot sector.
  img[0x1fe] = 0x55;
  img[0x1ff] = 0xaa;
  img[0x200] = 0xeb;
  img[0x201] = 0x6a;  // Jump over the header to 0x26c.
  std::memcpy(&img[0x202], "HdrS", 4);
  uint16_t ver = 0x020f;
  std::memcpy(&img[0x206], &ver, 2);
  img[0x211] = 0x01;  // LOADED_HIGH.
  uint32_t initrd_max = 0x7fffffff;
  std::memcpy(&img[0x22c], &initrd_max, 4);
  uint16_t xlf = 0x1;
  std::memcpy(&img[0x236], &xlf, 2);
  uint32_t cmdline_size = 2047;
  std::memcpy(&img[0x238], &cmdline_size, 4);
  uint32_t init_size = 0x800000;
  std::memcpy(&img[0x260], &init_size, 4);
  return img;
}

TEST(ParseBzImage, AcceptsAValidHeader) {
  auto img = fake_bzimage();
  auto k = parse_bzimage(img);
  ASSERT_TRUE(k.ok()) << k.error().message;
  EXPECT_EQ(k->protocol, 0x020f);
  EXPECT_EQ(k->setup_bytes, 1024u);
  EXPECT_EQ(k->kernel_size, img.size() - 1024);
  EXPECT_EQ(k->init_size, 0x800000u);
  EXPECT_FALSE(k->is_linux);  // No kernel_version string.
}

TEST(ParseBzImage, RecognisesALinuxVersionString) {
  auto img = fake_bzimage();
  uint16_t ptr = 0x300 - 0x200;
  std::memcpy(&img[0x20e], &ptr, 2);
  std::memcpy(&img[0x300], "6.1.0-test", 11);
  auto k = parse_bzimage(img);
  ASSERT_TRUE(k.ok());
  EXPECT_TRUE(k->is_linux);
  EXPECT_EQ(k->kernel_version, "6.1.0-test");
}

TEST(ParseBzImage, RejectsNonKernels) {
  std::vector<uint8_t> text(8192, 'x');
  auto r = parse_bzimage(text);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("not a Linux bzImage"), std::string::npos);
  EXPECT_FALSE(parse_bzimage(std::vector<uint8_t>(100, 0)).ok());
}

TEST(ParseBzImage, RejectsOldProtocolAndMissing64BitEntry) {
  auto img = fake_bzimage();
  uint16_t old = 0x0205;
  std::memcpy(&img[0x206], &old, 2);
  EXPECT_NE(parse_bzimage(img).error().message.find("too old"), std::string::npos);
  img = fake_bzimage();
  img[0x236] = 0;
  EXPECT_NE(parse_bzimage(img).error().message.find("64-bit entry"), std::string::npos);
  img = fake_bzimage();
  img[0x211] = 0;
  EXPECT_NE(parse_bzimage(img).error().message.find("zImage"), std::string::npos);
}

TEST(ParseBzImage, ReadsOnlyTheHeadOfALargeFile) {
  auto img = fake_bzimage();
  auto k = parse_bzimage(std::span<const uint8_t>(img).first(2048), 10 << 20);
  ASSERT_TRUE(k.ok()) << k.error().message;
  EXPECT_EQ(k->kernel_size, (10u << 20) - 1024);
  EXPECT_FALSE(parse_bzimage(std::span<const uint8_t>(img).first(2048), 300ull << 20).ok());
}

TEST(ParseBzImage, RejectsSetupLargerThanTheFile) {
  auto img = fake_bzimage(0x1000);  // setup_sects 200 would need 100 KiB.
  img[0x1f1] = 200;
  EXPECT_FALSE(parse_bzimage(img).ok());
}

TEST(PlanBoot, PlacesInitrdAtTopOfLowMemoryAndBuildsE820) {
  auto k = parse_bzimage(fake_bzimage());
  ASSERT_TRUE(k.ok());
  auto plan = plan_boot(*k, 256ull << 20, 5000, 20);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->initrd_gpa, (256ull << 20) - 8192);  // 5000 bytes, rounded down to a page.
  EXPECT_EQ(plan->entry64, 0x100200u);
  ASSERT_EQ(plan->e820.size(), 4u);
  EXPECT_EQ(plan->e820[3].addr, 0x100000u);
  EXPECT_EQ(plan->e820[3].addr + plan->e820[3].size, 256ull << 20);
}

TEST(PlanBoot, SplitsMemoryAroundThePciHole) {
  auto k = parse_bzimage(fake_bzimage());
  auto plan = plan_boot(*k, 4ull << 30, 0, 0);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->e820.size(), 5u);
  EXPECT_EQ(plan->e820[4].addr, 4ull << 30);
  EXPECT_EQ(plan->e820[4].size, 1ull << 30);
}

TEST(PlanBoot, RefusesTooLittleMemoryWithTheAmountNeeded) {
  auto k = parse_bzimage(fake_bzimage());
  auto r = plan_boot(*k, 16ull << 20, 0, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("is too small for this kernel; use at least"), std::string::npos) << r.error().message;
  auto r2 = plan_boot(*k, 64ull << 20, 100ull << 20, 0);
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.error().message.find("and initrd"), std::string::npos);
}

TEST(PlanBoot, RefusesOverlongCommandLine) {
  auto k = parse_bzimage(fake_bzimage());
  EXPECT_FALSE(plan_boot(*k, 256ull << 20, 0, 5000).ok());
}

TEST(BootParams, CarriesHeaderInitrdCmdlineAndE820) {
  auto k = parse_bzimage(fake_bzimage());
  auto plan = plan_boot(*k, 256ull << 20, 4096, 10);
  ASSERT_TRUE(plan.ok());
  auto zp = build_boot_params(*k, *plan);
  ASSERT_EQ(zp.size(), 4096u);
  EXPECT_EQ(zp[0x210], 0xff);  // type_of_loader.
  uint32_t v;
  std::memcpy(&v, &zp[0x202], 4);
  EXPECT_EQ(v, 0x53726448u);
  std::memcpy(&v, &zp[0x228], 4);
  EXPECT_EQ(v, kCmdlineGpa);
  std::memcpy(&v, &zp[0x218], 4);
  EXPECT_EQ(v, plan->initrd_gpa);
  EXPECT_EQ(zp[0x1e8], plan->e820.size());
  uint64_t addr;
  std::memcpy(&addr, &zp[0x2d0 + 3 * 20], 8);
  EXPECT_EQ(addr, 0x100000u);
}

}  // namespace
}  // namespace moss::boot
