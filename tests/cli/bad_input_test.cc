// Bad input to `moss run`: each case gets one clear sentence on stderr and a non-zero exit,
// before any VM exists. Runs on any host (no KVM needed).
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
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

// A vhost-user backend listening at `path` as `uid` (our own when it is ours), in a child that
// accepts one connection and reports how many bytes it received before the other end closed.
struct Listener {
  pid_t pid = -1;
  int result = -1;  // Read end: the byte count as text, or "none" if nobody connected.

  static Listener start(const std::string& path, uid_t uid) {
    Listener l;
    int ready[2], result[2];
    EXPECT_EQ(pipe2(ready, O_CLOEXEC), 0);
    EXPECT_EQ(pipe2(result, O_CLOEXEC), 0);
    l.pid = fork();
    if (l.pid == 0) {
      if (uid != geteuid() && (setgroups(0, nullptr) != 0 || setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0)) _exit(1);
      int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
      if (bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(s, 4) != 0) _exit(2);
      (void)!write(ready[1], "r", 1);
      pollfd p{s, POLLIN, 0};
      std::string report = "none";
      if (poll(&p, 1, 60000) == 1) {
        int c = accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
        size_t total = 0;
        char buf[4096];
        ssize_t n;
        while (c >= 0 && (n = read(c, buf, sizeof buf)) > 0) total += static_cast<size_t>(n);
        report = std::to_string(total);
      }
      (void)!write(result[1], report.data(), report.size());
      _exit(0);
    }
    close(ready[1]);
    close(result[1]);
    char c = 0;
    EXPECT_EQ(read(ready[0], &c, 1), 1) << "the listener did not start";
    close(ready[0]);
    l.result = result[0];
    return l;
  }
  // What the listener received, once the connection is closed.
  std::string received() {
    std::string out;
    char buf[64];
    ssize_t n;
    while ((n = read(result, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    close(result);
    waitpid(pid, nullptr, 0);
    return out;
  }
};

// A socket another user put where the backend was expected (/tmp/qsd.sock) must not get the
// guest's memory: moss refuses it right after connecting, before sending anything and before
// any VM process exists.
TEST_F(BadInput, VhostUserBackendOfAnotherUserIsRefusedBeforeAnythingIsSent) {
  if (geteuid() != 0) GTEST_SKIP() << "SKIP: listening as another user (nobody) takes root";
  const uid_t nobody = 65534;
  auto shared = dir_ / "shared";
  std::filesystem::create_directories(shared);
  chmod(shared.c_str(), 0777);
  auto sock = (shared / "qsd.sock").string();
  Listener l = Listener::start(sock, nobody);
  expect_one_sentence(run({moss(), "run", "--kernel", guest("serial"), "--initrd", "none", "--vhost-user-blk", sock}), 125,
                      "the vhost-user backend at " + sock + " runs as uid 65534, neither you (uid 0) nor root, and would "
                      "be given the guest's memory; if you trust that user, give --vhost-user-blk " + sock +
                      ",peer-uid=65534");
  EXPECT_EQ(l.received(), "0");  // Connected, and sent nothing.

  // The user's explicit trust: accepted (the run then stops at the missing KVM device).
  std::filesystem::remove(sock);
  Listener trusted = Listener::start(sock, nobody);
  expect_one_sentence(run({moss(), "run", "--kernel", guest("serial"), "--initrd", "none", "--vhost-user-blk",
                           sock + ",peer-uid=65534"},
                          seconds(30), {{"MOSS_KVM_DEVICE", (dir_ / "kvm").string()}}),
                      125, "this host offers no KVM");
  EXPECT_EQ(trusted.received(), "0");
}

// A backend of our own passes the check: the run goes on to the next thing it needs (here, a
// KVM device that is not there).
TEST_F(BadInput, VhostUserBackendOfOurOwnIsAccepted) {
  auto sock = (dir_ / "qsd.sock").string();
  Listener l = Listener::start(sock, geteuid());
  expect_one_sentence(run({moss(), "run", "--kernel", guest("serial"), "--initrd", "none", "--vhost-user-blk", sock},
                          seconds(30), {{"MOSS_KVM_DEVICE", (dir_ / "kvm").string()}}),
                      125, "this host offers no KVM");
  EXPECT_EQ(l.received(), "0");
  expect_one_sentence(run({moss(), "run", "--vhost-user-blk", sock + ",peer-uid=me"}), 2,
                      "--vhost-user-blk " + sock + ",peer-uid=me: peer-uid needs a numeric user id, not 'me'");
}

// One disk, one writer: the same file twice in one run (under any name), or a disk another
// process uses (here `moss device blk`), is refused with one sentence before any VM starts.
TEST_F(BadInput, ADiskGivenTwiceOrUsedElsewhereIsRefused) {
  auto disk = file("disk.img", std::string(1 << 20, '\0'));
  auto other_name = (dir_ / "." / "disk.img").string();
  const std::vector<std::string> boot = {moss(), "run", "--kernel", guest("serial"), "--initrd", "none"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> argv = boot;
    argv.insert(argv.end(), more.begin(), more.end());
    return run(argv, seconds(30), {{"MOSS_KVM_DEVICE", (dir_ / "kvm").string()}});
  };
  expect_one_sentence(with({"--disk", disk, "--disk", disk}), 125,
                      "the disk " + disk + " is the same file as the disk " + disk + " given before it; give each disk once");
  expect_one_sentence(with({"--disk", disk, "--disk", other_name + ",ro"}), 125,
                      "the disk " + other_name + " is the same file as the disk " + disk);

  // A worker of its own holds it: moss run is refused, before it looks for KVM.
  auto sock = (dir_ / "blk.sock").string();
  Process worker({moss(), "device", "blk", "--socket-path", sock, "--disk", disk});
  for (int i = 0; i < 1000 && !std::filesystem::exists(sock); i++) usleep(5000);
  ASSERT_TRUE(std::filesystem::exists(sock)) << "moss device blk did not start";
  const std::string in_use = "the disk " + disk + " is in use by another process (another moss or QEMU holds a lock on it)";
  expect_one_sentence(with({"--disk", disk}), 125, in_use);
  expect_one_sentence(with({"--disk", disk + ",ro"}), 125, in_use);
  kill(worker.pid(), SIGTERM);
  EXPECT_EQ(worker.wait(seconds(10)).exit_code, 0);
  // Free again: the run gets as far as KVM.
  expect_one_sentence(with({"--disk", disk}), 125, "this host offers no KVM");
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
