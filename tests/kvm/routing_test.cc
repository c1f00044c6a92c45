// needs.h's check of a test's declaration against what it starts: which moss command lines
// boot Linux. Host-only.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include "tests/kvm/needs.h"
#include "tests/support/subprocess.h"

namespace moss::test {
namespace {

const std::string kGuests = "/b/tests/guests";

TEST(BootsLinux, TheDefaultKernelOrAnyKernelOutsideTheTestGuestsIsLinux) {
  EXPECT_TRUE(boots_linux({"/b/moss", "run", "--", "true"}, kGuests));
  EXPECT_TRUE(boots_linux({"/b/moss", "run", "--name", "io", "--disk", "a.img", "--", "sh"}, kGuests));
  EXPECT_TRUE(boots_linux({"/b/moss", "run", "--kernel", "/boot/vmlinuz-6.1.0-28-amd64"}, kGuests));
  EXPECT_TRUE(boots_linux({"/b/moss", "run", "--kernel=/boot/vmlinuz"}, kGuests));
  // A directory that only starts like the guests' is not theirs.
  EXPECT_TRUE(boots_linux({"/b/moss", "run", "--kernel", "/b/tests/guests2/serial.bzImage"}, kGuests));
  // --kernel after "--" is the guest command's own argument.
  EXPECT_TRUE(boots_linux({"/b/moss", "run", "--", "echo", "--kernel", kGuests + "/spin.bzImage"}, kGuests));
}

TEST(BootsLinux, FreestandingTestGuestsAndOtherCommandsAreNot) {
  EXPECT_FALSE(boots_linux({"/b/moss", "run", "--kernel", kGuests + "/spin.bzImage", "--initrd", "none"}, kGuests));
  EXPECT_FALSE(boots_linux({"/b/moss", "run", "--kernel=" + kGuests + "/smp.bzImage", "--cpus", "2"}, kGuests));
  EXPECT_FALSE(boots_linux({"/b/moss", "ls"}, kGuests));
  EXPECT_FALSE(boots_linux({"/b/moss", "stop", "io"}, kGuests));
  EXPECT_FALSE(boots_linux({"/b/moss-agent-exec", "--uds", "x", "--", "run"}, kGuests));
  EXPECT_FALSE(boots_linux({"qemu-storage-daemon", "run"}, kGuests));
  EXPECT_FALSE(boots_linux({"/b/moss"}, kGuests));
}

// The spawn check itself (what every Process runs before it forks), on tests declared here: a
// KVM_TEST that starts Linux fails with the sentence that says what to do; starting a
// freestanding guest, or Linux from a LINUX_TEST, is fine.
[[maybe_unused]] const bool kChecked = (check_declared_needs(kGuests), true);

KVM_TEST(SpawnCheck, AKvmTestStartingAFreestandingGuestPasses) {
  check_spawn({"/nonexistent/moss", "run", "--kernel", kGuests + "/spin.bzImage"});
}

LINUX_TEST(SpawnCheck, ALinuxTestMayBootLinux) { check_spawn({"/nonexistent/moss", "run", "--", "true"}); }

KVM_TEST(SpawnCheck, AKvmTestThatBootsLinuxFails) {
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    check_spawn({"/nonexistent/moss", "run", "--", "true"});
  }
  ASSERT_EQ(failures.size(), 1);
  EXPECT_NE(std::string(failures.GetTestPartResult(0).message())
                .find("SpawnCheck.AKvmTestThatBootsLinuxFails boots Linux but is declared KVM_TEST"),
            std::string::npos)
      << failures.GetTestPartResult(0).message();
}

TEST(SpawnCheck, AnUndeclaredTestFails) {
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    check_spawn({"/nonexistent/moss", "run", "--kernel", kGuests + "/spin.bzImage"});
  }
  ASSERT_EQ(failures.size(), 1);
  EXPECT_NE(std::string(failures.GetTestPartResult(0).message()).find("is declared with TEST"), std::string::npos);
}

}  // namespace
}  // namespace moss::test
