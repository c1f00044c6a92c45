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
  EXPECT_EQ(o.exit_code, 125);
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

// A FIFO (or anything else that blocks on open) as the kernel, initrd or console must not hang
// moss: it is refused at once, in one sentence.
TEST_F(BadInput, FifosAsKernelInitrdOrConsoleAreRefusedAtOnce) {
  std::string fifo = (dir_ / "fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto k = run({moss(), "run", "--kernel", fifo, "--", "true"}, seconds(20));
  EXPECT_FALSE(k.timed_out);
  expect_one_sentence(k, 125, "the kernel " + fifo + " is not a regular file (it is a FIFO)");
  auto i = run({moss(), "run", "--kernel", guest("serial"), "--initrd", fifo, "--", "true"}, seconds(20));
  EXPECT_FALSE(i.timed_out);
  expect_one_sentence(i, 125, "the initrd " + fifo + " is not a regular file (it is a FIFO)");
  // A FIFO is a fine console, but only with a reader: without one, say so rather than wait.
  auto c = run({moss(), "run", "--kernel", guest("serial"), "--console", fifo, "--", "true"}, seconds(20));
  EXPECT_FALSE(c.timed_out);
  expect_one_sentence(c, 125, "nobody is reading the FIFO " + fifo + " given to --console; start its reader first");
  auto d = run({moss(), "run", "--kernel", guest("serial"), "--console", dir_.string(), "--", "true"}, seconds(20));
  expect_one_sentence(d, 125, "cannot open the --console file " + dir_.string());
}

// A run that fails before its VM starts leaves none of its files behind: the vsock socket it
// bound, its runtime directory's CID lease and vsock directory, a --console file it created.
TEST_F(BadInput, AFailedStartLeavesNoFileBehind) {
  std::string fifo = (dir_ / "kernel").string(), sock = (dir_ / "vs.sock").string(),
              console = (dir_ / "console.log").string(), rt = (dir_ / "rt").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto o = run({moss(), "run", "--kernel", fifo, "--vsock-socket", sock, "--console", console, "--", "true"}, seconds(20),
               {{"MOSS_RUNTIME_DIR", rt}});
  expect_one_sentence(o, 125, "the kernel " + fifo + " is not a regular file");
  EXPECT_FALSE(std::filesystem::exists(sock));
  EXPECT_FALSE(std::filesystem::exists(console));
  auto d = run({moss(), "run", "--kernel", fifo, "--", "true"}, seconds(20), {{"MOSS_RUNTIME_DIR", rt}});
  expect_one_sentence(d, 125, "is not a regular file");
  for (const auto& e : std::filesystem::recursive_directory_iterator(rt)) {
    EXPECT_TRUE(e.is_directory() && e.path().filename() == "cids") << e.path() << " was left behind";
  }
  // The user's own file where the socket should go is refused, and left alone.
  std::string taken = file("taken.sock", "mine");
  auto t = run({moss(), "run", "--kernel", guest("serial"), "--vsock-socket", taken, "--", "true"}, seconds(20),
               {{"MOSS_RUNTIME_DIR", rt}});
  expect_one_sentence(t, 125, taken + " exists and is not a socket; remove it or choose another path");
  std::ifstream in(taken);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "mine");
}

TEST_F(BadInput, StatsFileMustBeARegularFileAndAFifoStaysOne) {
  std::string fifo = (dir_ / "stats.fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto o = run({moss(), "run", "--kernel", guest("serial"), "--stats", fifo, "--", "true"}, seconds(20));
  expect_one_sentence(o, 125, "the --stats file " + fifo + " is a FIFO, which moss would replace; give the path of a regular file");
  struct stat st;
  ASSERT_EQ(lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced";
  auto nodir = (dir_ / "no-such-dir" / "stats.json").string();
  expect_one_sentence(run({moss(), "run", "--kernel", guest("serial"), "--stats", nodir, "--", "true"}, seconds(20)), 125,
                      "the directory of the --stats file " + nodir + " does not exist");
}

TEST_F(BadInput, ControlVerbsForAVmThatIsNotRunningFailAs125) {
  for (const char* verb : {"stats", "stop", "pause", "resume"}) {
    auto o = run({moss(), verb, "nobody-here"}, seconds(10), {{"MOSS_RUNTIME_DIR", dir_.string()}});
    expect_one_sentence(o, 125, "no VM named nobody-here is running");
  }
  // No runtime directory at all: still no VM, and nothing is created by looking.
  std::string none = (dir_ / "none").string();
  expect_one_sentence(run({moss(), "stop", "x"}, seconds(10), {{"MOSS_RUNTIME_DIR", none}}), 125,
                      "no VM named x is running");
  auto ls = run({moss(), "ls"}, seconds(10), {{"MOSS_RUNTIME_DIR", none}});
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_EQ(ls.out.rfind("NAME", 0), 0u) << ls.out;
  EXPECT_FALSE(std::filesystem::exists(none));
}

// Finding 3: a runtime directory that is a symlink (to a directory of someone else's) or
// writable by others is refused by every verb, with its path and what is wrong.
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
  expect_one_sentence(run({moss(), "stop", "web"}, seconds(10), env), 125, why);
  env["MOSS_RUNTIME_DIR"] = evil.string();
  expect_one_sentence(run({moss(), "stats", "web"}, seconds(10), env), 125,
                      "the runtime directory " + evil.string() + " is writable by other users (mode 0777)");
  EXPECT_TRUE(std::filesystem::is_empty(evil));
}

// Every verb's --help is its usage on stdout, with status 0.
TEST_F(BadInput, EveryVerbHasHelp) {
  const std::vector<std::vector<std::string>> cases = {
      {"run", "--help"}, {"run", "-h"}, {"ls", "--help"}, {"stats", "--help"}, {"stop", "--help"}, {"pause", "--help"},
      {"resume", "--help"}, {"device", "--help"}, {"device", "blk", "--help"}, {"device", "vsock", "--help"},
      {"help", "run"}, {"--help"}};
  for (const auto& c : cases) {
    std::vector<std::string> argv{moss()};
    argv.insert(argv.end(), c.begin(), c.end());
    auto o = run(argv, seconds(10));
    std::string shown = c[0] + (c.size() > 1 ? " " + c[1] : "");
    EXPECT_EQ(o.exit_code, 0) << shown << ": " << o.err;
    EXPECT_TRUE(o.err.empty()) << shown << ": " << o.err;
    EXPECT_EQ(o.out.rfind("usage: ", 0), 0u) << shown << ": " << o.out;
  }
  EXPECT_EQ(run({moss(), "run", "--help"}).out.rfind("usage: moss run ", 0), 0u);
  EXPECT_EQ(run({moss(), "stop", "-h"}).out.rfind("usage: moss stop NAME", 0), 0u);
}

}  // namespace
}  // namespace moss::test
