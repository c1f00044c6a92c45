#include "broker/host.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

namespace moss::host {
namespace {

TEST(Host, PvmIsKvmPvmWithoutAHardwareModule) {
  auto root = std::filesystem::temp_directory_path() / ("moss-sysfs-" + std::to_string(getpid()));
  std::filesystem::create_directories(root / "module/kvm_pvm");
  EXPECT_TRUE(is_pvm(root.string()));
  std::filesystem::create_directories(root / "module/kvm_amd");
  EXPECT_FALSE(is_pvm(root.string()));
  std::filesystem::remove_all(root);
  EXPECT_FALSE(is_pvm(root.string()));
}

TEST(Host, MemTotalIsReadFromMeminfo) {
  EXPECT_EQ(mem_total_from_meminfo("MemTotal:       24000000 kB\nMemFree: 1 kB\n"), 24000000ull * 1024);
  EXPECT_EQ(mem_total_from_meminfo("nothing here"), 0u);
}

TEST(Host, MissingKvmDeviceSaysHowToCheck) {
  auto r = open_kvm("/nonexistent/kvm");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("does not exist: this host offers no KVM"), std::string::npos);
  EXPECT_NE(r.error().message.find("ls -l /dev/kvm"), std::string::npos);
}

}  // namespace
}  // namespace moss::host
