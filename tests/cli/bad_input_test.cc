// Bad input to `moss run`: each case gets one clear sentence on stderr and a non-zero exit,
// before any VM exists. Runs on any host (no KVM needed).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "tests/support/subprocess.h"

namespace moss::test {
namespace {

using std::chrono::seconds;

std::string moss() { return build_dir() + "/moss"; }
std::string guest(const std::string& name) { return build_dir() + "/tests/guests/" + name + ".bzImage"; }

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("moss-bad-input-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string file(const std::string& name, const std::string& content) {
    auto p = dir_ / name;
    std::ofstream(p) << content;
    return p.string();
  }
  // One line on stderr, starting "moss: ", containing `needle`.
  void expect_one_sentence(const Outcome& o, int code, const std::string& needle) {
    EXPECT_EQ(o.exit_code, code) << o.err;
    EXPECT_NE(o.err.find(needle), std::string::npos) << o.err;
    EXPECT_EQ(o.err.rfind("moss: ", 0), 0u) << o.err;
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
    EXPECT_TRUE(o.out.empty()) << o.out;
  }
  std::filesystem::path dir_;
};

TEST_F(BadInput, MissingKernel) {
  auto o = run({moss(), "run", "--kernel", (dir_ / "nope").string()});
  expect_one_sentence(o, 125, "cannot read the kernel " + (dir_ / "nope").string() + ": No such file or directory");
}

TEST_F(BadInput, KernelThatIsNotABzImage) {
  auto k = file("kernel.txt", std::string(8192, 'x'));
  auto o = run({moss(), "run", "--kernel", k});
  expect_one_sentence(o, 125, "is not a Linux bzImage");
}

TEST_F(BadInput, UnreadableInitrd) {
  auto o = run({moss(), "run", "--kernel", guest("serial"), "--initrd", (dir_ / "missing.cpio").string()});
  expect_one_sentence(o, 125, "cannot read the initrd");
  auto o2 = run({moss(), "run", "--kernel", guest("serial"), "--initrd", dir_.string()});
  expect_one_sentence(o2, 125, "is not a regular file");
}

TEST_F(BadInput, MemoryTooSmallForTheKernel) {
  auto o = run({moss(), "run", "--kernel", guest("serial"), "--initrd", "none", "--mem", "8M"});
  expect_one_sentence(o, 125, "--mem 8 MiB is too small for this kernel; use at least");
}

TEST_F(BadInput, MemoryLargerThanTheHost) {
  auto o = run({moss(), "run", "--kernel", guest("serial"), "--initrd", "none", "--mem", "100000G"});
  expect_one_sentence(o, 125, "of memory");
  EXPECT_NE(o.err.find("is more than this host's"), std::string::npos);
}

TEST_F(BadInput, ZeroVcpus) {
  auto o = run({moss(), "run", "--cpus", "0"});
  expect_one_sentence(o, 2, "--cpus must be at least 1");
}

TEST_F(BadInput, NoKvmDeviceSaysHowToCheck) {
  auto o = run({moss(), "run", "--kernel", guest("serial"), "--initrd", "none", "--mem", "64M"}, seconds(30),
               {{"MOSS_KVM_DEVICE", (dir_ / "kvm").string()}});
  expect_one_sentence(o, 125, "does not exist: this host offers no KVM");
  EXPECT_NE(o.err.find("ls -l /dev/kvm"), std::string::npos);
}

TEST_F(BadInput, UnknownOptionAndCommand) {
  expect_one_sentence(run({moss(), "run", "--frobnicate"}), 2, "unknown option '--frobnicate'");
  expect_one_sentence(run({moss(), "launch"}), 2, "unknown command 'launch'");
}

TEST_F(BadInput, VmNamesThatAreNotPathSafe) {
  expect_one_sentence(run({moss(), "run", "--name", "../etc", "--", "true"}), 2,
                      "'../etc' is not a valid VM name: use 1-64 letters, digits, '.', '_' or '-'");
  expect_one_sentence(run({moss(), "stop", "a/b"}), 2, "'a/b' is not a valid VM name");
  auto o = run({moss(), "stats", "nobody-here"}, seconds(10), {{"MOSS_RUNTIME_DIR", dir_.string()}});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_EQ(o.err, "moss: no VM named nobody-here is running\n");
}

TEST_F(BadInput, DeviceWorkersRunThroughMoss) {
  auto caps = run({moss(), "device", "blk", "--print-capabilities"});
  EXPECT_EQ(caps.exit_code, 0) << caps.err;
  EXPECT_NE(caps.out.find("\"type\": \"block\""), std::string::npos) << caps.out;
  auto bad = run({moss(), "device", "blk", "--disk", (dir_ / "missing.img").string(), "--socket-path",
                  (dir_ / "s.sock").string()});
  EXPECT_EQ(bad.exit_code, 1) << bad.err;
  EXPECT_EQ(bad.err.rfind("moss-blk: ", 0), 0u) << bad.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "s.sock"));
}

TEST_F(BadInput, DisksThatCannotBeUsed) {
  auto missing = (dir_ / "nope.img").string();
  expect_one_sentence(run({moss(), "run", "--kernel", guest("serial"), "--initrd", "none", "--disk", missing}), 125,
                      "cannot open the disk " + missing + " for reading and writing: No such file or directory");
  expect_one_sentence(run({moss(), "run", "--kernel", guest("serial"), "--initrd", "none", "--disk", dir_.string() + ",ro"}),
                      125, "the disk " + dir_.string() + " is neither a regular file nor a block device");
  auto sock = (dir_ / "nobody.sock").string();
  expect_one_sentence(run({moss(), "run", "--kernel", guest("serial"), "--initrd", "none", "--vhost-user-blk", sock}), 125,
                      "cannot connect to the vhost-user backend at " + sock);
  expect_one_sentence(run({moss(), "run", "--disk"}), 2, "--disk needs a value");
  expect_one_sentence(run({moss(), "device", "tape"}), 2, "unknown device kind 'tape'");
}

TEST_F(BadInput, CommandOptionsThatCannotWork) {
  // The test's stdin is not a terminal.
  expect_one_sentence(run({moss(), "run", "-t", "--", "sh"}), 2, "-t needs a terminal on stdin");
  expect_one_sentence(run({moss(), "run", "--env", "NOEQUALS", "--", "true"}), 2, "--env needs KEY=VALUE");
  expect_one_sentence(run({moss(), "run", "--workdir", "tmp", "--", "true"}), 2, "--workdir needs an absolute path");
  auto nodir = (dir_ / "no-such-dir" / "v.sock").string();
  expect_one_sentence(run({moss(), "run", "--kernel", guest("serial"), "--vsock-socket", nodir}), 125,
                      "the directory of the vsock socket " + nodir + " does not exist");
  auto console = (dir_ / "no-such-dir" / "console.log").string();
  expect_one_sentence(run({moss(), "run", "--kernel", guest("serial"), "--console", console, "--", "true"}), 125,
                      "cannot open the --console file " + console);
}

TEST_F(BadInput, VsockWorkerRunsThroughMoss) {
  auto caps = run({moss(), "device", "vsock", "--print-capabilities"});
  EXPECT_EQ(caps.exit_code, 0) << caps.err;
  EXPECT_NE(caps.out.find("\"type\": \"vsock\""), std::string::npos) << caps.out;
  auto bad = run({moss(), "device", "vsock", "--socket-path", (dir_ / "v.sock").string()});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_EQ(bad.err.rfind("moss-vsock: ", 0), 0u) << bad.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "v.sock"));
}

// Finding 3: a runtime directory that is a symlink (to a directory of someone else's) or open
// to others is refused by every verb, with its path and what is wrong.
TEST_F(BadInput, ARuntimeDirectoryThatIsNotPrivatelyOursIsRefused) {
  auto evil = dir_ / "evil";
  std::filesystem::create_directories(evil);
  std::filesystem::permissions(evil, std::filesystem::perms::all);
  auto link = dir_ / "rt";
  std::filesystem::create_directory_symlink(evil, link);
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", link.string()}};
  std::string why = "the runtime directory " + link.string() + " is a symbolic link, which moss does not follow";
  expect_one_sentence(run({moss(), "run", "--kernel", guest("serial"), "--", "true"}, seconds(20), env), 125, why);
  expect_one_sentence(run({moss(), "ls"}, seconds(10), env), 125, why);
  env["MOSS_RUNTIME_DIR"] = evil.string();
  expect_one_sentence(run({moss(), "ls"}, seconds(10), env), 125,
                      "the runtime directory " + evil.string() + " is writable by other users (mode 0777)");
  EXPECT_TRUE(std::filesystem::is_empty(evil));
}

}  // namespace
}  // namespace moss::test
