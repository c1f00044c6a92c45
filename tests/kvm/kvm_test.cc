// Tests that run real VMs in moss. They need /dev/kvm, and each declares what else
// (tests/kvm/needs.h): KVM_TEST runs on any KVM (PVM included), LINUX_TEST needs KVM that can
// run Linux (hardware virtualization, or the nested test host: see tests/kvm/run-kvm-test.sh).
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <sstream>
#include <thread>
#include <utility>

#include <capnp/pretty-print.h>
#include <capnp/any.h>
#include <capnp/serialize.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <algorithm>

#include "ipc/channel.h"
#include "ipc/vcpu.capnp.h"
#include "ipc/vhost_user_device.h"
#include "tests/kvm/needs.h"
#include "tests/support/subprocess.h"

namespace moss::test {
namespace {

using std::chrono::seconds;

std::string moss() { return build_dir() + "/moss"; }
std::string guests_dir() { return build_dir() + "/tests/guests"; }
std::string guest(const std::string& name) { return guests_dir() + "/" + name + ".bzImage"; }

// Every moss a test starts is checked against the test's declaration.
[[maybe_unused]] const bool kNeedsChecked = (check_declared_needs(guests_dir()), true);

void require_kvm() {
  if (access("/dev/kvm", R_OK | W_OK) != 0) {
    GTEST_SKIP() << "SKIP: /dev/kvm is not available on this host (" << strerror(errno)
                 << "); run this test through tests/kvm/run-kvm-test.sh, which uses the nested test host";
  }
}

Outcome run_guest(const std::string& name, std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {moss(), "run", "--kernel", guest(name), "--initrd", "none", "--mem", "64M"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return run(argv, seconds(60));
}

std::string describe(const Outcome& o) {
  return "exit " + std::to_string(o.exit_code) + (o.timed_out ? " (timed out)" : "") + "\n--- stdout:\n" + o.out +
         "\n--- stderr:\n" + o.err;
}

KVM_TEST(FreestandingGuest, SerialOutputReachesStdout) {
  require_kvm();
  auto o = run_guest("serial");
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("moss-test-guest: serial ok\n"), std::string::npos) << describe(o);
}

// --stats FILE: one JSON object (ipc/json.capnp RunFigures through JsonCodec) with every
// figure, the steps in the order they came; a guest that runs no agent leaves those at 0.
KVM_TEST(FreestandingGuest, StatsFileHasEveryFigureAsJson) {
  require_kvm();
  std::string file = "/tmp/moss-stats-" + std::to_string(getpid()) + ".json";
  auto o = run_guest("serial", {"--stats", file});
  ASSERT_EQ(o.exit_code, 0) << describe(o);
  std::ifstream f(file);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::filesystem::remove(file);
  ASSERT_TRUE(text.starts_with("{") && text.ends_with("}\n")) << text;
  std::map<std::string, double> v;
  for (const char* key : {"spawn_ns", "first_run_ns", "first_exit_ns", "agent_connected_ns", "command_exited_ns",
                          "broker_maxrss_kib", "broker_cpu_ms", "vcpu_maxrss_kib", "vcpu_cpu_ms"}) {
    std::string quoted = std::string("\"") + key + "\": ";
    size_t at = text.find(quoted);
    ASSERT_NE(at, std::string::npos) << key << " missing from " << text;
    v[key] = std::strtod(text.c_str() + at + quoted.size(), nullptr);
  }
  EXPECT_GT(v["spawn_ns"], 0);
  EXPECT_GE(v["first_run_ns"], v["spawn_ns"]);
  EXPECT_EQ(v["agent_connected_ns"], 0);  // The serial guest has no agent.
  EXPECT_GT(v["broker_maxrss_kib"], 0);
  EXPECT_GT(v["vcpu_maxrss_kib"], 0);
}

KVM_TEST(FreestandingGuest, I8042ResetEndsTheVmCleanly) {
  require_kvm();
  auto o = run_guest("reset");
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("resetting"), std::string::npos) << describe(o);
  EXPECT_EQ(o.out.find("did not happen"), std::string::npos) << describe(o);
  // With a command expected, a reset before any status is an error that says so.
  auto with_cmd = run_guest("reset", {"--", "true"});
  EXPECT_EQ(with_cmd.exit_code, 125) << describe(with_cmd);
  EXPECT_NE(with_cmd.err.find("reset itself (i8042) before the command reported its exit status"), std::string::npos)
      << describe(with_cmd);
}

KVM_TEST(FreestandingGuest, E820MapDescribesGuestMemory) {
  require_kvm();
  auto o = run_guest("e820");
  ASSERT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("e820 0000000000000000 000000000009fc00 0000000000000001\n"
                       "e820 000000000009fc00 0000000000000400 0000000000000002\n"
                       "e820 00000000000f0000 0000000000010000 0000000000000002\n"
                       "e820 0000000000100000 0000000003f00000 0000000000000001\n"),
            std::string::npos)
      << describe(o);
  EXPECT_NE(o.out.find("top of RAM is backed"), std::string::npos) << describe(o);
}

KVM_TEST(FreestandingGuest, E820MapSplitsMemoryAroundThePciHole) {
  require_kvm();
  auto o = run({moss(), "run", "--kernel", guest("e820"), "--initrd", "none", "--mem", "3328M"}, seconds(60));
  ASSERT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("e820 0000000000100000 00000000bff00000 0000000000000001\n"
                       "e820 0000000100000000 0000000010000000 0000000000000001\n"),
            std::string::npos)
      << describe(o);
}

KVM_TEST(FreestandingGuest, LongModeEntryFollowsTheBootProtocol) {
  require_kvm();
  auto o = run_guest("longmode", {"--append", "moss.test=longmode"});
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("long mode ok"), std::string::npos) << describe(o);
  EXPECT_NE(o.out.find("moss.test=longmode"), std::string::npos) << describe(o);
}

KVM_TEST(FreestandingGuest, SecondVcpuStartsBySipi) {
  require_kvm();
  auto o = run_guest("smp", {"--cpus", "2"});
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("mptable cpus 0000000000000002"), std::string::npos) << describe(o);
  EXPECT_NE(o.out.find("second vCPU started"), std::string::npos) << describe(o);
}

KVM_TEST(FreestandingGuest, SmpCheckFailsWithOneVcpu) {
  require_kvm();
  // The same guest with one vCPU: the SIPI reaches nobody, and the guest's status says so.
  auto o = run_guest("smp", {"--cpus", "1"});
  EXPECT_EQ(o.exit_code, 22) << describe(o);
  EXPECT_NE(o.out.find("mptable cpus 0000000000000001"), std::string::npos) << describe(o);
}

KVM_TEST(FreestandingGuest, AcpiS5WritePowersTheVmOff) {
  require_kvm();
  auto o = run_guest("poweroff");
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("RSDP at 00000000000f0000"), std::string::npos) << describe(o);
  EXPECT_NE(o.out.find("sleep control port 0000000000000600"), std::string::npos) << describe(o);
  EXPECT_EQ(o.out.find("did not power off"), std::string::npos) << describe(o);
  // With a command expected, powering off before any status is an error that says so.
  auto with_cmd = run_guest("poweroff", {"--", "true"});
  EXPECT_EQ(with_cmd.exit_code, 125) << describe(with_cmd);
  EXPECT_NE(with_cmd.err.find("the guest powered off (ACPI S5) before the command reported its exit status"),
            std::string::npos)
      << describe(with_cmd);
}

KVM_TEST(FreestandingGuest, TooManyVcpusIsRefused) {
  require_kvm();
  auto o = run_guest("serial", {"--cpus", "4000"});
  EXPECT_EQ(o.exit_code, 125) << describe(o);
  EXPECT_NE(o.err.find("is more than this host's KVM allows"), std::string::npos) << describe(o);
}

// Starts the spin guest and returns once it runs; the vcpu process is moss's only child.
// The moss-ROLE child of the broker `moss_pid`, or -1.
pid_t child_named(pid_t moss_pid, const std::string& exe_name) {
  for (pid_t kid : children_of(moss_pid)) {
    std::error_code ec;
    auto exe = std::filesystem::read_symlink("/proc/" + std::to_string(kid) + "/exe", ec).string();
    if (exe.size() >= exe_name.size() && exe.compare(exe.size() - exe_name.size(), exe_name.size(), exe_name) == 0) {
      return kid;
    }
  }
  return -1;
}

// The vcpu process of a VM running the spin guest. Its other children are the device workers
// (every VM has a vsock worker).
pid_t start_spinning(Process& p) {
  EXPECT_TRUE(p.wait_for_output("spinning", seconds(60))) << p.out();
  EXPECT_GT(child_named(p.pid(), "moss-vsock"), 0);
  return child_named(p.pid(), "moss-vcpu");
}

KVM_TEST(VmProcess, VcpuRunsInItsOwnProcess) {
  require_kvm();
  Process p({moss(), "run", "--kernel", guest("spin"), "--initrd", "none", "--mem", "64M"});
  pid_t vcpu = start_spinning(p);
  ASSERT_GT(vcpu, 0);
  std::string exe = std::filesystem::read_symlink("/proc/" + std::to_string(vcpu) + "/exe").string();
  EXPECT_NE(exe.find("moss-vcpu"), std::string::npos) << exe;
  kill(p.pid(), SIGTERM);
  auto o = p.wait(seconds(10));
  EXPECT_EQ(o.exit_code, 128 + SIGTERM) << describe(o);
}

KVM_TEST(VmProcess, KilledVcpuProcessIsNamedAndMossFails) {
  require_kvm();
  Process p({moss(), "run", "--kernel", guest("spin"), "--initrd", "none", "--mem", "64M"});
  pid_t vcpu = start_spinning(p);
  ASSERT_GT(vcpu, 0);
  ASSERT_EQ(kill(vcpu, SIGKILL), 0);
  auto o = p.wait(seconds(10));
  EXPECT_EQ(o.exit_code, 125) << describe(o);
  EXPECT_NE(o.err.find("the vcpu process (pid " + std::to_string(vcpu) + ") was killed by signal 9 (SIGKILL)"),
            std::string::npos)
      << describe(o);
  EXPECT_FALSE(process_exists(vcpu));
}

// A guest that never connects its agent (here: no Linux, no moss-init) does not leave moss
// run -- CMD waiting forever: it fails at --boot-timeout, saying why and how far the guest
// got (the console's last lines), and leaves no process.
KVM_TEST(VmProcess, AGuestWhoseAgentNeverConnectsFailsAtTheBootTimeout) {
  require_kvm();
  Process p({moss(), "run", "--kernel", guest("spin"), "--initrd", "none", "--mem", "64M", "--boot-timeout", "3", "--",
             "true"});
  pid_t vcpu = child_named(p.pid(), "moss-vcpu");
  for (int i = 0; i < 100 && vcpu <= 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    vcpu = child_named(p.pid(), "moss-vcpu");
  }
  auto o = p.wait(seconds(60));
  EXPECT_EQ(o.exit_code, 125) << describe(o);
  EXPECT_NE(o.err.find("moss: the guest's agent did not connect within 3 s of the start (--boot-timeout), so the "
                       "command never ran; the VM was stopped\n"),
            std::string::npos)
      << describe(o);
  EXPECT_NE(o.err.find("moss: the guest console's last lines:\n"), std::string::npos) << describe(o);
  EXPECT_NE(o.err.find("spinning"), std::string::npos) << describe(o);
  EXPECT_EQ(o.out, "");  // With a command, the console is not stdout.
  EXPECT_GT(o.seconds, 2.5);
  ASSERT_GT(vcpu, 0);
  EXPECT_FALSE(process_exists(vcpu));
}

KVM_TEST(VmProcess, CtrlCStopsTheVmAndLeavesNoProcess) {
  require_kvm();
  Process p({moss(), "run", "--kernel", guest("spin"), "--initrd", "none", "--mem", "64M"});
  pid_t vcpu = start_spinning(p);
  ASSERT_GT(vcpu, 0);
  // What a terminal's Ctrl-C does: SIGINT to the foreground process group (moss's).
  kill(-p.pid(), SIGINT);
  auto o = p.wait(seconds(10));
  EXPECT_EQ(o.exit_code, 130) << describe(o);
  EXPECT_NE(o.err.find("the VM was stopped (INT)"), std::string::npos) << describe(o);
  EXPECT_FALSE(process_exists(vcpu));
}

KVM_TEST(VmProcess, BrokerDeathTakesTheVcpuProcessWithIt) {
  require_kvm();
  Process p({moss(), "run", "--kernel", guest("spin"), "--initrd", "none", "--mem", "64M"});
  pid_t vcpu = start_spinning(p);
  ASSERT_GT(vcpu, 0);
  kill(p.pid(), SIGKILL);
  p.wait(seconds(10));
  for (int i = 0; i < 100 && process_exists(vcpu); i++) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(process_exists(vcpu)) << "the vcpu process outlived the broker";
}

KVM_TEST(VmProcess, NamedVmIsListedQueriedAndStoppedFromAnotherProcess) {
  require_kvm();
  auto rt = std::filesystem::temp_directory_path() / ("moss-rt-" + std::to_string(getpid()));
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", rt.string()}};
  std::filesystem::create_directories(rt);
  std::string img = (rt / "d.img").string();
  { std::ofstream(img) << std::string(1 << 20, 'd'); }
  Process p({moss(), "run", "--name", "spin-1", "--kernel", guest("spin"), "--initrd", "none", "--mem", "64M", "--disk", img},
            env);
  ASSERT_TRUE(p.wait_for_output("spinning", seconds(60))) << p.out();
  pid_t vcpu = -1;
  for (pid_t kid : children_of(p.pid())) {
    if (std::filesystem::read_symlink("/proc/" + std::to_string(kid) + "/exe").string().find("moss-vcpu") != std::string::npos) vcpu = kid;
  }
  ASSERT_GT(vcpu, 0);
  auto ls = run({moss(), "ls"}, seconds(10), env);
  EXPECT_EQ(ls.exit_code, 0) << describe(ls);
  EXPECT_NE(ls.out.find("spin-1               running"), std::string::npos) << describe(ls);
  auto st = run({moss(), "stats", "spin-1"}, seconds(10), env);
  EXPECT_EQ(st.exit_code, 0) << describe(st);
  EXPECT_NE(st.out.find("\"role\": \"vcpu\", \"pid\": " + std::to_string(vcpu)), std::string::npos) << describe(st);
  EXPECT_NE(st.out.find("\"mem_bytes\": 67108864"), std::string::npos) << describe(st);
  // The disk worker answers over its control channel (ipc/worker.capnp).
  EXPECT_NE(st.out.find("\"worker\": \"blk worker for " + img + "\""), std::string::npos) << describe(st);
  EXPECT_NE(st.out.find("\"read_requests\": 0"), std::string::npos) << describe(st);
  // The name is taken while it runs; a bad name is refused before anything starts.
  auto dup = run({moss(), "run", "--name", "spin-1", "--kernel", guest("spin"), "--initrd", "none", "--mem", "64M"},
                 seconds(30), env);
  EXPECT_EQ(dup.exit_code, 125) << describe(dup);
  EXPECT_NE(dup.err.find("a VM named spin-1 is already running"), std::string::npos) << describe(dup);
  auto stop = run({moss(), "stop", "spin-1"}, seconds(30), env);
  EXPECT_EQ(stop.exit_code, 0) << describe(stop);
  auto o = p.wait(seconds(10));
  EXPECT_EQ(o.exit_code, 128 + SIGTERM) << describe(o);
  EXPECT_NE(o.err.find("the VM was stopped (moss stop spin-1)"), std::string::npos) << describe(o);
  EXPECT_FALSE(process_exists(vcpu));
  EXPECT_FALSE(std::filesystem::exists(rt / "spin-1.sock"));
  auto gone = run({moss(), "stats", "spin-1"}, seconds(10), env);
  EXPECT_EQ(gone.exit_code, 125) << describe(gone);
  EXPECT_NE(gone.err.find("no VM named spin-1 is running"), std::string::npos) << describe(gone);
  std::filesystem::remove_all(rt);
}

// moss exec through a real broker and vsock worker, to a guest with no agent (a freestanding
// guest never drives its vsock device): the worker refuses CONNECT 1124, moss exec asks again
// until its 30 s are up and fails with one sentence; a paused VM is refused at once.
KVM_TEST(VmProcess, ExecToAVmWithoutAgentTimesOutAndAPausedOneIsRefused) {
  require_kvm();
  auto rt = std::filesystem::temp_directory_path() / ("moss-rt-e-" + std::to_string(getpid()));
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", rt.string()}};
  Process p({moss(), "run", "--name", "noagent", "--kernel", guest("spin"), "--initrd", "none", "--mem", "64M"}, env);
  ASSERT_TRUE(p.wait_for_output("spinning", seconds(60))) << p.out();
  auto t0 = std::chrono::steady_clock::now();
  auto o = run({moss(), "exec", "noagent", "--", "true"}, seconds(60), env);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(o.exit_code, 125) << describe(o);
  EXPECT_EQ(o.err, "moss: the guest agent of the VM named noagent was not listening within 30 s (is the guest up, "
                   "with moss-init?)\n")
      << describe(o);
  EXPECT_GE(took, 29.0);
  EXPECT_EQ(run({moss(), "pause", "noagent"}, seconds(20), env).exit_code, 0);
  auto paused = run({moss(), "exec", "noagent", "--", "true"}, seconds(20), env);
  EXPECT_EQ(paused.exit_code, 125) << describe(paused);
  EXPECT_EQ(paused.err, "moss: the VM named noagent cannot reach its guest agent: the VM is paused (moss resume noagent "
                        "lets it run)\n")
      << describe(paused);
  EXPECT_EQ(run({moss(), "stop", "noagent"}, seconds(30), env).exit_code, 0);
  EXPECT_EQ(p.wait(seconds(10)).exit_code, 128 + SIGTERM);
  std::filesystem::remove_all(rt);
}

KVM_TEST(VmProcess, PauseParksTheVcpusAndResumeLetsThemGo) {
  require_kvm();
  auto rt = std::filesystem::temp_directory_path() / ("moss-rt-p-" + std::to_string(getpid()));
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", rt.string()}};
  Process p({moss(), "run", "--name", "count", "--kernel", guest("counter"), "--initrd", "none", "--mem", "64M"}, env);
  ASSERT_TRUE(p.wait_for_output("tick 0000000000000003", seconds(60))) << p.out();
  auto pause = run({moss(), "pause", "count"}, seconds(20), env);
  EXPECT_EQ(pause.exit_code, 0) << describe(pause);
  auto st = run({moss(), "stats", "count"}, seconds(10), env);
  EXPECT_NE(st.out.find("\"state\": \"paused\""), std::string::npos) << describe(st);
  // Console bytes already written may still arrive; after that, nothing while paused.
  p.wait_for_output("never printed", seconds(1));
  size_t before = p.out().size();
  p.wait_for_output("never printed", seconds(2));
  EXPECT_EQ(p.out().size(), before) << "the guest ran while paused: " << p.out().substr(before);
  auto resume = run({moss(), "resume", "count"}, seconds(20), env);
  EXPECT_EQ(resume.exit_code, 0) << describe(resume);
  size_t ticks_then = std::count(p.out().begin(), p.out().end(), '\n');
  char want[64];
  std::snprintf(want, sizeof want, "tick %016zx", ticks_then + 2);
  EXPECT_TRUE(p.wait_for_output(want, seconds(60))) << "no tick after resume: " << p.out();
  // A paused VM stops at once too (its parked vCPUs are woken to end).
  EXPECT_EQ(run({moss(), "pause", "count"}, seconds(20), env).exit_code, 0);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(run({moss(), "stop", "count"}, seconds(30), env).exit_code, 0);
  auto o = p.wait(seconds(10));
  EXPECT_EQ(o.exit_code, 128 + SIGTERM) << describe(o);
  EXPECT_EQ(o.err.find("did not stop in time"), std::string::npos) << describe(o);
  std::printf("a paused VM stopped in %.3f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  std::filesystem::remove_all(rt);
}

// ---- The vcpu process's control interface (ipc/vcpu.capnp), driven directly as the broker
// would: pause, save the CPU state, run on, pause, restore it, resume.

// A virtio device for VcpuDriver: our end of the worker's vhost-user socket and what the
// start message says of it.
struct DriverDevice {
  int fd = -1;  // Passed to the vcpu process, then closed here.
  std::string name = "disk 1 (test)";
  // A one-queue virtio-blk function (what the blk module plans for one vCPU).
  GuestDevice guest{.virtio_id = 2, .pci_class = 0x010000, .config_size = 60, .num_queues = 1, .min_queues = 1,
                    .multiqueue_feature = 12, .queue_count_offset = 34};
};
struct DriverOptions {
  std::vector<DriverDevice> devices;
  // Set: start with MachineConfig.restore (no kernel), RAM copied from `ram_from` first.
  std::function<void(ipc::MachineRestore::Builder)> restore;
  int ram_from = -1;
};

class VcpuDriver {
 public:
  explicit VcpuDriver(const std::string& kernel, DriverOptions options = {}) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    ctl_ = sv[0];
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int k = kernel.empty() ? -1 : open(kernel.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(kvm, 0);
    if (!kernel.empty()) {
      EXPECT_GE(k, 0);
    }
    // Guest RAM is ours, as the broker's is: a restore carries RAM and state together.
    ram_ = memfd_create("moss-test-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    EXPECT_GE(ram_, 0);
    EXPECT_EQ(ftruncate(ram_, static_cast<off_t>(kRamBytes)), 0);
    EXPECT_EQ(fcntl(ram_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    if (options.ram_from >= 0) load_ram(options.ram_from);
    // Child fds: 3 control, 4 /dev/kvm, 5 kernel (or /dev/kvm again, unused), 6 RAM, 7.. devices.
    std::vector<int> pass = {sv[1], kvm, k >= 0 ? k : kvm, ram_};
    for (const auto& dev : options.devices) pass.push_back(dev.fd);
    pid_ = fork();
    if (pid_ == 0) {
      std::vector<int> hi;
      for (int fd : pass) hi.push_back(fcntl(fd, F_DUPFD, 20));
      for (size_t i = 0; i < hi.size(); i++) dup2(hi[i], 3 + static_cast<int>(i));
      std::string path = build_dir() + "/moss-vcpu";
      execl(path.c_str(), "moss-vcpu", "--control-fd", "3", nullptr);
      _exit(127);
    }
    close(sv[1]);
    close(kvm);
    if (k >= 0) close(k);
    for (const auto& dev : options.devices) close(dev.fd);
    capnp::MallocMessageBuilder mb;
    auto msg = mb.initRoot<ipc::BrokerToVcpu>();
    msg.setVersion(ipc::PROTOCOL_VERSION);
    auto start = msg.initStart();
    start.setMemBytes(kRamBytes);
    start.setCpus(1);
    start.setCmdline("");
    start.setKvmFd(4);
    start.setKernelFd(kernel.empty() ? -1 : 5);
    start.setInitrdFd(-1);
    start.setMemFd(6);
    auto devs = start.initDevices(static_cast<unsigned>(options.devices.size()));
    for (unsigned i = 0; i < options.devices.size(); i++) {
      const auto& dev = options.devices[i];
      encode_guest_device(dev.guest, devs[i]);
      devs[i].setName(dev.name);
      devs[i].setFd(7 + static_cast<int>(i));
    }
    if (options.restore) options.restore(start.initRestore());
    EXPECT_TRUE(ipc::send_message(ctl_, mb).ok());
  }
  ~VcpuDriver() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    close(ctl_);
    close(ram_);
  }
  // Guest RAM, which outlives the VM with dup().
  int ram() const { return ram_; }
  // Makes this (paused) VM's RAM a copy of `from`'s, as a restore does before the state goes in.
  void load_ram(int from) {
    std::vector<char> buf(1 << 20);
    for (off_t off = 0; off < static_cast<off_t>(kRamBytes); off += static_cast<off_t>(buf.size())) {
      ASSERT_EQ(pread(from, buf.data(), buf.size(), off), static_cast<ssize_t>(buf.size()));
      ASSERT_EQ(pwrite(ram_, buf.data(), buf.size(), off), static_cast<ssize_t>(buf.size()));
    }
  }
  // Sends a request built by `fill`; returns the next reply that is not console output.
  std::unique_ptr<ipc::Packet> call(const std::function<void(ipc::BrokerToVcpu::Builder)>& fill) {
    capnp::MallocMessageBuilder mb;
    auto msg = mb.initRoot<ipc::BrokerToVcpu>();
    msg.setVersion(ipc::PROTOCOL_VERSION);
    fill(msg);
    EXPECT_TRUE(ipc::send_message(ctl_, mb).ok());
    return next_reply(seconds(30));
  }
  std::unique_ptr<ipc::Packet> next_reply(seconds timeout) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{ctl_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      auto packet = ipc::receive_message(ctl_);
      if (!packet || !*packet) return nullptr;
      auto msg = (*packet)->root<ipc::VcpuToBroker>();
      if (msg.isConsole()) {
        console_.append(reinterpret_cast<const char*>(msg.getConsole().begin()), msg.getConsole().size());
        continue;
      }
      if (msg.isStarted()) continue;
      return std::move(*packet);
    }
    return nullptr;
  }
  // Reads console output until `needle` appears at or after byte `from`.
  bool wait_console(const std::string& needle, seconds timeout, size_t from = 0) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (console_.find(needle, from) == std::string::npos && std::chrono::steady_clock::now() < end) {
      if (auto r = next_reply(seconds(1))) {
        ADD_FAILURE() << "unexpected message while waiting for console output: "
                      << capnp::prettyPrint(r->root<ipc::VcpuToBroker>()).flatten().cStr();
        return false;
      }
    }
    return console_.find(needle, from) != std::string::npos;
  }
  const std::string& console() const { return console_; }

 private:
  static constexpr uint64_t kRamBytes = 64ull << 20;
  int ctl_ = -1;
  int ram_ = -1;
  pid_t pid_ = -1;
  std::string console_;
};

KVM_TEST(VcpuControl, RestoredCpuStateTakesTheGuestBackToWhereItWasSaved) {
  require_kvm();
  VcpuDriver d(guest("counter"));
  ASSERT_TRUE(d.wait_console("tick 0000000000000003\n", seconds(60))) << d.console();
  auto paused = d.call([](auto m) { m.setPause(); });
  ASSERT_TRUE(paused && paused->root<ipc::VcpuToBroker>().isPaused());
  auto saved = d.call([](auto m) { m.setSaveCpuState(); });
  ASSERT_TRUE(saved);
  auto saved_msg = saved->root<ipc::VcpuToBroker>();
  ASSERT_TRUE(saved_msg.isCpuState()) << (saved_msg.isRefused() ? saved_msg.getRefused().cStr() : "");
  ASSERT_EQ(saved_msg.getCpuState().size(), 1u);
  EXPECT_GT(saved_msg.getCpuState()[0].getMsrs().size(), 0u);
  // The guest may be parked anywhere, mid-line too: the lines it finished are the ticks
  // before the save point, and the line after the one it was in is printed complete.
  d.next_reply(seconds(1));  // Let the console catch up.
  size_t saved_ticks = std::count(d.console().begin(), d.console().end(), '\n');
  ASSERT_TRUE(d.call([](auto m) { m.setResume(); })->root<ipc::VcpuToBroker>().isResumed());
  char later[64];
  std::snprintf(later, sizeof later, "tick %016zx\n", saved_ticks + 3);
  ASSERT_TRUE(d.wait_console(later, seconds(60))) << d.console();
  ASSERT_TRUE(d.call([](auto m) { m.setPause(); })->root<ipc::VcpuToBroker>().isPaused());
  // A state of the wrong shape is refused and changes nothing.
  auto bad = d.call([](auto m) {
    auto c = m.initRestoreCpuState(1)[0];
    c.setVersion(ipc::CPU_STATE_VERSION);
    c.setRegs(kj::heapArray<capnp::byte>(3));
  });
  ASSERT_TRUE(bad && bad->root<ipc::VcpuToBroker>().isRefused());
  EXPECT_NE(std::string(bad->root<ipc::VcpuToBroker>().getRefused().cStr()).find("the saved general registers is 3 bytes"),
            std::string::npos);
  auto restored = d.call([&](auto m) { m.setRestoreCpuState(saved_msg.getCpuState()); });
  ASSERT_TRUE(restored);
  auto r = restored->root<ipc::VcpuToBroker>();
  ASSERT_TRUE(r.isRestored()) << (r.isRefused() ? r.getRefused().cStr() : "");
  size_t mark = d.console().size();
  ASSERT_TRUE(d.call([](auto m) { m.setResume(); })->root<ipc::VcpuToBroker>().isResumed());
  // The count goes back: a tick printed before the restore is printed a second time.
  char again[64];
  std::snprintf(again, sizeof again, "tick %016zx\n", saved_ticks + 2);
  EXPECT_TRUE(d.wait_console(again, seconds(60), mark)) << d.console().substr(mark);
  auto stop = d.call([](auto m) { m.setStop(); });
  ASSERT_TRUE(stop && stop->root<ipc::VcpuToBroker>().isExited());
}

// The guest's kvmclock in a saved VmState (struct kvm_clock_data's first field).
uint64_t saved_kvmclock_ns(ipc::MachineState::Reader m) {
  uint64_t ns = 0;
  auto clock = m.getVm().getClock();
  EXPECT_GE(clock.size(), sizeof ns);
  if (clock.size() >= sizeof ns) std::memcpy(&ns, clock.begin(), sizeof ns);
  return ns;
}

KVM_TEST(VcpuControl, SavedMachineStateContinuesInAFreshVcpuProcess) {
  require_kvm();
  std::unique_ptr<ipc::Packet> saved;
  size_t saved_ticks = 0;
  std::chrono::steady_clock::time_point saved_at;
  int saved_ram = -1;
  {
    VcpuDriver d(guest("counter"));
    saved_ram = dup(d.ram());
    // The counter's ticks are a busy loop: slow under PVM's emulation on a loaded host.
    ASSERT_TRUE(d.wait_console("tick 0000000000000003\n", seconds(180))) << d.console();
    ASSERT_TRUE(d.call([](auto m) { m.setPause(); })->root<ipc::VcpuToBroker>().isPaused());
    saved = d.call([](auto m) { m.setSaveMachineState(); });
    saved_at = std::chrono::steady_clock::now();
    ASSERT_TRUE(saved);
    auto msg = saved->root<ipc::VcpuToBroker>();
    ASSERT_TRUE(msg.isMachineState()) << (msg.isRefused() ? msg.getRefused().cStr() : "");
    d.next_reply(seconds(1));  // Let the console catch up.
    saved_ticks = std::count(d.console().begin(), d.console().end(), '\n');
  }  // SIGKILL: that VM is gone.
  auto state = saved->root<ipc::VcpuToBroker>().getMachineState();
  ASSERT_EQ(state.getCpus().size(), 1u);
  EXPECT_GT(state.getCpus()[0].getMsrs().size(), 0u);
  EXPECT_GT(state.getCpus()[0].getCpuid().size(), 0u);
  EXPECT_GT(state.getCpus()[0].getTscKhz(), 0u);
  EXPECT_GE(state.getCpus()[0].getXsave().size(), 4096u);
  EXPECT_GT(state.getUart().size(), 0u);
  const uint64_t clock_at_save = saved_kvmclock_ns(state);

  VcpuDriver d(guest("counter"));
  ASSERT_TRUE(d.wait_console("tick 0000000000000001\n", seconds(60))) << d.console();
  ASSERT_TRUE(d.call([](auto m) { m.setPause(); })->root<ipc::VcpuToBroker>().isPaused());
  // A state from another CPU model is refused with one sentence, before anything changes.
  auto bad = d.call([&](auto m) {
    auto r = m.initRestoreMachineState();
    r.setState(state);
    auto cpu = r.getState().getCpus()[0];
    auto cpuid = kj::heapArray<capnp::byte>(cpu.getCpuid());
    cpuid[12] ^= 1;  // Leaf 0's EAX: the highest basic leaf.
    cpu.setCpuid(cpuid);
  });
  ASSERT_TRUE(bad && bad->root<ipc::VcpuToBroker>().isRefused());
  EXPECT_NE(std::string(bad->root<ipc::VcpuToBroker>().getRefused().cStr()).find("the saved CPUID differs"), std::string::npos)
      << bad->root<ipc::VcpuToBroker>().getRefused().cStr();
  auto restore_at = std::chrono::steady_clock::now();
  d.load_ram(saved_ram);
  close(saved_ram);
  auto restored = d.call([&](auto m) { m.initRestoreMachineState().setState(state); });
  ASSERT_TRUE(restored);
  auto r = restored->root<ipc::VcpuToBroker>();
  ASSERT_TRUE(r.isRestored()) << (r.isRefused() ? r.getRefused().cStr() : "");
  // The guest's clock continues from the saved value: the time between the save and the
  // restore (a whole VM start) does not show, and it does not go back.
  auto again = d.call([](auto m) { m.setSaveMachineState(); });
  ASSERT_TRUE(again && again->root<ipc::VcpuToBroker>().isMachineState());
  const uint64_t clock_now = saved_kvmclock_ns(again->root<ipc::VcpuToBroker>().getMachineState());
  const auto since_restore = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - restore_at);
  const auto gap = std::chrono::duration_cast<std::chrono::nanoseconds>(restore_at - saved_at);
  EXPECT_GE(clock_now, clock_at_save);
  EXPECT_LE(clock_now - clock_at_save, static_cast<uint64_t>(since_restore.count()) + 50'000'000)
      << "the guest's clock moved by " << (clock_now - clock_at_save) << " ns; the VM was away for " << gap.count() << " ns";
  d.next_reply(seconds(1));
  size_t mark = d.console().size();
  ASSERT_TRUE(d.call([](auto m) { m.setResume(); })->root<ipc::VcpuToBroker>().isResumed());
  // The count continues from the saved VM's, in this process: the first whole line printed
  // after the resume is the saved VM's count plus 2 (the line it was in, or about to start,
  // completes first).
  char next[64];
  std::snprintf(next, sizeof next, "moss-test-guest: tick %016zx\n", saved_ticks + 2);
  ASSERT_TRUE(d.wait_console(next, seconds(180), mark)) << d.console().substr(mark);
  size_t first_nl = d.console().find('\n', mark);
  ASSERT_NE(first_nl, std::string::npos);
  EXPECT_EQ(d.console().substr(first_nl + 1, std::strlen(next)), next) << d.console().substr(mark);
  auto stop = d.call([](auto m) { m.setStop(); });
  ASSERT_TRUE(stop && stop->root<ipc::VcpuToBroker>().isExited());
}

// Runs `kernel` until `line` is printed, pauses it, saves the whole machine and kills that
// vcpu process; returns the saved message, how many lines the guest had finished and (a dup
// of) its RAM.
struct Saved {
  std::unique_ptr<ipc::Packet> message;
  size_t lines = 0;
  int ram = -1;
};
// With `halted`, the save is taken again (resume, pause) until vCPU 0 was caught halted,
// waiting for its next interrupt: the state the test means, rather than one inside the
// interrupt handler, which PVM (the only KVM of some test machines) now and then fails to
// bring back in a fresh VM (a triple fault in 1 of ~10 CI runs).
Saved save_and_kill(const std::string& kernel, const std::string& line, bool halted = false) {
  VcpuDriver d(kernel);
  EXPECT_TRUE(d.wait_console(line, seconds(60))) << d.console();
  std::unique_ptr<ipc::Packet> saved;
  for (int attempt = 0; attempt < 50; attempt++) {
    EXPECT_TRUE(d.call([](auto m) { m.setPause(); })->root<ipc::VcpuToBroker>().isPaused());
    saved = d.call([](auto m) { m.setSaveMachineState(); });
    EXPECT_TRUE(saved && saved->root<ipc::VcpuToBroker>().isMachineState())
        << (saved && saved->root<ipc::VcpuToBroker>().isRefused() ? saved->root<ipc::VcpuToBroker>().getRefused().cStr() : "");
    if (!halted || !saved || !saved->root<ipc::VcpuToBroker>().isMachineState()) break;
    if (saved->root<ipc::VcpuToBroker>().getMachineState().getCpus()[0].getMpState() == KVM_MP_STATE_HALTED) break;
    EXPECT_TRUE(d.call([](auto m) { m.setResume(); })->root<ipc::VcpuToBroker>().isResumed());
    std::this_thread::sleep_for(std::chrono::milliseconds(7));
  }
  d.next_reply(seconds(1));
  return {std::move(saved), static_cast<size_t>(std::count(d.console().begin(), d.console().end(), '\n')), dup(d.ram())};
}

KVM_TEST(VcpuControl, TscDeadlineTimerKeepsFiringAfterARestoreInAFreshVcpuProcess) {
  require_kvm();
  // The guest counts LAPIC timer interrupts in TSC-deadline mode, re-arming IA32_TSC_DEADLINE
  // in each; the count goes on only while the timer fires.
  auto [saved, lines, saved_ram] = save_and_kill(guest("timer"), "timer 0000000000000003\n", /*halted=*/true);
  ASSERT_EQ(saved->root<ipc::VcpuToBroker>().getMachineState().getCpus()[0].getMpState(), KVM_MP_STATE_HALTED)
      << "the timer guest was never caught halted";
  ASSERT_TRUE(saved && saved->root<ipc::VcpuToBroker>().isMachineState());
  auto state = saved->root<ipc::VcpuToBroker>().getMachineState();
  // The fresh VM runs the same guest first (its RAM must hold the same code and IDT), and so
  // has a deadline of its own armed in KVM, which a restored LAPIC would re-arm and fire.
  VcpuDriver d(guest("timer"));
  ASSERT_TRUE(d.wait_console("timer 0000000000000001\n", seconds(60))) << d.console();
  ASSERT_TRUE(d.call([](auto m) { m.setPause(); })->root<ipc::VcpuToBroker>().isPaused());
  // So first a copy of the state whose LAPIC timer is in one-shot mode replaces that one:
  // leaving TSC-deadline mode clears KVM's deadline, and returning to it (the real restore
  // below) starts from none, so only the saved IA32_TSC_DEADLINE, restored after the LAPIC
  // and IA32_TSC, can fire.
  auto far = d.call([&](auto m) {
    auto req = m.initRestoreMachineState();
    req.setState(state);
    auto cpu = req.getState().getCpus()[0];
    auto lapic = kj::heapArray<capnp::byte>(cpu.getLapic());
    ASSERT_GE(lapic.size(), 0x324u);
    uint32_t lvtt;
    std::memcpy(&lvtt, lapic.begin() + 0x320, 4);  // LVT timer
    EXPECT_EQ(lvtt & (3u << 17), 2u << 17) << "the saved LAPIC timer is not in TSC-deadline mode";
    lvtt &= ~(3u << 17);
    std::memcpy(lapic.begin() + 0x320, &lvtt, 4);
    cpu.setLapic(lapic);
  });
  ASSERT_TRUE(far && far->root<ipc::VcpuToBroker>().isRestored());
  // The saved vCPU may have stopped inside the interrupt handler or a call: its stack (and
  // anything else in RAM) must be the saved VM's, not this one's.
  d.load_ram(saved_ram);
  close(saved_ram);
  auto restored = d.call([&](auto m) { m.initRestoreMachineState().setState(state); });
  ASSERT_TRUE(restored);
  auto r = restored->root<ipc::VcpuToBroker>();
  ASSERT_TRUE(r.isRestored()) << (r.isRefused() ? r.getRefused().cStr() : "");
  d.next_reply(seconds(1));
  size_t mark = d.console().size();
  ASSERT_TRUE(d.call([](auto m) { m.setResume(); })->root<ipc::VcpuToBroker>().isResumed());
  // Three more interrupts (~40 ms apart), numbered on from the saved VM's count.
  char next[64];
  std::snprintf(next, sizeof next, "moss-test-guest: timer %016zx\n", lines + 3);
  EXPECT_TRUE(d.wait_console(next, seconds(30), mark)) << "the restored timer did not fire: " << d.console().substr(mark);
  auto stop = d.call([](auto m) { m.setStop(); });
  ASSERT_TRUE(stop && stop->root<ipc::VcpuToBroker>().isExited());
}

// ---- Linux guests: the default Debian kernel with moss-init.

LINUX_TEST(LinuxGuest, RefusedOnPvmWithOneSentence) {
  require_kvm();
  auto fake = std::filesystem::temp_directory_path() / ("moss-fake-sysfs-" + std::to_string(getpid()));
  std::filesystem::create_directories(fake / "module/kvm_pvm");
  auto o = run({moss(), "run", "--", "true"}, seconds(30), {{"MOSS_SYSFS_ROOT", fake.string()}});
  std::filesystem::remove_all(fake);
  EXPECT_EQ(o.exit_code, 125) << describe(o);
  EXPECT_NE(o.err.find("this host's KVM is PVM (kvm_pvm), which emulates guest kernel code and cannot run an "
                       "unmodified Linux guest"),
            std::string::npos)
      << describe(o);
}

LINUX_TEST(LinuxGuest, RunsACommandAndReturnsItsStatus) {
  require_kvm();
  // Output right up to the command's exit must arrive: a burst, then a last line. It is the
  // command's alone (through the agent): no console lines, no carriage returns.
  auto o = run({moss(), "run", "--", "sh", "-c", "echo guest says \"$((6 * 7))\"; seq 1 500; echo the last line; exit 7"},
               seconds(300));
  EXPECT_EQ(o.exit_code, 7) << describe(o);
  std::string want = "guest says 42\n";
  for (int i = 1; i <= 500; i++) want += std::to_string(i) + "\n";
  EXPECT_EQ(o.out, want + "the last line\n") << describe(o);
  EXPECT_EQ(o.err, "") << describe(o);
}

LINUX_TEST(LinuxGuest, PoweroffEndsTheVmThroughAcpi) {
  require_kvm();
  // busybox poweroff -f: reboot(RB_POWER_OFF) at once, so the VM ends before moss-init reports
  // a status; the message names the ACPI S5 write (not a halt, a reset or a panic).
  auto o = run({moss(), "run", "--", "poweroff", "-f"}, seconds(300));
  EXPECT_EQ(o.exit_code, 125) << describe(o);
  EXPECT_NE(o.err.find("the guest powered off (ACPI S5) before the command reported its exit status"),
            std::string::npos)
      << describe(o);
}

LINUX_TEST(LinuxGuest, TwoVcpusAreBothOnline) {
  require_kvm();
  auto o = run({moss(), "run", "--cpus", "2", "--", "sh", "-c",
                "echo online=$(cat /sys/devices/system/cpu/online) nproc=$(nproc)"},
               seconds(300));
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("online=0-1 nproc=2"), std::string::npos) << describe(o);
}

// ---- Devices across a save: moss-vcpu driven directly with a moss-blk (or moss-null) worker
// serving one connected socket, as the broker would start them.

// A worker program serving one vhost-user connection (--fd 3), killed and reaped at the end.
class FdWorker {
 public:
  FdWorker(const std::string& program, const std::vector<std::string>& args) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    std::vector<std::string> argv = {build_dir() + "/" + program, "--fd", "3"};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fcntl(sv[1], F_DUPFD, 20), 3);
      std::vector<char*> av;
      for (auto& a : argv) av.push_back(a.data());
      av.push_back(nullptr);
      execv(av[0], av.data());
      _exit(127);
    }
    close(sv[1]);
    fd_ = sv[0];
  }
  ~FdWorker() {
    if (fd_ >= 0) close(fd_);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  int take() { return std::exchange(fd_, -1); }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
};

// The disk of the guest virtio_blk_loop (tests/guests/virtio_blk.c's contract and its loop).
constexpr uint32_t kLoopRounds = 48;
constexpr size_t kLoopDiskBytes = 256 * 1024;
uint32_t loop_word(uint32_t offset, uint32_t salt) { return offset * 0x9e3779b1u + salt; }
std::string loop_disk(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::string img = (dir / "disk.img").string();
  std::vector<uint32_t> words(kLoopDiskBytes / 4, 0);
  for (uint32_t o = 0; o < 4096; o += 4) words[o / 4] = loop_word(o, 0x6d6f7373);
  int fd = open(img.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, words.data(), kLoopDiskBytes), static_cast<ssize_t>(kLoopDiskBytes));
  close(fd);
  return img;
}
// After the guest finished: pattern A, B, then every round's pattern C, then zeros.
void expect_loop_disk(const std::string& img) {
  std::vector<uint32_t> after(kLoopDiskBytes / 4);
  int fd = open(img.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(read(fd, after.data(), kLoopDiskBytes), static_cast<ssize_t>(kLoopDiskBytes));
  close(fd);
  const uint32_t rounds_end = 8192 + kLoopRounds * 4096;
  for (uint32_t off = 0; off < kLoopDiskBytes; off += 4) {
    uint32_t want = off < 4096 ? loop_word(off, 0x6d6f7373)
                    : off < 8192 ? loop_word(off, 0x77726974)
                    : off < rounds_end ? loop_word(off, 0x6c6f6f70) : 0;
    ASSERT_EQ(after[off / 4], want) << "at byte " << off;
  }
}
size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) n++;
  return n;
}
std::string refusal(const std::unique_ptr<ipc::Packet>& p) {
  if (!p) return "(no reply)";
  auto m = p->root<ipc::VcpuToBroker>();
  return m.isRefused() ? m.getRefused().cStr() : capnp::prettyPrint(m).flatten().cStr();
}
// Waits for the VM's end; the exit message, or a failure.
std::unique_ptr<ipc::Packet> wait_exit(VcpuDriver& d, seconds timeout) {
  auto r = d.next_reply(timeout);
  EXPECT_TRUE(r && r->root<ipc::VcpuToBroker>().isExited()) << refusal(r) << "\n" << d.console();
  return r;
}

KVM_TEST(VcpuControl, DiskIoContinuesExactlyOnceInAFreshVcpuProcessAndWorker) {
  require_kvm();
  auto dir = std::filesystem::temp_directory_path() / ("moss-vspore-" + std::to_string(getpid()));
  std::string img = loop_disk(dir);
  std::unique_ptr<ipc::Packet> saved;
  std::string before;  // The first VM's console up to the save.
  int saved_ram = -1;
  {
    FdWorker blk("moss-blk", {"--disk", img});
    DriverOptions o;
    o.devices.push_back({blk.take()});
    VcpuDriver d(guest("virtio_blk_loop"), o);
    ASSERT_TRUE(d.wait_console("virtio-blk-guest: round 5\n", seconds(120))) << d.console();
    auto check = d.call([](auto m) { m.setCheckSave(); });
    ASSERT_TRUE(check && check->root<ipc::VcpuToBroker>().isRestored()) << refusal(check);
    ASSERT_TRUE(d.call([](auto m) { m.setPause(); })->root<ipc::VcpuToBroker>().isPaused());
    saved = d.call([](auto m) { m.setSaveMachineState(); });
    ASSERT_TRUE(saved && saved->root<ipc::VcpuToBroker>().isMachineState()) << refusal(saved);
    d.next_reply(seconds(1));  // Let the console catch up.
    before = d.console();
    saved_ram = dup(d.ram());
  }  // SIGKILL of both: that VM and its worker are gone.
  auto state = saved->root<ipc::VcpuToBroker>().getMachineState();
  ASSERT_EQ(state.getDevices().size(), 1u);
  EXPECT_GT(state.getDevices()[0].getTransport().size(), 72u);
  EXPECT_GT(state.getDevices()[0].getBackend().size(), 0u);
  ASSERT_EQ(before.find("rounds ok"), std::string::npos) << "the guest finished before the save";

  {
    // A transport blob of another version is refused with one sentence naming the device,
    // before the guest runs: the process exits with an error.
    FdWorker blk("moss-blk", {"--disk", img});
    DriverOptions o;
    o.devices.push_back({blk.take()});
    o.ram_from = saved_ram;
    o.restore = [&](ipc::MachineRestore::Builder r) {
      r.setState(state);
      auto t = kj::heapArray<capnp::byte>(r.getState().getDevices()[0].getTransport());
      t[8] = 9;
      r.getState().getDevices()[0].setTransport(t);
    };
    VcpuDriver d("", o);
    auto e = wait_exit(d, seconds(30));
    ASSERT_TRUE(e);
    auto x = e->root<ipc::VcpuToBroker>().getExited();
    EXPECT_EQ(x.getReason(), ipc::ExitInfo::Reason::ERROR);
    EXPECT_NE(std::string(x.getMessage().cStr()).find("disk 1 (test): the saved virtio-pci transport state has version 9"),
              std::string::npos)
        << x.getMessage().cStr();
    EXPECT_EQ(d.console(), "");
  }

  FdWorker blk("moss-blk", {"--disk", img});
  DriverOptions o;
  o.devices.push_back({blk.take()});
  o.ram_from = saved_ram;
  o.restore = [&](ipc::MachineRestore::Builder r) { r.setState(state); };
  VcpuDriver d("", o);
  close(saved_ram);
  auto e = wait_exit(d, seconds(180));
  ASSERT_TRUE(e);
  auto x = e->root<ipc::VcpuToBroker>().getExited();
  EXPECT_EQ(x.getReason(), ipc::ExitInfo::Reason::GUEST_STATUS) << x.getMessage().cStr() << "\n" << d.console();
  EXPECT_EQ(x.getStatus(), 0) << d.console();
  EXPECT_NE(d.console().find("virtio-blk-guest: rounds ok\nvirtio-blk-guest: ok\n"), std::string::npos) << d.console();
  // The restored guest went on from where it was: every round printed once over both VMs.
  const std::string all = before + d.console();
  for (uint32_t r = 0; r < kLoopRounds; r++) {
    EXPECT_EQ(count_of(all, "virtio-blk-guest: round " + std::to_string(r) + "\n"), 1u) << "round " << r << "\n" << all;
  }
  EXPECT_EQ(count_of(d.console(), "found 1af4:1042"), 0u) << "the restored guest booted again";
  expect_loop_disk(img);
  std::filesystem::remove_all(dir);
}

KVM_TEST(VcpuControl, DiskIoGoesOnInTheSameProcessWhenTheVmResumesAfterASave) {
  require_kvm();
  auto dir = std::filesystem::temp_directory_path() / ("moss-vspore-keep-" + std::to_string(getpid()));
  std::string img = loop_disk(dir);
  FdWorker blk("moss-blk", {"--disk", img});
  DriverOptions o;
  o.devices.push_back({blk.take()});
  VcpuDriver d(guest("virtio_blk_loop"), o);
  ASSERT_TRUE(d.wait_console("virtio-blk-guest: round 3\n", seconds(120))) << d.console();
  for (int i = 0; i < 2; i++) {  // Twice: a second save finds the rings stopped and keeps their bases.
    ASSERT_TRUE(d.call([](auto m) { m.setPause(); })->root<ipc::VcpuToBroker>().isPaused());
    auto saved = d.call([](auto m) { m.setSaveMachineState(); });
    ASSERT_TRUE(saved && saved->root<ipc::VcpuToBroker>().isMachineState()) << refusal(saved);
    auto devices = saved->root<ipc::VcpuToBroker>().getMachineState().getDevices();
    ASSERT_EQ(devices.size(), 1u);
    EXPECT_GT(devices[0].getBackend().size(), 0u);
    if (i == 0) {
      auto again = d.call([](auto m) { m.setSaveMachineState(); });
      ASSERT_TRUE(again && again->root<ipc::VcpuToBroker>().isMachineState()) << refusal(again);
      auto d2 = again->root<ipc::VcpuToBroker>().getMachineState().getDevices();
      ASSERT_EQ(d2.size(), 1u);
      EXPECT_TRUE(d2[0].getTransport() == devices[0].getTransport());
      // Devices are restored only into a fresh process; here that is refused, whole.
      auto rewind = d.call([&](auto m) { m.initRestoreMachineState().setState(saved->root<ipc::VcpuToBroker>().getMachineState()); });
      EXPECT_EQ(refusal(rewind), "a saved machine with devices is restored by starting a fresh vcpu process with it");
    }
    ASSERT_TRUE(d.call([](auto m) { m.setResume(); })->root<ipc::VcpuToBroker>().isResumed());
    if (i == 0) {
      ASSERT_TRUE(d.wait_console("virtio-blk-guest: round 8\n", seconds(120))) << d.console();
    }
  }
  auto e = wait_exit(d, seconds(180));
  ASSERT_TRUE(e);
  auto x = e->root<ipc::VcpuToBroker>().getExited();
  EXPECT_EQ(x.getReason(), ipc::ExitInfo::Reason::GUEST_STATUS) << x.getMessage().cStr() << "\n" << d.console();
  EXPECT_EQ(x.getStatus(), 0) << d.console();
  for (uint32_t r = 0; r < kLoopRounds; r++) {
    EXPECT_EQ(count_of(d.console(), "virtio-blk-guest: round " + std::to_string(r) + "\n"), 1u) << d.console();
  }
  expect_loop_disk(img);
  std::filesystem::remove_all(dir);
}

KVM_TEST(VcpuControl, CheckSaveNamesADeviceWhoseBackendCannotSaveAndChangesNothing) {
  require_kvm();
  FdWorker null("moss-null", {"--capacity", "1048576"});
  DriverOptions o;
  o.devices.push_back({null.take(), "null 1 (moss-null)"});
  VcpuDriver d(guest("counter"), o);
  ASSERT_TRUE(d.wait_console("tick 0000000000000001\n", seconds(180))) << d.console();
  const std::string why = "null 1 (moss-null): its vhost-user backend cannot save its state (no DEVICE_STATE)";
  auto check = d.call([](auto m) { m.setCheckSave(); });
  ASSERT_TRUE(check && check->root<ipc::VcpuToBroker>().isRefused()) << refusal(check);
  EXPECT_EQ(refusal(check), why);
  // Still running, and a save while paused is refused the same way; the VM resumes.
  ASSERT_TRUE(d.wait_console("tick 0000000000000002\n", seconds(180))) << d.console();
  ASSERT_TRUE(d.call([](auto m) { m.setPause(); })->root<ipc::VcpuToBroker>().isPaused());
  auto saved = d.call([](auto m) { m.setSaveMachineState(); });
  ASSERT_TRUE(saved && saved->root<ipc::VcpuToBroker>().isRefused()) << refusal(saved);
  EXPECT_EQ(refusal(saved), why);
  ASSERT_TRUE(d.call([](auto m) { m.setResume(); })->root<ipc::VcpuToBroker>().isResumed());
  ASSERT_TRUE(d.wait_console("tick 0000000000000003\n", seconds(180))) << d.console();
  auto stop = d.call([](auto m) { m.setStop(); });
  ASSERT_TRUE(stop && stop->root<ipc::VcpuToBroker>().isExited());
}

struct Scratch {
  std::filesystem::path dir;
  Scratch() {
    dir = std::filesystem::temp_directory_path() / ("moss-disk-" + std::to_string(getpid()) + "-" +
                                                     std::to_string(std::rand()));
    std::filesystem::create_directories(dir);
  }
  ~Scratch() { std::filesystem::remove_all(dir); }
  // A file of `bytes` bytes from a seeded generator (different seeds, different content).
  std::string image(const std::string& name, size_t bytes, uint32_t seed) {
    std::string path = (dir / name).string();
    std::string data(bytes, '\0');
    uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
    for (size_t i = 0; i < bytes; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      data[i] = static_cast<char>(x);
    }
    int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    close(fd);
    return path;
  }
};

std::string sha256(const std::string& path, size_t head_bytes = 0) {
  std::string cmd = head_bytes ? "head -c " + std::to_string(head_bytes) + " " + path + " | sha256sum"
                               : "sha256sum < " + path;
  auto o = run({"sh", "-c", cmd}, seconds(30));
  return o.out.substr(0, 64);
}

// ---- The main job: a program in the guest through its agent (guest/agent/), with stdin,
// stdout, stderr and the exit status as if it ran here.

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// `moss run` in a shell pipeline: `script` with MOSS standing for the moss binary.
Outcome shell(std::string script, seconds timeout = seconds(300)) {
  for (size_t at; (at = script.find("MOSS")) != std::string::npos;) script.replace(at, 4, quote(moss()));
  return run({"sh", "-c", script}, timeout);
}

LINUX_TEST(LinuxGuest, PipedInputIsCountedByTheGuestsWc) {
  require_kvm();
  Scratch s;
  std::string in = (s.dir / "du.txt").string();
  // du -a over /etc rather than / : the same pipe, sized for a TCG nested host.
  auto o = shell("du -a /etc 2>/dev/null | tee " + quote(in) + " | MOSS run -- wc -l");
  auto lines = shell("wc -l < " + quote(in), seconds(30));
  ASSERT_EQ(lines.exit_code, 0) << describe(lines);
  int want = std::atoi(lines.out.c_str());
  ASSERT_GT(want, 100) << describe(lines);
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_EQ(o.out, std::to_string(want) + "\n") << describe(o);
}

LINUX_TEST(LinuxGuest, ExitStatusSignalAndSeparateStreams) {
  require_kvm();
  auto seven = run({moss(), "run", "--", "sh", "-c", "exit 7"}, seconds(300));
  EXPECT_EQ(seven.exit_code, 7) << describe(seven);
  EXPECT_EQ(seven.out, "") << describe(seven);
  // Killed by SIGTERM: 128 + 15, like a shell; each stream holds only its own lines.
  auto term = run({moss(), "run", "--", "sh", "-c", "echo to stdout; echo to stderr >&2; echo more stdout; kill -TERM $$"},
                  seconds(300));
  EXPECT_EQ(term.exit_code, 143) << describe(term);
  EXPECT_EQ(term.out, "to stdout\nmore stdout\n") << describe(term);
  EXPECT_EQ(term.err, "to stderr\n") << describe(term);
  // --env and --workdir reach the program; a missing program is 127 with one sentence.
  auto env = run({moss(), "run", "--env", "GREETING=hi there", "--workdir", "/proc", "--", "sh", "-c",
                  "echo \"$GREETING from $(pwd)\""},
                 seconds(300));
  EXPECT_EQ(env.exit_code, 0) << describe(env);
  EXPECT_EQ(env.out, "hi there from /proc\n") << describe(env);
  auto missing = run({moss(), "run", "--", "no-such-program"}, seconds(300));
  EXPECT_EQ(missing.exit_code, 127) << describe(missing);
  EXPECT_NE(missing.err.find("no-such-program"), std::string::npos) << describe(missing);
}

LINUX_TEST(LinuxGuest, SixtyFourMiBThroughCatComeBackIdentical) {
  require_kvm();
  Scratch s;
  std::string in = (s.dir / "random.bin").string();
  ASSERT_EQ(shell("head -c 64M /dev/urandom > " + quote(in), seconds(60)).exit_code, 0);
  auto o = shell("MOSS run -- cat < " + quote(in) + " | sha256sum", seconds(600));
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_EQ(o.out.substr(0, 64), sha256(in)) << describe(o);
  // Through a pipe too (not a file moss could read at its own pace), and byte counts match.
  auto piped = shell("cat " + quote(in) + " | MOSS run -- cat | wc -c", seconds(600));
  EXPECT_EQ(piped.exit_code, 0) << describe(piped);
  EXPECT_EQ(std::atol(piped.out.c_str()), 64l << 20) << describe(piped);
}

LINUX_TEST(LinuxGuest, UnreadInputDoesNotBlockTheProgram) {
  require_kvm();
  // `yes` never ends: the program ignores its stdin, exits, and moss with it.
  auto o = shell("yes | MOSS run -- sh -c 'echo done; exit 3'", seconds(300));
  EXPECT_EQ(o.exit_code, 3) << describe(o);
  EXPECT_EQ(o.out, "done\n") << describe(o);
  // The other way round: a reader that goes away ends a program that never stops writing, as
  // SIGPIPE would here (128 + 13).
  auto gone = shell("{ MOSS run -- yes; echo \"moss exited $?\" >&2; } | head -n 2", seconds(300));
  EXPECT_EQ(gone.exit_code, 0) << describe(gone);
  EXPECT_EQ(gone.out, "y\ny\n") << describe(gone);
  EXPECT_NE(gone.err.find("moss exited 141"), std::string::npos) << describe(gone);
}

// A pseudo-terminal the test drives like a user at a terminal.
class Terminal {
 public:
  explicit Terminal(const std::vector<std::string>& argv) {
    winsize ws{};
    ws.ws_row = 40;
    ws.ws_col = 100;
    check_spawn(argv);
    pid_ = forkpty(&master_, nullptr, nullptr, &ws);
    if (pid_ == 0) {
      std::vector<char*> a;
      for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      setenv("TERM", "xterm", 1);
      execv(a[0], a.data());
      _exit(127);
    }
  }
  ~Terminal() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (master_ >= 0) close(master_);
  }
  void type(const std::string& keys) { ASSERT_EQ(write(master_, keys.data(), keys.size()), static_cast<ssize_t>(keys.size())); }
  // Reads until `needle` appears after position `from` of everything read, or the time-out.
  bool wait_for(const std::string& needle, size_t from, seconds timeout) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (screen_.find(needle, from) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count();
      if (left <= 0) return false;
      pollfd pf{master_, POLLIN, 0};
      if (poll(&pf, 1, static_cast<int>(left)) <= 0) continue;
      char buf[4096];
      ssize_t n = read(master_, buf, sizeof buf);
      if (n <= 0) return false;
      screen_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  int wait_exit(seconds timeout) {
    for (auto end = std::chrono::steady_clock::now() + timeout; std::chrono::steady_clock::now() < end;) {
      wait_for("\x01never", screen_.size(), seconds(1));  // Keep draining the terminal.
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        reaped_ = true;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
    }
    return -1;
  }
  const std::string& screen() const { return screen_; }
  size_t size() const { return screen_.size(); }

 private:
  int master_ = -1;
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string screen_;
};

LINUX_TEST(LinuxGuest, PtyShellHasAPromptATtyAndCtrlCInterruptsSleep) {
  require_kvm();
  Terminal t({moss(), "run", "-t", "--", "sh"});
  ASSERT_TRUE(t.wait_for("# ", 0, seconds(300))) << t.screen();
  size_t mark = t.size();
  t.type("tty; echo cols=$COLUMNS; stty size\r");
  EXPECT_TRUE(t.wait_for("/dev/pts/", mark, seconds(30))) << t.screen();
  EXPECT_TRUE(t.wait_for("40 100", mark, seconds(30))) << "the terminal size did not reach the guest: " << t.screen();
  // Ctrl-C ends the foreground sleep, not the VM: the shell prompts again and still answers.
  mark = t.size();
  // The job says when it runs ("fore42" is in its output, not in the echoed command line):
  // by then it is the foreground job, since a job-control shell's child takes the terminal
  // for its process group before it runs anything.
  t.type("sh -c 'echo fore$((40 + 2)); exec sleep 1000'\r");
  ASSERT_TRUE(t.wait_for("fore42", mark, seconds(30))) << t.screen();
  mark = t.size();
  t.type("\x03");
  EXPECT_TRUE(t.wait_for("# ", mark, seconds(30))) << "no prompt after ^C: " << t.screen();
  mark = t.size();
  t.type("echo alive $((40 + 2))\r");
  EXPECT_TRUE(t.wait_for("alive 42", mark, seconds(30))) << t.screen();
  EXPECT_EQ(t.screen().find("job control turned off"), std::string::npos) << t.screen();
  t.type("exit 3\r");
  EXPECT_EQ(t.wait_exit(seconds(60)), 3) << t.screen();
}

// The value of "key": "..." or "key": N in `json` (moss stats output), or "".
std::string json_field(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\": ");
  if (at == std::string::npos) return "";
  at += key.size() + 4;
  if (json[at] == '"') return json.substr(at + 1, json.find('"', at + 1) - at - 1);
  return json.substr(at, json.find_first_of(",}\n", at) - at);
}

LINUX_TEST(LinuxGuest, VsockBothWaysAndTwoVmsHaveDifferentCids) {
  require_kvm();
  Scratch s;
  std::string rt = (s.dir / "rt").string(), a_sock = (s.dir / "a.sock").string();
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", rt}};
  // Guest-initiated: each command runs only because moss-init connected to the host's port
  // 1124, which the vsock worker asked moss run for (the broker answers it; no socket on disk).
  Process a({moss(), "run", "--name", "va", "--vsock-socket", a_sock, "--", "sh", "-c", "echo up; exec sleep 600"}, env);
  Process b({moss(), "run", "--name", "vb", "--", "sh", "-c", "echo up; exec sleep 600"}, env);
  ASSERT_TRUE(a.wait_for_output("up\n", seconds(400))) << a.out();
  ASSERT_TRUE(b.wait_for_output("up\n", seconds(400))) << b.out();
  auto sa = run({moss(), "stats", "va"}, seconds(10), env);
  auto sb = run({moss(), "stats", "vb"}, seconds(10), env);
  ASSERT_EQ(sa.exit_code, 0) << describe(sa);
  ASSERT_EQ(sb.exit_code, 0) << describe(sb);
  std::string cid_a = json_field(sa.out, "vsock_cid"), cid_b = json_field(sb.out, "vsock_cid");
  EXPECT_GE(std::atoi(cid_a.c_str()), 3) << sa.out;
  EXPECT_GE(std::atoi(cid_b.c_str()), 3) << sb.out;
  EXPECT_NE(cid_a, cid_b) << "two running VMs share a CID";
  EXPECT_EQ(json_field(sa.out, "vsock_socket"), a_sock);
  std::string b_sock = json_field(sb.out, "vsock_socket");
  EXPECT_EQ(b_sock, rt + "/cid-" + cid_b + "/vsock") << sb.out;
  // The dial socket is gone once used: one connection runs the command.
  EXPECT_FALSE(std::filesystem::exists(a_sock + "_1124"));
  // Host-initiated: "CONNECT 1124" on each VM's socket reaches that VM's agent (not the other's).
  std::string exec = build_dir() + "/moss-agent-exec";
  auto ea = run({exec, "--uds", a_sock, "--timeout-ms", "30000", "--", "sh", "-c", "cat /proc/sys/kernel/random/boot_id"},
                seconds(60));
  auto eb = run({exec, "--uds", b_sock, "--timeout-ms", "30000", "--", "sh", "-c", "cat /proc/sys/kernel/random/boot_id"},
                seconds(60));
  EXPECT_EQ(ea.exit_code, 0) << describe(ea);
  EXPECT_EQ(eb.exit_code, 0) << describe(eb);
  EXPECT_EQ(ea.out.size(), 37u) << describe(ea);
  EXPECT_NE(ea.out, eb.out) << "both connections reached the same guest";
  for (const char* name : {"va", "vb"}) {
    auto stop = run({moss(), "stop", name}, seconds(60), env);
    EXPECT_EQ(stop.exit_code, 0) << describe(stop);
  }
  EXPECT_EQ(a.wait(seconds(30)).exit_code, 128 + SIGTERM);
  EXPECT_EQ(b.wait(seconds(30)).exit_code, 128 + SIGTERM);
  // Nothing of either VM is left: sockets, the default directory.
  EXPECT_FALSE(std::filesystem::exists(a_sock));
  EXPECT_FALSE(std::filesystem::exists(rt + "/cid-" + cid_b));
}

// moss exec (issue 13): a named VM started without a command still runs its agent, and moss
// exec runs programs in it as moss run -- CMD would (status, separate streams, stdin, --env,
// --workdir), two at once. A generation renewed over a live agent connection (as the broker
// does after a restore) is what programs read in /run/moss/generation.
LINUX_TEST(LinuxGuest, ExecRunsProgramsInANamedVmAndItsGenerationIsRenewed) {
  require_kvm();
  Scratch s;
  std::string rt = (s.dir / "rt").string(), sock = (s.dir / "x.sock").string();
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", rt}};
  Process vm({moss(), "run", "--name", "x", "--vsock-socket", sock}, env);
  ASSERT_TRUE(vm.wait_for_output("moss-init: ready", seconds(400))) << vm.out();
  {
    Process a({moss(), "exec", "x", "--", "sh", "-c", "echo hi; exit 3"}, env);
    Process b({moss(), "exec", "x", "--", "sh", "-c", "echo hi; exit 3"}, env);
    auto oa = a.wait(seconds(120));
    auto ob = b.wait(seconds(120));
    EXPECT_EQ(oa.exit_code, 3) << describe(oa);
    EXPECT_EQ(oa.out, "hi\n") << describe(oa);
    EXPECT_EQ(oa.err, "") << describe(oa);
    EXPECT_EQ(ob.exit_code, 3) << describe(ob);
    EXPECT_EQ(ob.out, "hi\n") << describe(ob);
  }
  // stdin from a pipe, --env, --workdir, stderr apart, death by a signal: as moss run -- CMD.
  auto e = run({"sh", "-c",
                "printf 'one\\ntwo\\n' | " + quote(moss()) +
                    " exec x --env 'GREETING=hello there' --workdir /tmp -- "
                    "sh -c 'echo \"$GREETING in $(pwd)\"; wc -l; echo oops >&2; kill -TERM $$'"},
               seconds(120), env);
  EXPECT_EQ(e.exit_code, 128 + SIGTERM) << describe(e);
  EXPECT_EQ(e.out, "hello there in /tmp\n2\n") << describe(e);
  EXPECT_EQ(e.err, "oops\n") << describe(e);
  // The generation, renewed from the host over the agent (moss-agent-exec does what the broker
  // does after a restore: renew_generation()).
  auto g = run({build_dir() + "/moss-agent-exec", "--uds", sock, "--timeout-ms", "30000", "--generation", "42"},
               seconds(60));
  EXPECT_EQ(g.exit_code, 0) << describe(g);
  auto cat = run({moss(), "exec", "x", "--", "sh", "-c", "cat /run/moss/generation; ls -l /run/moss/generation"},
                 seconds(60), env);
  EXPECT_EQ(cat.exit_code, 0) << describe(cat);
  EXPECT_EQ(cat.out.substr(0, 3), "42\n") << describe(cat);
  EXPECT_EQ(cat.out.find("-rw-r--r--", 3), 3u) << describe(cat);
  EXPECT_TRUE(vm.wait_for_output("moss-init: generation 42", seconds(30))) << vm.out();
  // No such VM: one sentence, moss's failure status.
  auto none = run({moss(), "exec", "nobody", "--", "true"}, seconds(30), env);
  EXPECT_EQ(none.exit_code, 125) << describe(none);
  EXPECT_EQ(none.err, "moss: no VM named nobody is running\n") << describe(none);
  auto stop = run({moss(), "stop", "x"}, seconds(60), env);
  EXPECT_EQ(stop.exit_code, 0) << describe(stop);
  EXPECT_EQ(vm.wait(seconds(30)).exit_code, 128 + SIGTERM);
}

LINUX_TEST(LinuxGuest, ExecWithATerminalIsAnInteractiveShell) {
  require_kvm();
  Scratch s;
  std::string rt = (s.dir / "rt").string();
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", rt}};
  Process vm({moss(), "run", "--name", "t"}, env);
  ASSERT_TRUE(vm.wait_for_output("moss-init: ready", seconds(400))) << vm.out();
  setenv("MOSS_RUNTIME_DIR", rt.c_str(), 1);  // For the terminal's moss exec.
  {
    Terminal t({moss(), "exec", "t", "-t", "--", "sh"});
    ASSERT_TRUE(t.wait_for("# ", 0, seconds(120))) << t.screen();
    size_t mark = t.size();
    t.type("tty; stty size\r");
    EXPECT_TRUE(t.wait_for("/dev/pts/", mark, seconds(30))) << t.screen();
    EXPECT_TRUE(t.wait_for("40 100", mark, seconds(30))) << "the terminal size did not reach the guest: " << t.screen();
    t.type("exit 5\r");
    EXPECT_EQ(t.wait_exit(seconds(60)), 5) << t.screen();
  }
  unsetenv("MOSS_RUNTIME_DIR");
  auto stop = run({moss(), "stop", "t"}, seconds(60), env);
  EXPECT_EQ(stop.exit_code, 0) << describe(stop);
  EXPECT_EQ(vm.wait(seconds(30)).exit_code, 128 + SIGTERM);
}

// ---- The freestanding virtio-blk guest (tests/guests/virtio_blk.c): its own minimal driver
// through moss's virtio-pci transport and the real moss-blk worker; the disk contract is in
// that file.

uint32_t pattern_word(uint32_t offset, uint32_t salt) { return offset * 0x9e3779b1u + salt; }

// A disk that keeps virtio_blk.c's disk contract (the top of that file).
std::string virtio_blk_disk(Scratch& s) {
  std::string img = (s.dir / "disk.img").string();
  std::vector<uint32_t> words(64 * 1024 / 4, 0);
  for (uint32_t o = 0; o < 4096; o += 4) words[o / 4] = pattern_word(o, 0x6d6f7373);
  int fd = open(img.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, words.data(), words.size() * 4), static_cast<ssize_t>(words.size() * 4));
  close(fd);
  return img;
}

KVM_TEST(FreestandingGuest, VirtioBlkReadAndWriteThroughTheTransportAndWorker) {
  require_kvm();
  auto dir = std::filesystem::temp_directory_path() / ("moss-fs-blk-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string img = (dir / "disk.img").string();
  std::vector<uint32_t> words(64 * 1024 / 4, 0);
  for (uint32_t o = 0; o < 4096; o += 4) words[o / 4] = pattern_word(o, 0x6d6f7373);
  {
    int fd = open(img.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, words.data(), words.size() * 4), static_cast<ssize_t>(words.size() * 4));
    close(fd);
  }
  auto o = run_guest("virtio_blk", {"--disk", img});
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("virtio-blk-guest: ok"), std::string::npos) << describe(o);
  std::vector<uint32_t> after(words.size());
  int fd = open(img.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(read(fd, after.data(), after.size() * 4), static_cast<ssize_t>(after.size() * 4));
  close(fd);
  std::filesystem::remove_all(dir);
  for (uint32_t off = 0; off < 64 * 1024; off += 4) {
    uint32_t want = off < 4096 ? pattern_word(off, 0x6d6f7373) : off < 8192 ? pattern_word(off, 0x77726974) : 0;
    ASSERT_EQ(after[off / 4], want) << "at byte " << off;
  }
}

// The null device (devices/null/), added to moss by its folder alone, reaches a guest through
// the generic path: `--device null,...` is planned by its module, moss-null is started jailed by
// the broker like any worker, and the vcpu process puts it on PCI from the start message's
// device list. virtio_blk_null is virtio_blk.c checking moss-null's contract (that file's top):
// a disk of the given capacity that reads zeros and answers a write and a flush OK.
KVM_TEST(FreestandingGuest, NullDeviceAddedByItsFolderIsADiskThatReadsZeros) {
  require_kvm();
  auto o = run_guest("virtio_blk_null", {"--device", "null,capacity=2097152,num-queues=2"});
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  for (const char* line : {"virtio-blk-guest: capacity 4096 sectors, queue size 256, flush offered\n",
                           "virtio-blk-guest: read sectors 0-7 ok\n", "virtio-blk-guest: wrote sectors 8-15\n",
                           "virtio-blk-guest: flush ok\n", "virtio-blk-guest: read back sectors 8-15 ok\n",
                           "virtio-blk-guest: ok\n"}) {
    EXPECT_NE(o.out.find(line), std::string::npos) << line << describe(o);
  }
  // The same guest on a real disk that holds data fails at the first read: the zeros above
  // came from moss-null, not from a guest that checks nothing.
  Scratch s;
  auto disk = run_guest("virtio_blk_null", {"--disk", virtio_blk_disk(s)});
  EXPECT_EQ(disk.exit_code, 10) << describe(disk);  // kReadMismatch
  EXPECT_NE(disk.out.find("virtio-blk-guest: FAIL sectors 0-7 do not hold what the contract says"), std::string::npos)
      << describe(disk);
}

// ---- Linux guests with virtio-blk disks (virtio-pci in the vcpu process, the data path in a
// vhost-user backend).

// A scratch directory for disk images, removed with the test.
LINUX_TEST(LinuxGuest, TwoDisksAreVdaAndVdbAndDataCrossesBothWays) {
  require_kvm();
  Scratch s;
  std::string a = s.image("a.img", 4 << 20, 1), b = s.image("b.img", 2 << 20, 2);
  std::string a_sum = sha256(a);
  // The guest checksums vda (host-written data), then copies vda's first MiB onto vdb and
  // flushes it; the host checks vdb afterwards. Two vCPUs: two queues per disk.
  auto o = run({moss(), "run", "--cpus", "2", "--disk", a, "--disk", b, "--", "sh", "-c",
                "cat /sys/block/vda/size /sys/block/vdb/size; echo queues=$(ls /sys/block/vda/mq | wc -l); sha256sum /dev/vda; "
                "dd if=/dev/vda of=/dev/vdb bs=64k count=16 conv=fsync 2>/dev/null && echo copied"},
               seconds(300));
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("8192\n4096\n"), std::string::npos) << describe(o);  // 512-byte sectors.
  EXPECT_NE(o.out.find("queues=2\n"), std::string::npos) << describe(o);
  EXPECT_NE(o.out.find(a_sum + "  /dev/vda"), std::string::npos) << describe(o);
  EXPECT_NE(o.out.find("copied"), std::string::npos) << describe(o);
  EXPECT_EQ(sha256(b, 1 << 20), sha256(a, 1 << 20));
}

LINUX_TEST(LinuxGuest, ReadOnlyDiskRefusesWrites) {
  require_kvm();
  Scratch s;
  std::string a = s.image("a.img", 1 << 20, 3);
  std::string before = sha256(a);
  auto o = run({moss(), "run", "--disk", a + ",ro", "--", "sh", "-c",
                "cat /sys/block/vda/ro; echo x | dd of=/dev/vda conv=fsync 2>/dev/null && echo wrote || echo refused"},
               seconds(300));
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("1\nrefused"), std::string::npos) << describe(o);
  EXPECT_EQ(sha256(a), before);
}

// Supervision mid-I/O: the guest writes block i (4 KiB holding "block i") with a flush, then
// prints "flushed i", over and over. Killing a process of the VM ends moss at once with a
// sentence naming it, leaves no process or socket, and every block reported flushed is on disk.
struct MidIo {
  Scratch s;
  std::string img, rt;
  std::unique_ptr<Process> p;
  pid_t vcpu = -1, worker = -1;
  MidIo() {
    img = s.image("io.img", 8 << 20, 9);
    rt = (s.dir / "rt").string();
    p = std::make_unique<Process>(
        std::vector<std::string>{moss(), "run", "--name", "io", "--disk", img, "--", "sh", "-c",
                                 "i=1; while true; do printf 'block %-10d' $i | dd of=/dev/vda bs=4096 seek=$i "
                                 "conv=sync,fsync 2>/dev/null; echo flushed $i; i=$((i+1)); done"},
        std::map<std::string, std::string>{{"MOSS_RUNTIME_DIR", rt}});
    EXPECT_TRUE(p->wait_for_output("flushed 3\n", seconds(300))) << p->out();
    for (pid_t kid : children_of(p->pid())) {
      std::string exe = std::filesystem::read_symlink("/proc/" + std::to_string(kid) + "/exe").string();
      if (exe.find("moss-vcpu") != std::string::npos) vcpu = kid;
      if (exe.find("moss-blk") != std::string::npos) worker = kid;
    }
  }
  // Every block the guest said was flushed holds its text.
  void check_flushed(const std::string& out) {
    size_t last = 0;
    for (size_t at = out.find("flushed "); at != std::string::npos; at = out.find("flushed ", at + 1)) {
      last = std::max<size_t>(last, std::strtoul(out.c_str() + at + 8, nullptr, 10));
    }
    ASSERT_GE(last, 3u);
    int fd = open(img.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    for (size_t i = 1; i <= last; i++) {
      char buf[17] = {};
      ASSERT_EQ(pread(fd, buf, 16, static_cast<off_t>(i * 4096)), 16);
      char want[32];
      std::snprintf(want, sizeof want, "block %-10zu", i);
      EXPECT_EQ(std::string(buf, 16), std::string(want, 16)) << "block " << i << " of " << last;
    }
    close(fd);
  }
};

LINUX_TEST(Supervision, KilledDiskWorkerEndsTheVmAndFlushedWritesSurvive) {
  require_kvm();
  MidIo m;
  ASSERT_GT(m.worker, 0);
  ASSERT_GT(m.vcpu, 0);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(m.worker, SIGKILL), 0);
  auto o = m.p->wait(seconds(30));
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("moss exited %.3f s after its disk worker was killed\n", took);
  EXPECT_LT(took, 5.0) << "a hang, not a slow machine: the nested host measures about 0.4 s";
  EXPECT_EQ(o.exit_code, 125) << describe(o);
  EXPECT_NE(o.err.find("the blk worker for " + m.img + " (pid " + std::to_string(m.worker) +
                       ") was killed by signal 9 (SIGKILL) while the VM was running"),
            std::string::npos)
      << describe(o);
  EXPECT_FALSE(process_exists(m.vcpu));
  EXPECT_FALSE(process_exists(m.worker));
  EXPECT_FALSE(std::filesystem::exists(m.rt + "/io.sock"));
  m.check_flushed(o.out);
}

LINUX_TEST(Supervision, KilledVcpuProcessTakesTheWorkerAndFlushedWritesSurvive) {
  require_kvm();
  MidIo m;
  ASSERT_GT(m.worker, 0);
  ASSERT_GT(m.vcpu, 0);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(m.vcpu, SIGKILL), 0);
  auto o = m.p->wait(seconds(30));
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("moss exited %.3f s after its vcpu process was killed\n", took);
  EXPECT_LT(took, 5.0) << "a hang, not a slow machine: the nested host measures about 0.5 s";
  EXPECT_EQ(o.exit_code, 125) << describe(o);
  EXPECT_NE(o.err.find("the vcpu process (pid " + std::to_string(m.vcpu) + ") was killed by signal 9 (SIGKILL)"),
            std::string::npos)
      << describe(o);
  EXPECT_FALSE(process_exists(m.worker));
  EXPECT_FALSE(std::filesystem::exists(m.rt + "/io.sock"));
  m.check_flushed(o.out);
}

// Interop, moss as the frontend: qemu-storage-daemon's vhost-user-blk export as the disk.
LINUX_TEST(LinuxGuest, QemuStorageDaemonServesTheDisk) {
  require_kvm();
  if (access("/usr/bin/qemu-storage-daemon", X_OK) != 0) GTEST_SKIP() << "SKIP: qemu-storage-daemon is not installed";
  Scratch s;
  std::string a = s.image("q.img", 4 << 20, 4);
  std::string a_sum = sha256(a), sock = (s.dir / "qsd.sock").string();
  Process qsd({"qemu-storage-daemon", "--blockdev", "driver=file,node-name=f,filename=" + a, "--export",
               "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=" + sock + ",writable=on"});
  for (int i = 0; i < 600 && access(sock.c_str(), F_OK) != 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (access(sock.c_str(), F_OK) != 0) {
    kill(qsd.pid(), SIGTERM);
    FAIL() << "qemu-storage-daemon did not create its socket in 30 s: " << describe(qsd.wait(seconds(10)));
  }
  auto o = run({moss(), "run", "--vhost-user-blk", sock, "--", "sh", "-c",
                "sha256sum /dev/vda; echo moss-was-here | dd of=/dev/vda bs=512 seek=100 conv=fsync 2>/dev/null "
                "&& echo written"},
               seconds(300));
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find(a_sum + "  /dev/vda"), std::string::npos) << describe(o);
  EXPECT_NE(o.out.find("written"), std::string::npos) << describe(o);
  auto check = run({"sh", "-c", "dd if=" + a + " bs=512 skip=100 count=1 2>/dev/null | head -c 13"}, seconds(10));
  EXPECT_EQ(check.out, "moss-was-here");
  kill(qsd.pid(), SIGTERM);
  auto q = qsd.wait(seconds(10));
  EXPECT_FALSE(q.timed_out);
}

// ---- The sandbox (policies/sandbox.h, broker/launcher.h). Test hooks (policies/probes.h)
// run probes inside each running role, or make a role call what its policy forbids.

const char* const kProbes[] = {"open-host-file", "inet-socket",      "ptrace",        "mount",
                               "execve",         "raise-capability", "see-host-pids", "new-user-namespace"};

// ROLE PROBE -> result, from "moss-sandbox-probe: ROLE PROBE RESULT" lines.
std::map<std::string, std::string> probe_results(const std::string& err) {
  std::map<std::string, std::string> out;
  std::istringstream in(err);
  std::string line;
  const std::string prefix = "moss-sandbox-probe: ";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::istringstream words(line.substr(prefix.size()));
    std::string role, probe, result;
    words >> role >> probe;
    std::getline(words, result);
    out[role + " " + probe] = result.substr(result.find_first_not_of(' '));
  }
  return out;
}

KVM_TEST(Sandbox, ProbesInsideTheVcpuProcessAndTheWorkersAreBlocked) {
  require_kvm();
  Scratch s;
  std::string img = virtio_blk_disk(s);
  auto o = run({moss(), "run", "--kernel", guest("virtio_blk"), "--initrd", "none", "--mem", "64M", "--disk", img},
               seconds(120), {{"MOSS_TEST_PROBE", "all"}});
  // The jailed VM works: the guest's driver reads and writes the disk through the worker.
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.out.find("virtio-blk-guest: ok"), std::string::npos) << describe(o);
  auto results = probe_results(o.err);
  for (const char* role : {"vcpu", "blk", "vsock"}) {
    for (const char* probe : kProbes) {
      std::string key = std::string(role) + " " + probe;
      ASSERT_TRUE(results.count(key)) << key << " did not report: " << describe(o);
      EXPECT_EQ(results[key].rfind("blocked (", 0), 0u) << key << ": " << results[key];
    }
  }
  EXPECT_EQ(o.err.find("WARNING"), std::string::npos) << describe(o);
}

KVM_TEST(Sandbox, TheSameProbesSucceedWithNoSandbox) {
  require_kvm();
  Scratch s;
  std::string img = virtio_blk_disk(s);
  auto o = run({moss(), "run", "--no-sandbox", "--kernel", guest("virtio_blk"), "--initrd", "none", "--mem", "64M",
                "--disk", img},
               seconds(120), {{"MOSS_TEST_PROBE", "all"}});
  EXPECT_EQ(o.exit_code, 0) << describe(o);
  EXPECT_NE(o.err.find("moss: WARNING: --no-sandbox: the vcpu process and the device workers run WITHOUT their "
                       "sandbox"),
            std::string::npos)
      << describe(o);
  auto results = probe_results(o.err);
  for (const char* role : {"vcpu", "blk", "vsock"}) {
    for (const char* probe : kProbes) {
      std::string key = std::string(role) + " " + probe;
      EXPECT_EQ(results[key], "allowed") << key << ": " << describe(o);
    }
  }
}

// The worker makes a forbidden call while the VM runs (on SIGUSR2, a test hook): seccomp kills
// it, and the broker names it and the signal.
KVM_TEST(Sandbox, ForbiddenSyscallKillsTheBlkWorkerAndTheBrokerSaysSo) {
  require_kvm();
  Scratch s;
  std::string img = s.image("a.img", 1 << 20, 5);
  Process p({moss(), "run", "--kernel", guest("spin"), "--initrd", "none", "--mem", "64M", "--disk", img},
            {{"MOSS_TEST_FORBIDDEN_SYSCALL", "blk:on-sigusr2"}});
  ASSERT_TRUE(p.wait_for_output("spinning", seconds(60))) << p.out();
  pid_t blk = child_named(p.pid(), "moss-blk");
  ASSERT_GT(blk, 0);
  kill(blk, SIGUSR2);
  auto o = p.wait(seconds(30));
  EXPECT_EQ(o.exit_code, 125) << describe(o);
  EXPECT_NE(o.err.find("the blk worker for " + img + " (pid " + std::to_string(blk) +
                       ") was killed by signal 31 (SIGSYS) while the VM was running"),
            std::string::npos)
      << describe(o);
}

// Runs the spin guest with the vcpu process's test hook `hook` (MOSS_TEST_FORBIDDEN_SYSCALL),
// sends the running vcpu process SIGUSR2 and checks that seccomp killed it and moss said so.
// Returns moss's outcome.
Outcome expect_vcpu_killed_by_sigsys_on_sigusr2(const std::string& hook) {
  Process p({moss(), "run", "--kernel", guest("spin"), "--initrd", "none", "--mem", "64M"},
            {{"MOSS_TEST_FORBIDDEN_SYSCALL", hook}});
  EXPECT_TRUE(p.wait_for_output("spinning", seconds(60))) << p.out();
  pid_t vcpu = child_named(p.pid(), "moss-vcpu");
  EXPECT_GT(vcpu, 0);
  if (vcpu > 0) kill(vcpu, SIGUSR2);
  auto o = p.wait(seconds(30));
  EXPECT_EQ(o.exit_code, 125) << describe(o);
  EXPECT_NE(o.err.find("the vcpu process (pid " + std::to_string(vcpu) + ") was killed by signal 31 (SIGSYS)"),
            std::string::npos)
      << describe(o);
  EXPECT_FALSE(vcpu > 0 && process_exists(vcpu));
  return o;
}

// Once its VM is set up the vcpu process may make no other KVM object: KVM_CREATE_VM, tried
// on every fd it holds (its /dev/kvm fd among them, where the role's own policy allows it for
// the set-up), kills it. Without the second filter the hook would make a VM and say so, and
// the VM would go on.
KVM_TEST(Sandbox, TheVcpuProcessCannotMakeAnotherVmOnceItsOwnIsSetUp) {
  require_kvm();
  auto o = expect_vcpu_killed_by_sigsys_on_sigusr2("vcpu:create-vm-on-sigusr2");
  EXPECT_EQ(o.err.find("made VM fd"), std::string::npos) << describe(o);
}

KVM_TEST(Sandbox, ForbiddenSyscallKillsTheVcpuProcessAndTheBrokerSaysSo) {
  require_kvm();
  expect_vcpu_killed_by_sigsys_on_sigusr2("vcpu:on-sigusr2");
}


// ---- Spores through the CLI (moss suspend, moss restore, the store): freestanding guests,
// so they run on PVM. The counter guest keeps all of its state in registers and prints one
// tick a line: a VM restored from a spore continues its count instead of starting again.

struct SporeScratch {
  std::filesystem::path dir;
  std::map<std::string, std::string> env;
  explicit SporeScratch(const std::string& tag) {
    dir = std::filesystem::temp_directory_path() / ("moss-spore-" + tag + "-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    env = {{"MOSS_RUNTIME_DIR", (dir / "rt").string()}, {"XDG_DATA_HOME", (dir / "data").string()}};
  }
  ~SporeScratch() { std::filesystem::remove_all(dir); }
  std::string path(const std::string& name) const { return (dir / name).string(); }
  std::string store() const { return path("store"); }
};

std::vector<std::string> counter_args(const std::string& name, std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {moss(), "run", "--name", name, "--kernel", guest("counter"), "--initrd", "none",
                                   "--mem", "64M"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// The ticks the counter guest printed, in order (whole lines only).
std::vector<uint64_t> ticks(const std::string& out) {
  std::vector<uint64_t> t;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // The last line may be cut short.
    auto at = line.find("tick ");
    if (at == std::string::npos || line.size() < at + 5 + 16) continue;
    t.push_back(std::stoull(line.substr(at + 5, 16), nullptr, 16));
  }
  return t;
}

std::string tick_line(uint64_t n) {
  char want[64];
  std::snprintf(want, sizeof want, "tick %016llx", static_cast<unsigned long long>(n));
  return want;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

// A VM restored from `spore` continues the count that ended at `last`: its first whole tick
// is the next one (or the one after, when the suspend cut a line short), never a new start.
void expect_count_continues(Process& restored, uint64_t last) {
  ASSERT_TRUE(restored.wait_for_output(tick_line(last + 2), seconds(60))) << restored.out();
  auto t = ticks(restored.out());
  ASSERT_FALSE(t.empty()) << restored.out();
  EXPECT_TRUE(t.front() == last + 1 || t.front() == last + 2) << "suspended after tick " << last << ", restored at tick "
                                                              << t.front() << ":\n" << restored.out();
  for (size_t i = 1; i < t.size(); i++) EXPECT_EQ(t[i], t[i - 1] + 1) << restored.out();
}

KVM_TEST(Spore, ASuspendedCounterContinuesInAFreshMoss) {
  require_kvm();
  SporeScratch s("continue");
  Process vm(counter_args("count"), s.env);
  ASSERT_TRUE(vm.wait_for_output(tick_line(3), seconds(60))) << vm.out();
  auto sus = run({moss(), "suspend", "count", "--out", s.path("count.spore"), "--store", s.store()}, seconds(60), s.env);
  EXPECT_EQ(sus.exit_code, 0) << describe(sus);
  EXPECT_NE(sus.out.find("the VM is in the spore " + s.path("count.spore")), std::string::npos) << describe(sus);
  auto ended = vm.wait(seconds(30));
  EXPECT_EQ(ended.exit_code, 0) << describe(ended);
  EXPECT_NE(ended.err.find("moss: the VM was suspended to " + s.path("count.spore")), std::string::npos) << describe(ended);
  auto before = ticks(ended.out);
  ASSERT_FALSE(before.empty());
  // Spores and the store hold guest RAM: directories 0700, files 0600.
  EXPECT_EQ(mode_of(s.path("count.spore")), 0700u);
  EXPECT_EQ(mode_of(s.path("count.spore/manifest")), 0600u);
  EXPECT_EQ(mode_of(s.store()), 0700u);
  for (auto& e : std::filesystem::recursive_directory_iterator(s.store() + "/chunks")) {
    EXPECT_EQ(mode_of(e.path().string()), e.is_directory() ? 0700u : 0600u) << e.path();
  }
  auto json = run({moss(), "inspect", s.path("count.spore")}, seconds(30));
  EXPECT_EQ(json.exit_code, 0) << describe(json);
  EXPECT_NE(json.out.find("\"name\": \"count\""), std::string::npos) << json.out.substr(0, 2000);
  EXPECT_NE(json.out.find("\"kind\": \"vsock\""), std::string::npos);

  Process restored({moss(), "restore", s.path("count.spore"), "--name", "count", "--store", s.store()}, s.env);
  expect_count_continues(restored, before.back());
  // The restored VM is a named VM like any other, and can be suspended again.
  auto st = run({moss(), "stats", "count"}, seconds(10), s.env);
  EXPECT_NE(st.out.find("\"state\": \"running\""), std::string::npos) << describe(st);
  auto again = run({moss(), "suspend", "count", "--out", s.path("again.spore"), "--store", s.store()}, seconds(60), s.env);
  EXPECT_EQ(again.exit_code, 0) << describe(again);
  auto second = restored.wait(seconds(30));
  EXPECT_EQ(second.exit_code, 0) << describe(second);
  // The restore gave the VM a fresh generation, which its next spore records.
  auto json2 = run({moss(), "inspect", s.path("again.spore")}, seconds(30));
  EXPECT_NE(json2.out.find("\"generation\": \""), std::string::npos) << json2.out.substr(json2.out.find("identity"));
  EXPECT_EQ(json2.out.find("\"generation\": \"0\""), std::string::npos) << json2.out.substr(json2.out.find("identity"));
}

KVM_TEST(Spore, KeepRunningLeavesTheVmRunningAndTheSporeRestoresBesideIt) {
  require_kvm();
  SporeScratch s("keep");
  Process vm(counter_args("keep"), s.env);
  ASSERT_TRUE(vm.wait_for_output(tick_line(2), seconds(60))) << vm.out();
  auto sus = run({moss(), "suspend", "keep", "--out", s.path("k.spore"), "--keep-running", "--store", s.store()},
                 seconds(60), s.env);
  EXPECT_EQ(sus.exit_code, 0) << describe(sus);
  EXPECT_NE(sus.out.find("the VM runs on"), std::string::npos) << describe(sus);
  uint64_t at_suspend = ticks(vm.out()).back();
  ASSERT_TRUE(vm.wait_for_output(tick_line(at_suspend + 2), seconds(60))) << "no tick after the suspend:\n" << vm.out();
  // The spore runs beside the VM it came from, under another name (and another CID).
  Process copy({moss(), "restore", s.path("k.spore"), "--name", "copy", "--store", s.store()}, s.env);
  expect_count_continues(copy, at_suspend);
  auto a = run({moss(), "stats", "keep"}, seconds(10), s.env), b = run({moss(), "stats", "copy"}, seconds(10), s.env);
  auto cid = [](const std::string& json) {
    auto at = json.find("\"vsock_cid\": ");
    return at == std::string::npos ? std::string() : json.substr(at, json.find(',', at) - at);
  };
  EXPECT_NE(cid(a.out), "");
  EXPECT_NE(cid(a.out), cid(b.out)) << a.out << b.out;
  EXPECT_EQ(run({moss(), "stop", "copy"}, seconds(30), s.env).exit_code, 0);
  EXPECT_EQ(run({moss(), "stop", "keep"}, seconds(30), s.env).exit_code, 0);
  copy.wait(seconds(20));
  vm.wait(seconds(20));
}

// A backend without vhost-user DEVICE_STATE (qemu-storage-daemon 7.2) cannot be saved: the
// suspend says so and changes nothing: the VM was never paused, no spore, nothing in the store.
KVM_TEST(Spore, ABackendWithoutDeviceStateFailsTheSuspendBeforeAnythingIsPaused) {
  require_kvm();
  if (access("/usr/bin/qemu-storage-daemon", X_OK) != 0) GTEST_SKIP() << "SKIP: qemu-storage-daemon is not installed";
  SporeScratch s("qsd");
  std::string img = s.path("q.img"), sock = s.path("qsd.sock");
  { std::ofstream(img) << std::string(1 << 20, 'q'); }
  Process qsd({"qemu-storage-daemon", "--blockdev", "driver=file,node-name=f,filename=" + img, "--export",
               "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=" + sock + ",writable=on"});
  for (int i = 0; i < 600 && access(sock.c_str(), F_OK) != 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(access(sock.c_str(), F_OK), 0) << "qemu-storage-daemon made no socket";
  Process vm(counter_args("ext", {"--vhost-user-blk", sock}), s.env);
  ASSERT_TRUE(vm.wait_for_output(tick_line(2), seconds(60))) << vm.out();
  auto sus = run({moss(), "suspend", "ext", "--out", s.path("e.spore"), "--store", s.store()}, seconds(60), s.env);
  EXPECT_EQ(sus.exit_code, 125) << describe(sus);
  EXPECT_EQ(std::count(sus.err.begin(), sus.err.end(), '\n'), 1) << describe(sus);
  EXPECT_NE(sus.err.find("moss: the VM named ext could not be suspended: "), std::string::npos) << describe(sus);
  EXPECT_NE(sus.err.find(sock), std::string::npos) << "the sentence names the device: " << describe(sus);
  EXPECT_FALSE(std::filesystem::exists(s.path("e.spore")));
  auto st = run({moss(), "stats", "ext"}, seconds(10), s.env);
  EXPECT_NE(st.out.find("\"state\": \"running\""), std::string::npos) << describe(st);
  uint64_t now = ticks(vm.out()).back();
  EXPECT_TRUE(vm.wait_for_output(tick_line(now + 1), seconds(60))) << vm.out();
  EXPECT_EQ(run({moss(), "stop", "ext"}, seconds(30), s.env).exit_code, 0);
  vm.wait(seconds(20));
  kill(qsd.pid(), SIGTERM);
  qsd.wait(seconds(10));
}

// A real spore of a VM with a disk, corrupted each way restore must refuse, one sentence each,
// before the guest runs: and the same spore, uncorrupted, with the same disk, restores.
KVM_TEST(Spore, CorruptSporesForeignHostsAndOtherDisksAreRefused) {
  require_kvm();
  SporeScratch s("refuse");
  std::string disk = s.path("d.img");
  {
    std::ofstream f(disk, std::ios::binary);
    for (int i = 0; i < (4 << 20) / 8; i++) f.write("diskdata", 8);
  }
  Process vm(counter_args("r", {"--disk", disk}), s.env);
  ASSERT_TRUE(vm.wait_for_output(tick_line(2), seconds(60))) << vm.out();
  auto sus = run({moss(), "suspend", "r", "--out", s.path("r.spore"), "--store", s.store()}, seconds(60), s.env);
  ASSERT_EQ(sus.exit_code, 0) << describe(sus);
  uint64_t last = ticks(vm.wait(seconds(30)).out).back();
  auto refused = [&](const std::string& spore, std::vector<std::string> extra, const std::string& needle) {
    std::vector<std::string> argv = {moss(), "restore", spore, "--name", "r2", "--store", s.store()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto o = run(argv, seconds(60), s.env);
    EXPECT_EQ(o.exit_code, 125) << needle << ": " << describe(o);
    EXPECT_NE(o.err.find(needle), std::string::npos) << describe(o);
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << describe(o);
    EXPECT_EQ(o.out.find("tick"), std::string::npos) << "the guest ran: " << describe(o);
  };
  auto copy = [&](const std::string& name) {
    std::filesystem::copy(s.path("r.spore"), s.path(name), std::filesystem::copy_options::recursive);
    return s.path(name);
  };
  auto manifest = [](const std::string& spore) {
    std::ifstream f(spore + "/manifest", std::ios::binary);
    return std::vector<char>{std::istreambuf_iterator<char>(f), {}};
  };
  auto write_manifest = [](const std::string& spore, const std::vector<char>& bytes) {
    std::ofstream(spore + "/manifest", std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<long>(bytes.size()));
  };
  // The disks: none, one of another size, one of the same size with other bytes.
  refused(s.path("r.spore"), {}, "the spore's VM had 1 disk and 0 were given");
  std::string small = s.path("small.img"), other = s.path("other.img");
  { std::ofstream(small) << std::string(1 << 20, 'x'); }
  { std::ofstream(other) << std::string(4 << 20, 'x'); }
  refused(s.path("r.spore"), {"--disk", small}, "disk 1 is 1048576 bytes and the spore's disk was 4194304");
  refused(s.path("r.spore"), {"--disk", other}, "disk 1 is not the disk the spore was made with");
  // A cut manifest; a format version this moss does not know.
  auto bytes = manifest(s.path("r.spore"));
  std::string cut = copy("cut.spore");
  write_manifest(cut, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() / 2)));
  refused(cut, {"--disk", disk}, cut);
  std::string newer = copy("newer.spore");
  {
    kj::ArrayPtr<const capnp::word> words(reinterpret_cast<const capnp::word*>(bytes.data()), bytes.size() / 8);
    capnp::FlatArrayMessageReader reader(words);
    capnp::MallocMessageBuilder mb;
    mb.setRoot(reader.getRoot<capnp::AnyPointer>().getAs<capnp::AnyStruct>());
    auto root = mb.getRoot<capnp::AnyStruct>();
    // formatVersion is the Manifest's first field: its data section's first word.
    root.getDataSection()[0] = 2;
    auto flat = capnp::messageToFlatArray(mb);
    write_manifest(newer, std::vector<char>(reinterpret_cast<const char*>(flat.begin()), reinterpret_cast<const char*>(flat.end())));
  }
  refused(newer, {"--disk", disk}, "version 2");
  // A CPU feature no host has: leaf 7.0 EDX bit 0 (reserved) set in the host contract's CPUID.
  std::string alien = copy("alien.spore");
  {
    std::string json = run({moss(), "inspect", s.path("r.spore")}, seconds(30)).out;
    auto at = json.find("\"cpuid\": \"");
    ASSERT_NE(at, std::string::npos);
    std::string hex = json.substr(at + 10, json.find('"', at + 10) - at - 10);
    // Find that hex (the contract's copy of vCPU 0's table) in the manifest's bytes and set the bit there.
    std::vector<char> table;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) table.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    auto m = manifest(alien);
    auto pos = std::search(m.begin(), m.end(), table.begin(), table.end());
    ASSERT_NE(pos, m.end());
    bool set = false;
    for (size_t e = 0; e + 40 <= table.size(); e += 40) {
      uint32_t fn, idx;
      std::memcpy(&fn, table.data() + e, 4);
      std::memcpy(&idx, table.data() + e + 4, 4);
      if (fn == 7 && idx == 0) {
        pos[static_cast<long>(e + 24)] |= 1;  // EDX: function, index, flags, eax, ebx, ecx, edx.
        set = true;
      }
    }
    ASSERT_TRUE(set) << "the spore's CPUID has no leaf 7.0";
    write_manifest(alien, m);
  }
  refused(alien, {"--disk", disk}, "CPUID leaf 0x7.0 EDX bit 0");
  // A flipped byte in a stored chunk: named, and nothing runs.
  std::string victim;
  for (auto& e : std::filesystem::recursive_directory_iterator(s.store() + "/chunks")) {
    if (e.is_regular_file()) victim = e.path().string();
  }
  ASSERT_FALSE(victim.empty());
  std::string saved = victim + ".orig";
  std::filesystem::copy_file(victim, saved);
  {
    std::fstream f(victim, std::ios::binary | std::ios::in | std::ios::out);
    f.seekg(20);
    char c = 0;
    f.read(&c, 1);
    f.seekp(20);
    c ^= 0x40;
    f.write(&c, 1);
  }
  std::string chunk_name = victim.substr(victim.rfind('/') + 1);
  refused(s.path("r.spore"), {"--disk", disk}, chunk_name.substr(0, 8));
  std::filesystem::rename(saved, victim);
  // Whole again, with its own disk: it runs on.
  Process restored({moss(), "restore", s.path("r.spore"), "--name", "r2", "--store", s.store(), "--disk", disk}, s.env);
  expect_count_continues(restored, last);
  EXPECT_EQ(run({moss(), "stop", "r2"}, seconds(30), s.env).exit_code, 0);
  restored.wait(seconds(20));
}

// kill -9 in the middle of a suspend (held between writing the chunks and recording the spore
// by the broker's test hook): no half spore, and the store is usable after.
void kill_during_suspend(const std::string& victim_role, const std::string& step = "chunks") {
  SporeScratch s("kill-" + victim_role);
  auto env = s.env;
  env["MOSS_TEST_SUSPEND_HOLD"] = step;
  Process vm(counter_args("k", {"--disk", [&] {
                                  std::ofstream(s.path("d.img")) << std::string(1 << 20, 'd');
                                  return s.path("d.img");
                                }()}),
             env);
  ASSERT_TRUE(vm.wait_for_output(tick_line(2), seconds(60))) << vm.out();
  std::string spore = s.path("k.spore");
  Process sus({moss(), "suspend", "k", "--out", spore, "--store", s.store()}, s.env);
  for (int i = 0; i < 600 && access((spore + ".hold").c_str(), F_OK) != 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (access((spore + ".hold").c_str(), F_OK) != 0) FAIL() << "the suspend never reached its chunks: " << describe(sus.wait(seconds(30)));
  pid_t victim = victim_role == "broker" ? vm.pid() : child_named(vm.pid(), victim_role);
  ASSERT_GT(victim, 0) << victim_role;
  kill(victim, SIGKILL);
  // SIGKILL is not synchronous: the victim is gone (or a zombie) before anything goes on.
  for (int i = 0; i < 1000 && process_exists(victim); i++) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_FALSE(process_exists(victim)) << victim_role << " outlived SIGKILL";
  std::filesystem::remove(spore + ".hold");  // Lets a writer that is still alive go on.
  auto client = sus.wait(seconds(60));
  auto ended = vm.wait(seconds(60));
  EXPECT_FALSE(ended.timed_out) << describe(ended);
  if (victim_role == "broker") {
    EXPECT_NE(client.exit_code, 0) << describe(client);
    EXPECT_EQ(std::count(client.err.begin(), client.err.end(), '\n'), 1) << describe(client);
  } else {
    EXPECT_NE(ended.exit_code, 0) << "the VM lost a process and ended with an error: " << describe(ended);
  }
  // Either no spore or a whole one (the state was taken before the kill), never a half one.
  if (std::filesystem::exists(spore)) {
    auto json = run({moss(), "inspect", spore}, seconds(30));
    EXPECT_EQ(json.exit_code, 0) << "a spore that exists is whole: " << describe(json);
  }
  for (auto& e : std::filesystem::directory_iterator(s.dir)) {
    std::string f = e.path().filename().string();
    EXPECT_TRUE(f == "k.spore" || f.find("k.spore") == std::string::npos) << "left behind: " << e.path();
  }
  auto gc = run({moss(), "store", "gc", "--store", s.store()}, seconds(60));
  EXPECT_EQ(gc.exit_code, 0) << describe(gc);
  // A later suspend works.
  Process vm2(counter_args("k2"), s.env);
  ASSERT_TRUE(vm2.wait_for_output(tick_line(2), seconds(60))) << vm2.out();
  auto sus2 = run({moss(), "suspend", "k2", "--out", s.path("k2.spore"), "--store", s.store()}, seconds(60), s.env);
  EXPECT_EQ(sus2.exit_code, 0) << describe(sus2);
  vm2.wait(seconds(30));
  EXPECT_EQ(run({moss(), "inspect", s.path("k2.spore")}, seconds(30)).exit_code, 0);
}

KVM_TEST(Spore, KillingTheBrokerMidSuspendLeavesNoHalfSpore) {
  require_kvm();
  kill_during_suspend("broker");
}
KVM_TEST(Spore, KillingTheBrokerOnceItsSporeIsRecordedLeavesNoHalfSpore) {
  require_kvm();
  kill_during_suspend("broker", "root");
}
KVM_TEST(Spore, KillingTheVcpuProcessMidSuspendLeavesNoHalfSpore) {
  require_kvm();
  kill_during_suspend("moss-vcpu");
}
KVM_TEST(Spore, KillingAWorkerMidSuspendLeavesNoHalfSpore) {
  require_kvm();
  kill_during_suspend("moss-blk");
}

// moss store gc while a suspend is writing (held after its chunks, before its spore exists):
// gc waits for the writer, and keeps every chunk the new spore names.
KVM_TEST(Spore, StoreGcDuringASuspendKeepsTheChunksBeingWritten) {
  require_kvm();
  SporeScratch s("gc");
  auto env = s.env;
  env["MOSS_TEST_SUSPEND_HOLD"] = "chunks";
  Process vm(counter_args("g"), env);
  ASSERT_TRUE(vm.wait_for_output(tick_line(2), seconds(60))) << vm.out();
  std::string spore = s.path("g.spore");
  Process sus({moss(), "suspend", "g", "--out", spore, "--store", s.store()}, s.env);
  for (int i = 0; i < 600 && access((spore + ".hold").c_str(), F_OK) != 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (access((spore + ".hold").c_str(), F_OK) != 0) FAIL() << "the suspend never reached its chunks: " << describe(sus.wait(seconds(30)));
  Process gc({moss(), "store", "gc", "--store", s.store()});
  EXPECT_FALSE(gc.wait_for_output("store", seconds(2))) << "gc ran while a suspend held the store: " << gc.out();
  std::filesystem::remove(spore + ".hold");
  auto client = sus.wait(seconds(60));
  EXPECT_EQ(client.exit_code, 0) << describe(client);
  auto g = gc.wait(seconds(60));
  EXPECT_EQ(g.exit_code, 0) << describe(g);
  uint64_t last = ticks(vm.wait(seconds(30)).out).back();
  Process restored({moss(), "restore", spore, "--name", "g", "--store", s.store()}, s.env);
  expect_count_continues(restored, last);
  EXPECT_EQ(run({moss(), "stop", "g"}, seconds(30), s.env).exit_code, 0);
  restored.wait(seconds(20));
}

// A store on a small tmpfs that fills: one sentence, no spore, no chunk left, the VM runs on.
KVM_TEST(Spore, AFullStoreFailsTheSuspendWithOneSentenceAndTheVmRunsOn) {
  require_kvm();
  if (geteuid() != 0) GTEST_SKIP() << "SKIP: mounting a small tmpfs needs root";
  SporeScratch s("full");
  std::filesystem::create_directories(s.path("small"));
  ASSERT_EQ(mount("tmpfs", s.path("small").c_str(), "tmpfs", 0, "size=256k,mode=0700"), 0) << strerror(errno);
  struct Unmount {
    std::string p;
    ~Unmount() { umount2(p.c_str(), MNT_DETACH); }
  } unmount{s.path("small")};
  // The counter guest's RAM is mostly zero and compresses to little: random bytes take most of
  // the tmpfs first, leaving less room than the spore's chunks and manifest need.
  {
    std::ofstream junk(s.path("small/junk"), std::ios::binary);
    std::string fill(240 * 1024, '\0');
    uint64_t x = 88172645463325252ull;
    for (auto& c : fill) c = static_cast<char>(x ^= x << 13, x ^= x >> 7, x ^= x << 17);
    junk.write(fill.data(), static_cast<long>(fill.size()));
  }
  Process vm(counter_args("full"), s.env);
  ASSERT_TRUE(vm.wait_for_output(tick_line(2), seconds(60))) << vm.out();
  std::string store = s.path("small/store");
  auto sus = run({moss(), "suspend", "full", "--out", s.path("small/f.spore"), "--store", store}, seconds(60), s.env);
  EXPECT_EQ(sus.exit_code, 125) << describe(sus);
  EXPECT_EQ(std::count(sus.err.begin(), sus.err.end(), '\n'), 1) << describe(sus);
  EXPECT_NE(sus.err.find("could not be suspended"), std::string::npos) << describe(sus);
  EXPECT_FALSE(std::filesystem::exists(s.path("small/f.spore")));
  size_t files = 0;
  if (std::filesystem::exists(store)) {
    for (auto& e : std::filesystem::recursive_directory_iterator(store)) files += e.is_regular_file() && e.path().filename() != "lock";
  }
  EXPECT_EQ(files, 0u) << "the failed suspend left files in the store";
  uint64_t now = ticks(vm.out()).back();
  EXPECT_TRUE(vm.wait_for_output(tick_line(now + 1), seconds(60))) << "the VM did not run on: " << vm.out();
  EXPECT_EQ(run({moss(), "stop", "full"}, seconds(30), s.env).exit_code, 0);
  vm.wait(seconds(20));
}

// A VM paused by moss pause can be suspended (a spore of a paused VM, as Firecracker takes
// them): with --keep-running it stays paused until moss resume, and then counts on; the spore
// restores beside it.
KVM_TEST(Spore, APausedVmIsSuspendedAndStaysPausedUntilResumed) {
  require_kvm();
  SporeScratch s("paused");
  Process vm(counter_args("pz"), s.env);
  ASSERT_TRUE(vm.wait_for_output(tick_line(2), seconds(60))) << vm.out();
  ASSERT_EQ(run({moss(), "pause", "pz"}, seconds(30), s.env).exit_code, 0);
  auto sus = run({moss(), "suspend", "pz", "--keep-running", "--out", s.path("pz.spore"), "--store", s.store()},
                 seconds(60), s.env);
  ASSERT_EQ(sus.exit_code, 0) << describe(sus);
  EXPECT_NE(sus.out.find("the VM stays paused"), std::string::npos) << describe(sus);
  auto st = run({moss(), "stats", "pz"}, seconds(10), s.env);
  EXPECT_NE(st.out.find("\"state\": \"paused\""), std::string::npos) << describe(st);
  vm.wait_for_output("(nothing: the console catches up)", seconds(1));
  ASSERT_FALSE(ticks(vm.out()).empty()) << vm.out();
  const uint64_t at_pause = ticks(vm.out()).back();
  ASSERT_EQ(run({moss(), "resume", "pz"}, seconds(30), s.env).exit_code, 0);
  EXPECT_TRUE(vm.wait_for_output(tick_line(at_pause + 2), seconds(60))) << vm.out();
  EXPECT_EQ(run({moss(), "stop", "pz"}, seconds(30), s.env).exit_code, 0);
  vm.wait(seconds(20));
  Process restored({moss(), "restore", s.path("pz.spore"), "--name", "pz", "--store", s.store()}, s.env);
  expect_count_continues(restored, at_pause);
  EXPECT_EQ(run({moss(), "stop", "pz"}, seconds(30), s.env).exit_code, 0);
  restored.wait(seconds(20));
}

// moss pack, then moss unpack into another store and directory: the unpacked spore resumes.
KVM_TEST(Spore, PackedAndUnpackedElsewhereTheSporeResumes) {
  require_kvm();
  SporeScratch s("pack");
  Process vm(counter_args("p"), s.env);
  ASSERT_TRUE(vm.wait_for_output(tick_line(2), seconds(60))) << vm.out();
  ASSERT_EQ(run({moss(), "suspend", "p", "--out", s.path("p.spore"), "--store", s.store()}, seconds(60), s.env).exit_code, 0);
  uint64_t last = ticks(vm.wait(seconds(30)).out).back();
  auto pack = run({moss(), "pack", s.path("p.spore"), "-o", s.path("p.mossp"), "--store", s.store()}, seconds(60));
  ASSERT_EQ(pack.exit_code, 0) << describe(pack);
  std::filesystem::remove_all(s.path("p.spore"));
  std::filesystem::remove_all(s.store());
  std::filesystem::create_directories(s.path("elsewhere"));
  auto unpack = run({moss(), "unpack", s.path("p.mossp"), "-o", s.path("elsewhere/p.spore"), "--store", s.path("store2")},
                    seconds(60));
  ASSERT_EQ(unpack.exit_code, 0) << describe(unpack);
  Process restored({moss(), "restore", s.path("elsewhere/p.spore"), "--name", "p", "--store", s.path("store2")}, s.env);
  expect_count_continues(restored, last);
  EXPECT_EQ(run({moss(), "stop", "p"}, seconds(30), s.env).exit_code, 0);
  restored.wait(seconds(20));
}


// ---- Spores of Linux guests (issue 13 acceptance 1 and 2): on PVM they run in the nested
// batch.

// Waits until the named VM answers `moss stats` (a restore has started it).
bool wait_named_vm(const std::string& name, const std::map<std::string, std::string>& env, seconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (run({moss(), "stats", name}, seconds(10), env).exit_code == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// The number after "gen=" in a guest program's output (0 if none).
uint64_t generation_of(const std::string& out) {
  auto at = out.find("gen=");
  return at == std::string::npos ? 0 : std::strtoull(out.c_str() + at + 4, nullptr, 10);
}

// A Linux VM with a disk keeps counting in memory and appending to a file on its disk;
// suspended and restored in a fresh moss, the count goes on, the file holds every line,
// moss exec answers, and the guest's monotonic clock did not jump.
LINUX_TEST(SporeLinux, ARestoredVmKeepsItsMemoryItsDiskAndItsClock) {
  require_kvm();
  Scratch s;
  std::string rt = (s.dir / "rt").string(), store = (s.dir / "store").string(), spore = (s.dir / "dev.spore").string();
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", rt}};
  std::string disk = s.image("data.img", 8 << 20, 9);
  Process vm({moss(), "run", "--name", "dev", "--cpus", "2", "--disk", disk}, env);
  ASSERT_TRUE(vm.wait_for_output("moss-init: ready", seconds(400))) << vm.out();
  // The count in memory (/tmp/count) and on the disk: record i, 16 bytes "line %010d\n", at
  // byte 16 * i, written through and synced each time.
  auto start = run({moss(), "exec", "dev", "--", "sh", "-c",
                    "(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; "
                    "printf 'line %010d\\n' $i | dd of=/dev/vda bs=16 seek=$i conv=notrunc,fsync 2>/dev/null; "
                    "sleep 0.2; done) >/dev/null 2>&1 & sleep 2; cat /proc/uptime"},
                   seconds(120), env);
  ASSERT_EQ(start.exit_code, 0) << describe(start);
  auto sus = run({moss(), "suspend", "dev", "--out", spore, "--store", store}, seconds(300), env);
  ASSERT_EQ(sus.exit_code, 0) << describe(sus);
  auto ended = vm.wait(seconds(60));
  EXPECT_EQ(ended.exit_code, 0) << describe(ended);
  Process restored({moss(), "restore", spore, "--name", "dev", "--disk", disk, "--store", store}, env);
  ASSERT_TRUE(wait_named_vm("dev", env, seconds(120))) << restored.out();
  auto after = run({moss(), "exec", "dev", "--", "sh", "-c",
                    "a=$(cat /tmp/count); sleep 1; b=$(cat /tmp/count); echo $a $b; echo gen=$(cat /run/moss/generation); "
                    "for c in 0 1; do taskset -c $c sleep 1 && echo slept-$c; done; cat /proc/uptime"},
                   seconds(120), env);
  EXPECT_EQ(after.exit_code, 0) << describe(after);
  std::istringstream in(after.out);
  long a = 0, b = 0;
  in >> a >> b;
  EXPECT_GT(a, 5) << "the count started again: " << describe(after);
  EXPECT_GT(b, a) << "the count does not go on: " << describe(after);
  EXPECT_NE(generation_of(after.out), 0u) << "no new generation: " << describe(after);
  EXPECT_NE(after.out.find("slept-0"), std::string::npos) << describe(after);
  EXPECT_NE(after.out.find("slept-1"), std::string::npos) << describe(after);
  // Monotonic time: the uptime after the restore is within seconds of the one before it (the
  // time the VM spent as a spore does not count).
  auto up_at = after.out.rfind("slept-1");
  ASSERT_NE(up_at, std::string::npos) << describe(after);
  double up_before = std::stod(start.out), up_after = std::stod(after.out.substr(up_at + 8));
  EXPECT_LT(up_after - up_before, 60.0) << describe(start) << describe(after);
  EXPECT_EQ(run({moss(), "stop", "dev"}, seconds(60), env).exit_code, 0);
  restored.wait(seconds(60));
  // The disk holds every record in order from 1, none lost across the suspend, and more than
  // the count had reached when it was read after the restore.
  std::ifstream f(disk, std::ios::binary);
  std::vector<char> bytes{std::istreambuf_iterator<char>(f), {}};
  long last = 0;
  for (size_t i = 1; (i + 1) * 16 <= bytes.size(); i++) {
    std::string rec(bytes.data() + i * 16, 16);
    if (rec.rfind("line ", 0) != 0) break;
    EXPECT_EQ(std::stol(rec.substr(5, 10)), static_cast<long>(i)) << "record " << i;
    last = static_cast<long>(i);
  }
  EXPECT_GE(last, b) << "the disk lost lines written before or after the suspend";
}

// The stored chunks a spore's memory map names (moss inspect's JSON: a chunk that is not all
// zero is {"hi": "...", "lo": "..."}).
std::set<std::string> stored_chunks(const std::string& spore) {
  auto j = run({moss(), "inspect", spore}, seconds(60));
  EXPECT_EQ(j.exit_code, 0) << describe(j);
  std::set<std::string> ids;
  for (size_t at = j.out.find("\"hi\":"); at != std::string::npos; at = j.out.find("\"hi\":", at + 1)) {
    ids.insert(j.out.substr(at, j.out.find('}', at) - at));
  }
  return ids;
}

// Issue 13, acceptance 3: a Linux guest of 1 GiB just after boot gives a spore far smaller
// than 1 GiB (zero pages are not stored, the rest is compressed), and two spores of it taken a
// minute apart share most of their chunks in the store.
LINUX_TEST(SporeLinux, SporesOfAnIdleGuestAreSmallAndShareMostChunks) {
  require_kvm();
  Scratch s;
  std::string rt = (s.dir / "rt").string(), store = (s.dir / "store").string();
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", rt}};
  Process vm({moss(), "run", "--name", "idle", "--mem", "1G"}, env);
  ASSERT_TRUE(vm.wait_for_output("moss-init: ready", seconds(400))) << vm.out();
  auto first = run({moss(), "suspend", "idle", "--keep-running", "--out", (s.dir / "a.spore").string(), "--store", store},
                   seconds(300), env);
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  uint64_t store_bytes = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(store)) {
    if (e.is_regular_file()) store_bytes += e.file_size();
  }
  EXPECT_LT(store_bytes, (1ull << 30) / 8) << "a spore of an idle 1 GiB guest holds " << (store_bytes >> 20) << " MiB";
  std::this_thread::sleep_for(seconds(60));
  auto second = run({moss(), "suspend", "idle", "--out", (s.dir / "b.spore").string(), "--store", store}, seconds(300), env);
  ASSERT_EQ(second.exit_code, 0) << describe(second);
  EXPECT_EQ(vm.wait(seconds(120)).exit_code, 0);
  auto a = stored_chunks((s.dir / "a.spore").string()), b = stored_chunks((s.dir / "b.spore").string());
  size_t shared = 0;
  for (const auto& id : a) shared += b.count(id);
  std::printf("spores a minute apart: %zu and %zu stored chunks, %zu shared; the first took %llu MiB\n", a.size(),
              b.size(), shared, static_cast<unsigned long long>(store_bytes >> 20));
  ASSERT_GT(a.size(), 0u);
  EXPECT_GT(shared * 2, b.size()) << a.size() << " and " << b.size() << " chunks, " << shared << " shared";
}

// moss spore create, then moss run --from SPORE -- CMD twice at once: each exits with its
// command's status and output, on its own CID, with its own random bytes and generation.
LINUX_TEST(SporeLinux, SporeCreateThenRunFromTwiceAtOnce) {
  require_kvm();
  Scratch s;
  std::string rt = (s.dir / "rt").string(), store = (s.dir / "store").string(), spore = (s.dir / "base.spore").string();
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", rt}};
  auto create = run({moss(), "spore", "create", spore, "--store", store}, seconds(400), env);
  ASSERT_EQ(create.exit_code, 0) << describe(create);
  EXPECT_NE(create.err.find("moss: the VM was suspended to " + spore), std::string::npos) << describe(create);
  // Both VMs run at once (the command sleeps first), each on its own CID.
  std::string cmd = "echo out; echo err >&2; head -c 16 /dev/urandom | od -An -tx1; echo gen=$(cat /run/moss/generation); "
                    "exit 7";
  Process a({moss(), "run", "--from", spore, "--store", store, "--name", "a", "--", "sh", "-c", "sleep 5; " + cmd}, env);
  Process b({moss(), "run", "--from", spore, "--store", store, "--name", "b", "--", "sh", "-c", "sleep 5; " + cmd}, env);
  std::string cid_a, cid_b;
  for (auto [name, cid] : {std::pair{"a", &cid_a}, std::pair{"b", &cid_b}}) {
    ASSERT_TRUE(wait_named_vm(name, env, seconds(120)));
    auto st = run({moss(), "stats", name}, seconds(10), env);
    auto at = st.out.find("\"vsock_cid\": ");
    ASSERT_NE(at, std::string::npos) << describe(st);
    *cid = st.out.substr(at + 13, st.out.find_first_of(",\n}", at) - at - 13);
  }
  EXPECT_NE(cid_a, cid_b) << "two restores of one spore share a CID";
  auto oa = a.wait(seconds(300)), ob = b.wait(seconds(300));
  for (const Outcome* o : {&oa, &ob}) {
    EXPECT_EQ(o->exit_code, 7) << describe(*o);
    EXPECT_EQ(o->out.rfind("out\n", 0), 0u) << describe(*o);
    EXPECT_EQ(o->err, "err\n") << describe(*o);
    EXPECT_NE(generation_of(o->out), 0u) << "no new generation: " << describe(*o);
  }
  EXPECT_NE(generation_of(oa.out), generation_of(ob.out)) << "two restores of one spore have one generation";
  EXPECT_NE(oa.out, ob.out) << "two restores of one spore read the same random bytes";
}

}  // namespace
}  // namespace moss::test
